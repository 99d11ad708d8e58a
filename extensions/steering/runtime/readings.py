"""The reading of each reply (engine/monitor.py) at run time: what a request reads, the monitor that reads
it on the loaded model, and where its readings go.

A request reads every preset that steers it, and the presets named in its state under STATE_MONITOR
(an API request's ``monitor`` list). Its readings are kept under the id in its state's STATE_REQUEST,
for whoever answers that request (``take``; the host may copy the state, an id survives the copy), and,
for a chat, as that chat's last readings under the same key as its steering choice (the browser
session with --multi-user), so a session never learns another's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..engine.context import ModelContext
from ..engine.monitor import Monitor, Reading, labels
from ..engine.validation import PresetError, check_name
from .choices import state_key
from .kept import Kept
from .model_watch import ModelWatch, SteeringUnavailable
from .problems import Problems

log = logging.getLogger("steering")
STATE_MONITOR = "steering_monitor"  # names a request reads besides the presets that steer it
STATE_REQUEST = "steering_request"  # the request's id, under which its readings are kept for ``take``
MAX_READ = 16  # presets one reply reads at most
MAX_KEPT = 256  # chats' and requests' readings kept (the oldest are dropped)


@dataclass(frozen=True)
class ReplyReadings:
    """The readings of one reply: the presets that steered it, then those it was asked to read."""

    readings: tuple[Reading, ...]

    def text(self) -> str:
        """``love +1.8σ, kind +0.3σ``."""
        return labels(self.readings)

    def to_list(self) -> list[dict]:
        return [reading.to_dict() for reading in self.readings]


class Readings:
    """Monitors for the loaded model and the readings they made."""

    def __init__(self, models: ModelWatch, problems: Problems, cache_dir: Path | None = None):
        self.models = models
        self.problems = problems
        self.cache_dir = cache_dir  # baselines on disk (engine/monitor.py), None: memory only
        self._by_chat: Kept[ReplyReadings] = Kept(MAX_KEPT)
        self._by_request: Kept[ReplyReadings] = Kept(MAX_KEPT)

    def wanted(self, state: dict) -> list[str]:
        """The presets the request names to read besides those that steer it (checked names)."""
        names = state.get(STATE_MONITOR) or []
        if isinstance(names, str):
            names = [part.strip() for part in names.split(",") if part.strip()]
        if not isinstance(names, (list, tuple)):
            raise ValueError(f"{STATE_MONITOR} must be a list of preset names, got {type(names).__name__}")
        if len(names) > MAX_READ:
            raise ValueError(f"a reply reads at most {MAX_READ} presets, {len(names)} were named")
        return [check_name(name) for name in names]

    def monitor(self, ctx: ModelContext, names: Sequence[str]) -> Monitor | None:
        """A monitor of ``names`` on ``ctx``'s model (None when none can be read; each that cannot is
        reported). Its baselines are measured at first use (a pass over the calibration probe)."""
        names = list(dict.fromkeys(names))[:MAX_READ]
        vectors = {}
        for name in names:
            try:
                vectors[name] = self.models.vector(name)
            except (PresetError, SteeringUnavailable, ValueError, OSError) as error:
                self.problems.report(f"{name!r} cannot be read: {error}")
        if not vectors:
            return None
        try:  # cheap once the baselines are measured: the engine keeps them
            return Monitor.of(ctx, vectors, self.cache_dir)
        except Exception as error:  # a reading must never keep a reply from being generated or steered
            log.exception("steering: the reading could not be prepared")
            self.problems.report(f"{', '.join(vectors)} cannot be read: {type(error).__name__}: {error}")
            return None

    @staticmethod
    def kept(state: dict) -> bool:
        """Whether a reading of this request has somewhere to go (a request id, or a chat to show it in)."""
        request = state.get(STATE_REQUEST)
        return bool(isinstance(request, str) and request) or state_key(state) is not None

    def on_reply(self, state: dict) -> Callable[[list[Reading]], None]:
        """Where the readings of this request's reply go: its request id's and its chat's."""
        request, chat = state.get(STATE_REQUEST), state_key(state)

        def keep(readings: list[Reading]) -> None:
            found = ReplyReadings(tuple(readings))
            if isinstance(request, str) and request:
                self._by_request.put(request, found)
            if chat is not None:
                self._by_chat.put(chat, found)

        return keep

    def take(self, request: str) -> ReplyReadings | None:
        """The readings of the request with this id (once: they are forgotten), None when there are none."""
        return self._by_request.get(request, pop=True)

    def last(self, state: dict) -> ReplyReadings | None:
        """The last readings of the chat of ``state`` (its session's with --multi-user)."""
        key = state_key(state)
        return None if key is None else self._by_chat.get(key)
