"""What the webui adapter and the UI need at run time, without importing the webui.

``SteeringRuntime`` is a small facade over parts with one job each:

- ``choices`` (ChatChoices, ActivePresets): presets active for all chats, each chat's switch and strengths;
- ``attachments`` (Attachments): presets attached to characters;
- ``models`` (ModelWatch): the loaded model as a ModelContext, made once per model, and its vectors;
- ``gate`` (GenerationGate): steering armed for the one generate call of a request;
- ``preparer`` (Preparer): vectors built in the background when a model loads, before a reply needs them;
- ``problems`` (Problems): what kept a reply from being steered as chosen, said once;
- ``readings`` (Readings): the reading of each reply along the presets it applied or names (a monitor);
- ``reports`` (ReportBook): what steered each API request's reply, for its response (requests.py).

For one request it answers *which* presets steer it (``plan``: the request's own ``steering`` if it
sent one, else the character's and the all-chats ones), *whether* they can steer the model
loaded now (``steers_for_state``: anything that cannot is skipped and reported, generation is never
blocked) and arms them (``begin_generation``). The UI talks to it through ``interface.SteeringService``.

Files in ``data_dir`` (all written atomically): ``active.json`` (global presets),
``chats.json`` (per-chat choices), ``characters.yaml`` (presets attached to characters).
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..characters import character_names
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
from .requests import STATE_STEERING, ReportBook, RequestError, RequestReport, requested_items
from .views import ChatRow, ChatView

__all__ = [
    "CHAT_MODES", "MAX_SESSIONS", "STATE_IS_CHAT", "STATE_SESSION", "ChatChoice", "ChatRow", "ChatView", "Items",
    "ReentrantLock", "SteeringRuntime", "SteeringUnavailable", "character_of", "chat_key", "parse_items", "session_key",
    "state_key",
]


def loaded_name(ctx: ModelContext) -> str:
    """The model as the user named it when loading it (its folder: SmolLM2-135M-Instruct; a converted GGUF's
    cache folder without its key), else its class."""
    folder = str(getattr(getattr(ctx.model, "config", None), "name_or_path", "") or "")
    return re.sub(r"-[0-9a-f]{12}$", "", Path(folder).name) or ctx.name


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
        self.reports = ReportBook()
        self.files = DataFiles(Path(data_dir), self.problems)
        self.models = ModelWatch(store, model_source, loader_name, layers_path)
        self.gate = GenerationGate()
        self.choices = ChatChoices(self.files, default_enabled)
        self.active_presets = ActivePresets(self.files, self.problems)
        self.characters = Attachments(self.files, characters_dir, self.preset_strength, self.problems)
        own = threading.Lock()
        # the tab takes this around its own generate calls; whoever holds it may generate, so nothing stays armed
        self.lock = ReentrantLock(host_lock or (lambda: own), on_acquire=self.gate.disarm)
        self.preparer = Preparer(self.models, self.lock, self.problems)
        self.readings = Readings(self.models, self.problems, store.folder / "baselines")
        self.models.on_change = self._model_loaded
        # models in llama-server (the llama.cpp loader) are steered by control vectors when the host can restart it
        self.llama = (LlamaCppBackend(store, Path(data_dir), llama_host, self.problems, self.plan, report=self._report_llama)
                      if llama_host else None)
        self.default_enabled = default_enabled
        self._default_character = default_character
        self.multi_user = multi_user  # sessions must not learn what steered another's reply
        self.last_applied: Items = []
        self._session_applied: OrderedDict[str, Items] = OrderedDict()  # multi-user: each session's last reply
        self._session_lock = threading.Lock()

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

    def character_names(self) -> list[str]:
        """Characters to attach presets to: the webui's character files, the default one, those attached before."""
        default = self.default_character()
        names = {*character_names(self.characters_dir), *([default] if default else []), *self.characters.names()}
        return sorted(names, key=str.lower)

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

    def preset_strength(self, name: str) -> float:
        """The preset's own strength (a dose for a calibrated preset); 1 when it cannot be read."""
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
        """The presets and strengths that would steer this request (strength 0 and off excluded): the
        request's own ``steering`` when it sent one, else the character's and the all-chats presets."""
        requested = requested_items(state, self.preset_strength)
        if requested is not None:
            return [(name, strength) for name, strength in requested if strength != 0]
        items, choice, _ = self.items_for_state(state)
        if not choice.enabled:
            return []
        out = [(name, float(choice.strengths.get(name, strength))) for name, strength in items]
        return [(name, strength) for name, strength in out if strength != 0]

    def steers_for_state(self, state: dict) -> list[Steer]:
        """The steering for one request on the current model; nothing that cannot apply."""
        return [steer for _, steer in self._named_steers(state, self.open_report(state))]

    def _named_steers(self, state: dict, report: RequestReport) -> list[tuple[str, Steer]]:
        """(preset name, steer) for one request on the current model; nothing that cannot apply.

        Problems (no torch model, unknown preset, a vector that does not fit) are reported once and in
        ``report``, and that preset is skipped: generation itself is never blocked.
        """
        plan = self.plan(state)
        if not plan:
            return []
        try:
            self.current_model()
        except SteeringUnavailable as error:
            self.problems.report(f"{error} (wanted: {', '.join(n for n, _ in plan)})")
            report.reason = str(error)
            for name, strength in plan:
                self._report(report, state, name, strength, None, str(error))
            return []
        steers = []
        for name, strength in plan:
            try:
                steers.append((name, Steer(self.vector(name), strength, self.store.recipe(name).mode)))
            except (PresetError, SteeringUnavailable, ValueError, OSError) as error:
                self.problems.report(f"preset {name!r} not applied: {error}")
                self._report(report, state, name, strength, None, str(error))
        return steers

    # -- a request's own steering (the API) ------------------------------------------------------------
    def open_report(self, state: dict) -> RequestReport:
        """A fresh report for the request of ``state``, kept for its response when it has an id."""
        requested = state.get(STATE_STEERING) is not None
        report = RequestReport("request" if requested else "settings")
        if not self.plan(state):
            _, choice, character = self.items_for_state(state)
            report.reason = ("the request asked for no steering" if requested
                             else "steering is switched off for this chat" if not choice.enabled
                             else "no preset is active for all chats or attached to " + (f"the character {character!r}" if character else "a character"))
        return self.reports.open(state, report)

    def _report(self, report: RequestReport, state: dict, name: str, strength: float, layers, reason: str | None) -> None:
        if state.get(STATE_STEERING) is not None:
            source = "request"
        else:
            source = "character" if name in dict(self.attachments(character_of(state, self.default_character()))) else "all chats"
        try:
            calibrated = self.store.recipe(name).calibrated
        except PresetError:
            calibrated = False
        if reason is None:
            report.applied(name, strength, calibrated, layers, source)
        else:
            report.skipped(name, strength, calibrated, layers, source, reason)

    def _report_llama(self, state: dict, plan: Items, skipped: dict[str, str], restart_seconds: float | None) -> None:
        report = self.open_report(state)
        report.restart_seconds = restart_seconds
        for name, strength in plan:
            self._report(report, state, name, strength, None, skipped.get(name))

    def check_usable(self, names: list[str], reading: bool = False) -> None:
        """RequestError unless every preset in ``names`` can steer (``reading``: be read on) the model loaded now."""
        param = "monitor" if reading else STATE_STEERING
        if self._llama_server() is not None:
            if reading:
                raise RequestError("monitor readings need the hidden states of the reply, which the llama.cpp loader does not "
                                   "give; load the model with the Transformers loader", param)
            for name in names:
                recipe = self.store.recipe(name)
                if recipe.mode != "all":
                    raise RequestError(f"preset {name!r} steers in mode {recipe.mode}, which the llama.cpp loader cannot do (llama-server "
                                       "adds control vectors at every position); choose a preset of mode all, or load the model with the "
                                       "Transformers loader", param)
            return
        try:
            ctx = self.current_model()
        except SteeringUnavailable as error:
            raise RequestError(str(error), param) from None
        for name in names:
            problem = self.preset_problem(name, ctx)
            if problem:
                raise RequestError(f"preset {name!r} cannot {'be read on' if reading else 'steer'} {ctx.name}: {problem}", param)

    # -- one generation -------------------------------------------------------------------------------
    def begin_generation(self, state: dict, input_ids: torch.Tensor | None) -> Items:
        """Arm steering for the ``model.generate`` call that will receive ``input_ids``.

        Called by the webui's tokenizer_modifier (inside the generation lock). Returns what was
        armed (empty: the model is not touched at all).
        """
        self._applied(state, [])
        self.gate.drop(input_ids)
        report = self.open_report(state)
        steers = self._named_steers(state, report)
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
        for name, steer in steers:
            rows = steer.vector.positions if steer.mode == "actadd" else 0
            problem = None
            if length is not None and rows and length < rows + 1:
                problem = f"an actadd preset needs a prompt of at least {rows + 1} tokens, this one has {length}; skipped"
                self.problems.report(problem)
            else:
                kept.append(steer)
            self._report(report, state, name, steer.strength, steer.vector.layers, problem)
        applied = self.plan(state) if kept else []
        if kept and len(kept) == len(steers) and len(steers) == len(applied) and not unread:
            self.problems.clear()
        read = [name for name, _ in applied] + wanted if self.readings.kept(state) else []  # nobody to show it to: not read
        monitor = self.readings.monitor(ctx, read) if read else None
        if not kept and monitor is None:
            return []
        self.gate.arm(ctx, kept, input_ids, monitor, self.readings.on_reply(state) if monitor is not None else None)
        self._applied(state, applied)
        return applied

    def _applied(self, state: dict, items: Items) -> None:
        """Remember what steered the reply of ``state``: for the status line, and (multi-user) for its
        session's own status line only."""
        self.last_applied = items
        key = session_key(state.get(STATE_SESSION))
        if key:
            with self._session_lock:
                self._session_applied[key] = items
                self._session_applied.move_to_end(key)
                while len(self._session_applied) > MAX_SESSIONS:
                    self._session_applied.popitem(last=False)

    def last_applied_for(self, session: str | None = None) -> Items:
        """What steered the last reply this user saw: the last reply (one user), or the session's own
        (multi-user: one session never learns what steered another's)."""
        if not self.multi_user:
            return self.last_applied
        with self._session_lock:
            return list(self._session_applied.get(session_key(session) or "", []))

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
        key = state_key(state)
        read = self.readings.last(state)  # kept under the chat's own key: the session's with --multi-user
        return ChatView(key, choice.enabled, rows, character, problem, self.problems.last if private else None,
                        self.llama.last_notice if llama is not None and private else None, self.choices.dropped(key),
                        read.text() if read else None)

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
            if recipe.imported is not None and recipe.imported.hidden_size != ctx.hidden_size:
                return f"it was imported for hidden size {recipe.imported.hidden_size}, {ctx.name} has {ctx.hidden_size}"
            recipe.layer_indices(ctx.num_layers)
            cached = self.store.cached_vector(recipe, ctx)
            if cached is not None:
                self.check_fits(cached, ctx, name)
        except (PresetError, ValueError, OSError) as error:
            return str(error)
        return None

    def status_line(self, session: str | None = None) -> str:
        """One line: the model, whether the next reply can be steered, the active presets, the last problem.
        ``session``: the browser session asking (multi-user: its own last reply is named)."""
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
            head = (f"Model: {loaded_name(ctx)} ({ctx.num_layers} layers, hidden size {ctx.hidden_size}"
                    f"{', ' + loader + ' loader' if loader else ''}): ")
            if broken:
                head += "⚠ " + "; ".join(f"{name} cannot steer: {problem}" for name, problem in broken) + "."
            else:
                head += "steering can run."
        parts = [head, f"Active for all chats: {self.describe(self.active)}."]
        applied = self.last_applied_for(session) if llama is None else [] if self.multi_user else self.llama.last_applied
        if applied:
            parts.append(f"Last reply steered by: {self.describe(applied)}.")
        if self.problems.last:
            parts.append(f"Last problem: {self.problems.last}")
        return " ".join(parts)
