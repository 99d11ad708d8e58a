"""What the webui adapter and the UI need at run time, without importing the webui.

``SteeringRuntime`` is a small facade over private parts with one job each:

- ``plans`` (Plans: ChatChoices, ActivePresets, Attachments, ReportBook): which presets steer a request,
  chosen for all chats, by its character, its chat or the request itself, and the report of what did;
- ``models`` (ModelWatch): the loaded model as a ModelContext, made once per model, and its vectors;
- ``gate`` (GenerationGate): steering armed for the one generate call of a request;
- ``readings`` (Readings): the reading of each reply along the presets it applied or names (a monitor);
- ``problems`` (Problems): what kept a reply from being steered as chosen, said once;
- ``last`` (LastSteered): what steered the last reply (each session's own with --multi-user);
- the backends (backend.py), one of which steers the host's model: Transformers hooks
  (transformers_backend.py) or llama-server's control vectors (llama_cpp.py). It is chosen when a model
  is first seen; the facade then only speaks the Backend protocol.

The adapter and the UI use its public methods only (the UI through ``interface.SteeringService``); the
status line and the chat panel's view are worded in views.py.

Files in ``data_dir`` (all written atomically): ``active.json`` (global presets),
``chats.json`` (per-chat choices), ``characters.yaml`` (presets attached to characters).
"""
from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..characters import character_names
from ..engine.apply import Steer
from ..engine.context import ModelContext
from ..engine.presets import PresetStore
from ..engine.validation import strength as checked_strength
from ..engine.vector import SteeringVector
from .backend import Backend, LastSteered
from .choices import (
    CHAT_MODES,
    MAX_SESSIONS,
    STATE_IS_CHAT,
    STATE_SESSION,
    ChatChoice,
    character_of,
    chat_key,
    session_key,
    state_key,
    state_session,
)
from .files import DataFiles
from .gate import GenerationGate, ReentrantLock
from .items import Items, parse_items
from .llama_cpp import LlamaCppBackend, LlamaServerHost
from .model_watch import ModelWatch, SteeringUnavailable
from .plans import Plans
from .problems import Problems
from .readings import Readings
from .requests import report_json
from .transformers_backend import TransformersBackend
from .views import ChatRow, ChatView, Told, status_line

__all__ = [
    "CHAT_MODES", "MAX_SESSIONS", "STATE_IS_CHAT", "STATE_SESSION", "ChatChoice", "ChatRow", "ChatView", "Items",
    "ReentrantLock", "SteeringRuntime", "SteeringUnavailable", "character_of", "chat_key", "parse_items", "session_key",
    "state_key",
]


def _reference(model: Any) -> Callable[[], Any]:
    """A reference to the host's model that does not keep an unloaded one alive."""
    try:
        return weakref.ref(model)
    except TypeError:  # None, or an object without weak references
        return lambda: model


class SteeringRuntime:
    """Presets, attachments, chat choices and the model in use; see the module docstring."""

    def __init__(
        self,
        store: PresetStore,
        data_dir: Path,
        model_source: Callable[[], tuple[Any, Any] | None],
        loader_name: Callable[[], str | None] = lambda: None,
        characters_dir: Path | None = None,
        host_lock: Callable[[], Any] | None = None,
        layers_path: str | None = None,
        default_enabled: bool = True,
        default_character: Callable[[], str | None] | str | None = "Assistant",
        multi_user: bool = False,
        llama_host: LlamaServerHost | None = None,
    ):
        self._store = store
        self._problems = Problems(MAX_SESSIONS if multi_user else 0)
        self._plans = Plans(store, DataFiles(Path(data_dir), self._problems), self._problems, characters_dir, default_enabled,
                            default_character)
        self._models = ModelWatch(store, model_source, loader_name, layers_path)
        self._gate = GenerationGate()
        own = threading.Lock()
        # the tab takes this around its own generate calls; whoever holds it may generate, so nothing stays armed
        self.lock = ReentrantLock(host_lock or (lambda: own), on_acquire=self._gate.disarm)
        self._readings = Readings(self._models, self._problems, store.folder / "baselines")
        self._last = LastSteered(multi_user)
        self._hooks = TransformersBackend(store, self._models, self._gate, self.lock, self._readings, self._problems, self._plans,
                                          self._last)
        # models in llama-server (the llama.cpp loader) are steered by control vectors when the host can restart it
        llama = [LlamaCppBackend(store, Path(data_dir), llama_host, self._problems, self._plans.plan, report=self._plans.report_all,
                                 last=self._last)] if llama_host else []
        self._backends: list[Backend] = [*llama, self._hooks]  # the first that serves the model steers it
        self._choosing = threading.Lock()
        self._seen: tuple[int, Callable[[], Any]] | None = None  # the model the backend was chosen for: (id, reference)
        self._backend: Backend = self._hooks
        self.default_enabled = default_enabled

    @property
    def store(self) -> PresetStore:
        """The presets (the caller's store: the UI lists, builds and saves presets in it)."""
        return self._store

    def notice(self) -> Backend:
        """The backend that steers the host's model now, chosen once per model (the adapter calls this before
        each request, so that a llama-server is wrapped before its generate call)."""
        found = self._models.model_source()
        model = found[0] if found else None
        with self._choosing:
            if self._seen is None or self._seen[0] != id(model) or self._seen[1]() is not model:  # (an unloaded model's id may be reused)
                self._backend = next(backend for backend in self._backends if backend.serves(model))
                self._backend.notice(model)
                self._seen = id(model), _reference(model)
            return self._backend

    # -- presets, characters and chats ---------------------------------------------------------------
    @property
    def characters_dir(self) -> Path | None:
        return self._plans.attachments.characters_dir

    @property
    def active(self) -> Items:
        return self._plans.active.items

    def set_active(self, items: Iterable) -> None:
        self._plans.active.set(items)

    def attachments(self, character: str | None) -> Items:
        return self._plans.attachments.of(character)

    def attach(self, character: str, items: Iterable) -> None:
        self._plans.attachments.attach(character, items)

    def character_file(self, character: str) -> Path | None:
        return self._plans.attachments.character_file(character)

    def character_names(self) -> list[str]:
        """Characters to attach presets to: the webui's character files, the default one, those attached before."""
        default = self._plans.default_character()
        names = {*character_names(self.characters_dir), *([default] if default else []), *self._plans.attachments.names()}
        return sorted(names, key=str.lower)

    def preset_strength(self, name: str) -> float:
        """The preset's own strength (a dose for a calibrated preset); 1 when it cannot be read."""
        return self._plans.preset_strength(name)

    def chat_choice(self, key: str | None) -> ChatChoice:
        return self._plans.choices.get(key)

    def set_chat_choice(self, key: str | None, choice: ChatChoice) -> None:
        self._plans.choices.set(key, choice)

    def plan(self, state: dict) -> Items:
        """The presets and strengths that would steer this request (plans.py)."""
        return self._plans.plan(state)

    # -- the PyTorch model (building, trying, reading) -------------------------------------------------
    def current_model(self) -> ModelContext:
        return self._models.current()

    @property
    def model_changes(self) -> int:
        return self._models.changes

    def vector(self, name: str) -> SteeringVector:
        return self._models.vector(name)

    def check_fits(self, vector: SteeringVector, ctx: ModelContext, name: str = "the vector") -> None:
        self._models.check_fits(vector, ctx, name)

    def steers_for_state(self, state: dict) -> list[Steer]:
        """The hooks' steering for one request on the current model; nothing that cannot apply."""
        return [steer for _, steer in self._hooks.named_steers(state, self._plans.open_report(state))]

    def wait_prepared(self, timeout: float | None = None) -> bool:
        """Whether the vectors being built in the background were finished within ``timeout`` seconds."""
        return self._hooks.preparer.wait(timeout)

    # -- one request -----------------------------------------------------------------------------------
    def check_usable(self, names: list[str], reading: bool = False) -> None:
        """RequestError unless every preset in ``names`` can steer (``reading``: be read on) the model loaded now."""
        self.notice().check_usable(names, reading)

    def begin_generation(self, state: dict, input_ids: torch.Tensor | None) -> Items:
        """Arm steering for the ``model.generate`` call that will receive ``input_ids``.

        Called by the webui's tokenizer_modifier (inside the generation lock). Returns what was
        armed (empty: the model is not touched at all).
        """
        return self.notice().begin_generation(state, input_ids)

    def end_generation(self) -> None:
        """Disarm steering that was armed but never reached ``generate`` (an error came first)."""
        self._gate.disarm()

    @property
    def steering_now(self) -> bool:
        return self._gate.steering_now

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._gate.wait_idle(timeout)

    def take_report(self, request: str) -> dict:
        """What steered the reply of the request with id ``request``, and its readings (once: then forgotten)."""
        return report_json(self._plans.reports.take(request), self._readings.take(request))

    def report_problem(self, message: str, state: dict | None = None) -> None:
        """Something kept a reply from being steered as chosen: said once in the console, shown in the tab
        (``state``: the request's; with --multi-user only its own session is told)."""
        if state is None:
            self._problems.report(message)
            return
        with self._problems.serving(state_session(state)):
            self._problems.report(message)

    @property
    def last_error(self) -> str | None:
        return self._problems.last

    def last_applied_for(self, session: str | None = None) -> Items:
        """What steered the last reply this user saw: the last reply (one user), or the session's own
        (multi-user: one session never learns what steered another's)."""
        return list(self._last.of(session).items)

    def told(self, session: str | None = None) -> Told:
        """What the user of browser ``session`` is told of steering's last doings: the last reply's (one
        user), or their own and what concerns every user (multi-user)."""
        steered = self._last.of(session)
        problem, shared = self._problems.told(session_key(session))
        return Told(list(steered.items), steered.notice, problem, shared)

    # -- the chat tab's panel and the status line -------------------------------------------------------
    def chat_view(self, state: dict) -> ChatView:
        """What the chat tab shows for the chat of ``state`` (a chat request's state)."""
        items, choice, character = self._plans.items_for_state(state)
        attached = dict(self.attachments(character))
        backend = self.notice()
        model = backend.status()
        if model.problem is None and choice.enabled:
            backend.prepare([name for name, strength in items if choice.strengths.get(name, strength) != 0])
        rows = [
            ChatRow(name, strength, float(choice.strengths.get(name, strength)), "character" if name in attached else "all chats",
                    backend.preparing(name), self._plans.calibrated(name))
            for name, strength in items
        ]
        key = state_key(state)
        read = self._readings.last(state)  # kept under the chat's own key: the session's with --multi-user
        told = self.told(state.get(STATE_SESSION))
        notice = told.notice if model.control_vectors else None  # a restart is news only while llama-server runs the model
        return ChatView(key, choice.enabled, rows, character, model.problem, told.problem, notice, told.shared_problem,
                        self._plans.choices.dropped(key), read.text() if read else None)

    def save_chat_view(self, state: dict, enabled: bool, strengths: dict[str, float]) -> ChatView:
        """Store the chat's switch and strengths (a strength equal to the preset's own is not stored)."""
        key = state_key(state)
        if key is None:
            raise ValueError("this chat has no id yet: send a message first")
        items, choice, _ = self._plans.items_for_state(state)
        defaults = dict(items)
        choice.enabled = bool(enabled)
        for name, value in strengths.items():
            if value is None:
                continue
            value = checked_strength(value, f"the strength of {name}")
            if defaults.get(name) == value:
                choice.strengths.pop(name, None)
            else:
                choice.strengths[name] = value
        self.set_chat_choice(key, choice)
        return self.chat_view(state)

    def follow_chat(self, old_state: dict, new_state: dict) -> bool:
        """A chat was renamed or branched (its id changed): the new id gets the old one's choice."""
        return self._plans.choices.follow(state_key(old_state), state_key(new_state))

    def status_line(self, session: str | None = None) -> str:
        """One line: the model, whether the next reply can be steered, the active presets, the last problem.
        ``session``: the browser session asking (multi-user: its own last reply is named)."""
        model = self.notice().status(name for name, _ in self.active)
        return status_line(model, self.active, self.told(session))
