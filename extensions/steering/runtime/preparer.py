"""Vectors built ahead of the first reply: when a model loads (or a chat shows its presets), the presets
that will steer it are built in the background, under the generation lock, so no reply waits unseen."""
from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any, Callable, Iterable

from .model_watch import ModelWatch, SteeringUnavailable
from .problems import Problems

log = logging.getLogger("steering")
_RUNNING: weakref.WeakSet[Preparer] = weakref.WeakSet()


@atexit.register
def _finish_at_exit() -> None:
    # A daemon thread still inside torch when the interpreter ends aborts the process ("terminate called
    # without an active exception"): let the vector being built finish, build no more.
    for preparer in list(_RUNNING):
        preparer.stop()


class Preparer:
    def __init__(self, models: ModelWatch, lock: Any, problems: Problems):
        self.models = models
        self.lock = lock  # the host's generation lock: building runs the model, so never beside a generation
        self.problems = problems
        self._guard = threading.Lock()
        self._state: dict[str, str] = {}  # name -> "preparing" | "ready" | why it failed
        self._fingerprint: str | None = None
        self._threads: list[threading.Thread] = []  # every batch still building (a later prepare may start another)
        self._stopping = threading.Event()
        self.on_done: Callable[[], None] = lambda: None

    def status(self, name: str) -> str | None:
        """'preparing', 'ready', a reason it failed, or None when never asked for on this model."""
        with self._guard:
            return self._state.get(name) if self._fingerprint == self.models.fingerprint else None

    def prepare(self, names: Iterable[str]) -> list[str]:
        """Start building the vectors of ``names`` that the loaded model has no cache for; returns those."""
        try:
            self.models.current()
        except SteeringUnavailable:
            return []  # said where the presets are used; nothing to prepare
        with self._guard:
            if self._fingerprint != self.models.fingerprint:
                self._state, self._fingerprint = {}, self.models.fingerprint
            asked = [name for name in dict.fromkeys(names) if name not in self._state]  # each name looked at once per model
        wanted = []
        for name in asked:
            try:
                ready = self.models.cached(name)
            except (ValueError, OSError):
                continue  # said where the preset is used
            with self._guard:
                self._state[name] = "ready" if ready else "preparing"
            if not ready:
                wanted.append(name)
        if not wanted:
            return []
        thread = threading.Thread(target=self._build, args=(wanted,), name="steering-prepare", daemon=True)
        with self._guard:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        _RUNNING.add(self)
        thread.start()
        return wanted

    def _build(self, names: list[str]) -> None:
        for name in names:
            if self._stopping.is_set():
                break
            try:
                with self.lock:
                    self.models.vector(name)
                result = "ready"
            except Exception as error:  # a background thread must say what went wrong, never die silently
                result = f"{type(error).__name__}: {error}" if not isinstance(error, (ValueError, SteeringUnavailable)) else str(error)
                self.problems.report(f"preset {name!r} could not be prepared: {result}")
            with self._guard:
                self._state[name] = result
        self.on_done()

    def stop(self) -> None:
        """Build no more vectors; wait for those being built (a build cannot be cut short safely)."""
        self._stopping.set()
        if any(thread.is_alive() for thread in self._threads):
            log.info("steering: finishing the vector being prepared before exit")
        self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether every batch finished within ``timeout`` seconds (each waited for up to that long)."""
        with self._guard:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in threads)
