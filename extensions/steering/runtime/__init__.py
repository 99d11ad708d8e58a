"""What the webui adapter and the UI need at run time, without importing the webui.

``SteeringRuntime`` is a small facade over parts with one job each:

- ``choices`` (ChatChoices, ActivePresets): presets active for all chats, each chat's switch and strengths;
- ``attachments`` (Attachments): presets attached to characters;
- ``models`` (ModelWatch): the loaded model as a ModelContext, made once per model, and its vectors;
- ``gate`` (GenerationGate): steering armed for the one generate call of a request;
- ``preparer`` (Preparer): vectors built in the background when a model loads, before a reply needs them;
- ``problems`` (Problems): what kept a reply from being steered as chosen, said once;
- ``readings`` (Readings): the reading of each reply along the presets it applied or names (a monitor).

For one request it answers *which* presets steer it (``plan``), *whether* they can steer the model
loaded now (``steers_for_state``: anything that cannot is skipped and reported, generation is never
blocked) and arms them (``begin_generation``). The UI talks to it through ``interface.SteeringService``.

Files in ``data_dir`` (all written atomically): ``active.json`` (global presets),
``chats.json`` (per-chat choices), ``characters.yaml`` (presets attached to characters).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..engine.apply import Steer
from ..engine.context import ModelContext
from ..engine.presets import PresetStore
from ..engine.validation import PresetError
from ..engine.validation import strength as checked_strength
from ..engine.vector import SteeringVector
from .attachments import Attachments
from .choices import (
    CHAT_MODES,
    MAX_SESSIONS,
    STATE_IS_CHAT,
    STATE_SESSION,
    ActivePresets,
    ChatChoice,
    ChatChoices,
    character_of,
    chat_key,
    session_key,
    state_key,
)
from .files import DataFiles
from .gate import GenerationGate, ReentrantLock
from .items import Items, describe, parse_items
from .llama_cpp import LlamaCppBackend, LlamaServerHost
from .model_watch import ModelWatch, SteeringUnavailable
from .preparer import Preparer
from .problems import Problems
from .readings import Readings
from .views import ChatRow, ChatView

__all__ = [
    "CHAT_MODES", "MAX_SESSIONS", "STATE_IS_CHAT", "STATE_SESSION", "ChatChoice", "ChatRow", "ChatView", "Items",
    "ReentrantLock", "SteeringRuntime", "SteeringUnavailable", "character_of", "chat_key", "parse_items", "session_key",
    "state_key",
]


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
        self.store = store
        self.problems = Problems()
        self.files = DataFiles(Path(data_dir), self.problems)
        self.models = ModelWatch(store, model_source, loader_name, layers_path)
        self.gate = GenerationGate()
        self.choices = ChatChoices(self.files, default_enabled)
        self.active_presets = ActivePresets(self.files, self.problems)
        self.characters = Attachments(self.files, characters_dir, self._default_strength, self.problems)
        own = threading.Lock()
        # the tab takes this around its own generate calls; whoever holds it may generate, so nothing stays armed
        self.lock = ReentrantLock(host_lock or (lambda: own), on_acquire=self.gate.disarm)
        self.preparer = Preparer(self.models, self.lock, self.problems)
        self.readings = Readings(self.models, self.problems, store.folder / "baselines")
        self.models.on_change = self._model_loaded
        # models in llama-server (the llama.cpp loader) are steered by control vectors when the host can restart it
        self.llama = LlamaCppBackend(store, Path(data_dir), llama_host, self.problems, self.plan) if llama_host else None
        self.default_enabled = default_enabled
        self._default_character = default_character
        self.multi_user = multi_user  # sessions must not learn what steered another's reply
        self.last_applied: Items = []

    # -- parts, as the UI and adapter name them -------------------------------------------------------
    @property
    def characters_dir(self) -> Path | None:
        return self.characters.characters_dir

    @property
    def last_error(self) -> str | None:
        return self.problems.last

    @property
    def model_changes(self) -> int:
        return self.models.changes

    @property
    def active(self) -> Items:
        return self.active_presets.items

    def set_active(self, items: Iterable) -> None:
        self.active_presets.set(items)

    def attachments(self, character: str | None) -> Items:
        return self.characters.of(character)

    def attach(self, character: str, items: Iterable) -> None:
        self.characters.attach(character, items)

    def character_file(self, character: str) -> Path | None:
        return self.characters.character_file(character)

    def chat_choice(self, key: str | None) -> ChatChoice:
        return self.choices.get(key)

    def set_chat_choice(self, key: str | None, choice: ChatChoice) -> None:
        self.choices.set(key, choice)

    def current_model(self) -> ModelContext:
        return self.models.current()

    def vector(self, name: str) -> SteeringVector:
        return self.models.vector(name)

    def check_fits(self, vector: SteeringVector, ctx: ModelContext, name: str = "the vector") -> None:
        self.models.check_fits(vector, ctx, name)

    def notice(self, model: Any) -> None:
        """The host's model now (called by the adapter before requests): a llama-server gets its wrapper."""
        if self.llama is not None and LlamaCppBackend.serves(model):
            self.llama.attach(model)

    def _llama_server(self) -> Any:
        """The llama-server model steering runs through now, or None."""
        found = self.models.model_source()
        model = found[0] if found else None
        return model if self.llama is not None and LlamaCppBackend.serves(model) else None

    def _model_loaded(self) -> None:
        """A model was loaded: build what will steer the next replies (all chats' and the default character's)."""
        self.preparer.prepare([name for name, _ in [*self.active, *self.attachments(self.default_character())]])

    def _default_strength(self, name: str) -> float:
        try:
            return float(self.store.recipe(name).strength)
        except PresetError:
            return 1.0

    def default_character(self) -> str | None:
        value = self._default_character
        return value() if callable(value) else value

    # -- what applies to one request -----------------------------------------------------------------
    def items_for_state(self, state: dict) -> tuple[Items, ChatChoice, str | None]:
        """(presets with strengths, the chat's choice, the character) for one request, before filtering."""
        character = character_of(state, self.default_character())
        merged: dict[str, float] = dict(self.active)
        merged.update(dict(self.attachments(character)))
        return list(merged.items()), self.chat_choice(state_key(state)), character

    def plan(self, state: dict) -> Items:
        """The presets and strengths that would steer this request (strength 0 and off excluded)."""
        items, choice, _ = self.items_for_state(state)
        if not choice.enabled:
            return []
        out = [(name, float(choice.strengths.get(name, strength))) for name, strength in items]
        return [(name, strength) for name, strength in out if strength != 0]

    def steers_for_state(self, state: dict) -> list[Steer]:
        """The steering for one request on the current model; nothing that cannot apply.

        Problems (no torch model, unknown preset, a vector that does not fit) are reported once and
        that preset is skipped: generation itself is never blocked.
        """
        plan = self.plan(state)
        if not plan:
            return []
        try:
            self.current_model()
        except SteeringUnavailable as error:
            self.problems.report(f"{error} (wanted: {', '.join(n for n, _ in plan)})")
            return []
        steers = []
        for name, strength in plan:
            try:
                steers.append(Steer(self.vector(name), strength, self.store.recipe(name).mode))
            except (PresetError, SteeringUnavailable, ValueError, OSError) as error:
                self.problems.report(f"preset {name!r} not applied: {error}")
        return steers

    # -- one generation -------------------------------------------------------------------------------
    def begin_generation(self, state: dict, input_ids: torch.Tensor | None) -> Items:
        """Arm steering for the ``model.generate`` call that will receive ``input_ids``.

        Called by the webui's tokenizer_modifier (inside the generation lock). Returns what was
        armed (empty: the model is not touched at all).
        """
        self.last_applied = []
        self.gate.drop(input_ids)
        steers = self.steers_for_state(state)
        try:
            wanted, unread = self.readings.wanted(state), False
        except ValueError as error:  # a bad list never costs the reply its steering
            self.problems.report(f"nothing more read: {error}")
            wanted, unread = [], True
        if not steers and not wanted:
            return []
        try:
            ctx = self.current_model()
        except SteeringUnavailable as error:  # only a reading was asked for (steering said it already)
            self.problems.report(f"{', '.join(wanted)} cannot be read: {error}")
            return []
        length = int(input_ids.shape[-1]) if isinstance(input_ids, torch.Tensor) else None
        kept = []
        for steer in steers:
            rows = steer.vector.positions if steer.mode == "actadd" else 0
            if length is not None and rows and length < rows + 1:
                self.problems.report(f"an actadd preset needs a prompt of at least {rows + 1} tokens, this one has {length}; skipped")
                continue
            kept.append(steer)
        applied = self.plan(state) if kept else []
        if kept and len(kept) == len(steers) and len(steers) == len(applied) and not unread:
            self.problems.clear()
        read = [name for name, _ in applied] + wanted if self.readings.kept(state) else []  # nobody to show it to: not read
        monitor = self.readings.monitor(ctx, read) if read else None
        if not kept and monitor is None:
            return []
        self.gate.arm(ctx, kept, input_ids, monitor, self.readings.on_reply(state) if monitor is not None else None)
        self.last_applied = applied
        return applied

    def end_generation(self) -> None:
        """Disarm steering that was armed but never reached ``generate`` (an error came first)."""
        self.gate.disarm()

    @property
    def steering_now(self) -> bool:
        return self.gate.steering_now

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.gate.wait_idle(timeout)

    # -- the chat tab's panel ----------------------------------------------------------------------------
    def chat_view(self, state: dict) -> ChatView:
        """What the chat tab shows for the chat of ``state`` (a chat request's state)."""
        items, choice, character = self.items_for_state(state)
        attached = dict(self.attachments(character))
        llama = self._llama_server()
        try:
            if llama is None:
                self.current_model()
            problem = None
        except SteeringUnavailable as error:
            problem = str(error)
        if problem is None and llama is None and choice.enabled:
            self.preparer.prepare([name for name, strength in items if choice.strengths.get(name, strength) != 0])
        rows = [
            ChatRow(name, strength, float(choice.strengths.get(name, strength)), "character" if name in attached else "all chats",
                    self.preparer.status(name), self._calibrated(name))
            for name, strength in items
        ]
        private = not self.multi_user  # one session must not learn what another's reply did
        read = self.readings.last(state)  # kept under the chat's own key: the session's with --multi-user
        return ChatView(state_key(state), choice.enabled, rows, character, problem, self.problems.last if private else None,
                        self.llama.last_notice if llama is not None and private else None, read.text() if read else None)

    def _calibrated(self, name: str) -> bool:
        try:
            return self.store.recipe(name).calibrated
        except PresetError:  # a missing or damaged preset: the row's preparing status says why
            return False

    def save_chat_view(self, state: dict, enabled: bool, strengths: dict[str, float]) -> ChatView:
        """Store the chat's switch and strengths (a strength equal to the preset's own is not stored)."""
        key = state_key(state)
        if key is None:
            raise ValueError("this chat has no id yet: send a message first")
        items, choice, _ = self.items_for_state(state)
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
        return self.choices.follow(state_key(old_state), state_key(new_state))

    # -- for people ---------------------------------------------------------------------------------------
    def describe(self, items: Items) -> str:
        return describe(items)

    def preset_problem(self, name: str, ctx: ModelContext) -> str | None:
        """Why ``name`` would not steer the next reply on ``ctx``'s model (None: it would, as far as
        can be told without building it)."""
        try:
            recipe = self.store.recipe(name)
            recipe.layer_indices(ctx.num_layers)
            cached = self.store.cached_vector(recipe, ctx)
            if cached is not None:
                self.check_fits(cached, ctx, name)
        except (PresetError, ValueError, OSError) as error:
            return str(error)
        return None

    def status_line(self) -> str:
        """One line: the model, whether the next reply can be steered, the active presets, the last problem."""
        llama = self._llama_server()
        try:
            ctx = None if llama is not None else self.current_model()
        except SteeringUnavailable as error:
            head, ctx = str(error), None
        if llama is not None:
            self.llama.attach(llama)
            head = (f"Model: {Path(self.llama.host.model_path(llama)).name} (llama.cpp loader): steering by control vectors; "
                    "a reply that needs another set of presets restarts llama-server.")
            if self.llama.last_notice:
                head += f" Last: {self.llama.last_notice}."
        elif ctx is not None:
            loader = self.models.loader_name()
            broken = [(name, self.preset_problem(name, ctx)) for name, _ in self.active]
            broken = [(name, problem) for name, problem in broken if problem]
            head = (f"Model: {ctx.name} ({ctx.num_layers} layers, hidden size {ctx.hidden_size}"
                    f"{', ' + loader + ' loader' if loader else ''}): ")
            if broken:
                head += "⚠ " + "; ".join(f"{name} cannot steer: {problem}" for name, problem in broken) + "."
            else:
                head += "steering can run."
        parts = [head, f"Active for all chats: {self.describe(self.active)}."]
        applied = self.llama.last_applied if llama is not None else self.last_applied
        if applied and not self.multi_user:
            parts.append(f"Last reply steered by: {self.describe(applied)}.")
        if self.problems.last:
            parts.append(f"Last problem: {self.problems.last}")
        return " ".join(parts)
