"""Steering armed for exactly one ``model.generate`` call, and the lock the tab shares with the host.

``arm`` wraps the model's ``generate`` until the call that receives the request's prompt tokens; that
call runs with engine hooks gated to its own thread, removed when it returns (finished, Stop, a stopped
stream's extra forward, an exception). Several requests may be armed at once (API requests racing the
chat): each generate call takes the one whose tokens it received. A request may also arm a monitor
(engine/monitor.py): its reply is read while it is generated and the readings handed to ``on_readings``
when the call returns, in the generating thread.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Sequence

import torch

from ..engine.apply import Steer, SteeringHandle, on_thread
from ..engine.context import ModelContext
from ..engine.monitor import Monitor, Reading

log = logging.getLogger("steering")
MAX_ARMED = 8  # requests armed but not yet generating; older ones are dropped (their generate never came)
OnReadings = Callable[[list[Reading]], None]


class ReentrantLock:
    """A per-thread re-entrant lock on top of a host's plain lock (the webui's generation_lock).

    ``get_lock`` is called at each first acquire, so a host that replaces its lock is followed.
    """

    def __init__(self, get_lock: Callable[[], Any], on_acquire: Callable[[], None] | None = None):
        self._get_lock = get_lock
        self.on_acquire = on_acquire  # runs after each first acquire
        self._owner: int | None = None
        self._count = 0
        self._held: Any = None  # the host's lock while this thread holds it

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            self._count += 1
            return True
        lock = self._get_lock()
        if not lock.acquire(blocking, timeout):
            return False
        self._held, self._owner, self._count = lock, me, 1
        if self.on_acquire is not None:
            self.on_acquire()
        return True

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("this thread does not hold the steering lock")
        self._count -= 1
        if self._count == 0:
            held, self._held, self._owner = self._held, None, None
            held.release()

    def __enter__(self) -> ReentrantLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Armed:
    def __init__(self, ctx: ModelContext, steers: Sequence[Steer], inputs: torch.Tensor | None,
                 monitor: Monitor | None = None, on_readings: OnReadings | None = None):
        self.ctx, self.steers, self.inputs = ctx, list(steers), inputs
        self.monitor, self.on_readings = monitor, on_readings

    def matches(self, args, kwargs) -> bool:
        given = kwargs.get("inputs", kwargs.get("input_ids", args[0] if args else None))
        if self.inputs is None or given is self.inputs:
            return True
        return isinstance(given, torch.Tensor) and given.shape == self.inputs.shape and bool(torch.equal(given.to(self.inputs.device), self.inputs))


class GenerationGate:
    """Arms steering for one generate call per request; knows which calls are steering right now."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._armed: list[_Armed] = []
        self._live: set[object] = set()  # the hooks (steering, recording) of generate calls running now

    def arm(self, ctx: ModelContext, steers: Sequence[Steer], inputs: torch.Tensor | None,
            monitor: Monitor | None = None, on_readings: OnReadings | None = None) -> None:
        """Steer the next ``ctx.model.generate`` call that receives ``inputs`` (any call when None), and
        read its reply with ``monitor`` (``on_readings`` gets the readings when the call returns)."""
        if not steers and monitor is None:
            raise ValueError("nothing to arm: give steering, a monitor, or both")
        with self._lock:
            self.drop(inputs)
            self._armed = [a for a in self._armed if a.ctx.model is ctx.model][-(MAX_ARMED - 1):]
            self._armed.append(_Armed(ctx, steers, inputs, monitor, on_readings))
            self._wrap(ctx.model)

    def drop(self, inputs: torch.Tensor | None) -> None:
        """A newer request for the same prompt tokens owns them: forget what was armed for them before."""
        with self._lock:
            stale = [a for a in self._armed if a.inputs is None or inputs is None or a.matches((inputs,), {})]
            if not stale:
                return
            self._armed = [a for a in self._armed if a not in stale]
            for model in {id(a.ctx.model): a.ctx.model for a in stale}.values():
                if not any(a.ctx.model is model for a in self._armed):
                    self._unwrap(model)

    def disarm(self) -> None:
        """Drop every armed request that has not reached generate (an error came first)."""
        with self._lock:
            models = {id(a.ctx.model): a.ctx.model for a in self._armed}
            self._armed = []
            for model in models.values():
                self._unwrap(model)

    def _wrap(self, model) -> None:
        if getattr(model.__dict__.get("generate"), "_steering_gate", None) is self:
            return
        original = type(model).generate.__get__(model)

        def generate(*args, **kwargs):
            return self._call(model, original, args, kwargs)

        generate._steering_gate = self  # type: ignore[attr-defined]  # marks our wrapper (never remove someone else's attribute)
        model.__dict__["generate"] = generate

    def _unwrap(self, model) -> None:
        if getattr(model.__dict__.get("generate"), "_steering_gate", None) is self:
            del model.__dict__["generate"]

    def _call(self, model, original, args, kwargs):
        with self._lock:
            mine = [a for a in self._armed if a.ctx.model is model]
            found = next((a for a in mine if a.matches(args, kwargs)), None)
            # the matching request is served; others stay armed for their own calls (requests may race),
            # until a newer request for the same tokens, the tab's lock or MAX_ARMED newer ones drop them
            self._armed = [a for a in self._armed if a is not found]
            if not any(a.ctx.model is model for a in self._armed):
                self._unwrap(model)
        if found is None:
            if mine:
                log.warning("steering: a generate call with other prompt tokens than the armed requests'; left unsteered")
            return original(*args, **kwargs)
        # the recording first: its hooks go in front of the steering's at a shared block anyway (prepend)
        recording = found.monitor.record(on_thread()) if found.monitor is not None else None
        try:
            handle = SteeringHandle(found.ctx, found.steers, gate=on_thread()) if found.steers else None
        except BaseException:
            if recording is not None:
                recording.remove()
            raise
        hooks = [h for h in (handle, recording) if h is not None]
        with self._lock:
            self._live.update(hooks)
        try:
            return original(*args, **kwargs)
        finally:
            for part in hooks:
                part.remove()
            if recording is not None and found.on_readings is not None:
                self._hand_over(recording, found.on_readings)
            with self._lock:
                self._live.difference_update(hooks)
                self._idle.notify_all()

    @staticmethod
    def _hand_over(recording, on_readings: OnReadings) -> None:
        """The reply's readings to whoever armed them; a failure there never fails the reply (it is logged)."""
        try:
            on_readings(recording.readings())
        except Exception:
            log.exception("steering: the reply's reading could not be handed over")

    @property
    def armed(self) -> int:
        with self._lock:
            return len(self._armed)

    @property
    def steering_now(self) -> bool:
        """Whether a generate call is running with steering hooks at this moment."""
        with self._lock:
            return bool(self._live)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no steered generate call is running (a stopped stream's thread has finished)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._live, timeout)
