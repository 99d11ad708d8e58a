"""The one protocol a way of steering the host's model implements, and what every backend shares.

Two backends implement it: the Transformers loader's hooks (transformers_backend.py) and llama-server's
control vectors (llama_cpp.py). The runtime picks one each time the host's model changes (``serves``)
and otherwise only calls this protocol: it never asks which backend it holds.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple, Protocol

import torch

from .choices import MAX_SESSIONS, session_key, state_session
from .items import Items
from .kept import Kept


@dataclass(frozen=True)
class BackendStatus:
    """What a backend says of the model loaded now (views.py words it for the status line and the panel)."""

    model: str | None = None  # the model's name; None: none that steering can run on
    problem: str | None = None  # why steering cannot run on the model now
    loader: str | None = None  # the loader's name, when known
    layers: int | None = None
    hidden_size: int | None = None
    control_vectors: bool = False  # steered by control vectors in llama-server: another set of presets restarts it
    broken: tuple[tuple[str, str], ...] = ()  # (preset, why it cannot steer this model)


class Backend(Protocol):
    def serves(self, model: Any) -> bool:
        """Whether this backend steers ``model`` (the host's model object)."""

    def notice(self, model: Any) -> None:
        """``model`` is the host's model now and this backend steers it (called once per model)."""

    def begin_generation(self, state: dict, input_ids: torch.Tensor | None) -> Items:
        """Arm the steering of the request of ``state`` (the webui's tokenizer_modifier); returns what was armed."""

    def check_usable(self, names: list[str], reading: bool = False) -> None:
        """RequestError unless every preset in ``names`` can steer (``reading``: be read on) the model now."""

    def status(self, presets: Iterable[str] = ()) -> BackendStatus:
        """The model now, and which of ``presets`` cannot steer it."""

    def prepare(self, names: Iterable[str]) -> None:
        """Start building what ``names`` need to steer the model, before a reply waits for it."""

    def preparing(self, name: str) -> str | None:
        """'preparing', 'ready', why it failed, or None when nothing is prepared for ``name``."""


class Steered(NamedTuple):
    """What steered one reply, and what steering did for it that a user would want to know (a llama.cpp restart)."""

    items: Items
    notice: str | None = None


class LastSteered:
    """What steered the last reply and what steering did for it: the last reply's (one user), or each browser
    session's own (multi-user: a session never learns what steered another's reply, nor what was restarted for it)."""

    def __init__(self, multi_user: bool = False):
        self.multi_user = multi_user
        self._last = Steered([])
        self._sessions: Kept[Steered] = Kept(MAX_SESSIONS)
        self._lock = threading.Lock()

    def record(self, state: dict, items: Items) -> None:
        self._change(state, lambda last: last._replace(items=list(items)))

    def note(self, state: dict, notice: str) -> None:
        """What steering did for the reply of ``state`` (a llama.cpp restart)."""
        self._change(state, lambda last: last._replace(notice=notice))

    def _change(self, state: dict, change: Callable[[Steered], Steered]) -> None:
        with self._lock:
            self._last = change(self._last)
        key = state_session(state)
        if key:
            self._sessions.update(key, lambda last: change(last or Steered([])))

    def of(self, session: str | None = None) -> Steered:
        if not self.multi_user:
            return self._last
        key = session_key(session)
        return (self._sessions.get(key) if key else None) or Steered([])
