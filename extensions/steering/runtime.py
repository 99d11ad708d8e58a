"""What the webui adapter needs at run time, without importing the webui.

``SteeringRuntime`` answers three questions for one generation request:

- *which* presets steer it (``steers_for_state``): the global active list, the presets attached to
  the request's character (``characters.yaml`` in the data folder, or a ``steering:`` key in the
  character file), filtered by the choice made for that chat (on/off and strengths), per chat id
  on disk or per browser session in memory;
- *whether* they can steer the model that is loaded now (``current_model``): a model without
  torch decoder layers (llama.cpp, ExLlamaV3) is reported and left untouched; a model that changed
  since the last request is noticed by identity and gets its own vectors (``vector``), rebuilt from
  the recipes and cached per model fingerprint; a tensor that does not fit is never applied;
- *for how long* (``begin_generation``): steering is armed on the model's ``generate`` for the one
  call that receives this request's prompt tokens, and its hooks exist only inside that call, in the
  thread running it, and only act on forwards of that thread. Whatever way the call ends (finished,
  Stop, a stopped stream's extra forward, an exception), the hooks are removed when it returns.

Files in ``data_dir`` (all written atomically): ``active.json`` (global presets),
``chats.json`` (per-chat choices), ``characters.yaml`` (presets attached to characters).
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import yaml
from torch import nn

from .engine.apply import SteeringHandle, Steer
from .engine.layers import UnsupportedModelError, find_layers, hidden_size
from .engine.presets import PresetError, PresetStore, atomic_write, check_name, model_fingerprint
from .engine.vector import SteeringVector

log = logging.getLogger("steering")

CHAT_MODES = ("chat", "chat-instruct")
# Model classes the webui uses for loaders that run outside PyTorch, with the loader's usual name.
NO_TORCH_CLASSES = {
    "LlamaServer": "llama.cpp",
    "Exllamav3Model": "ExLlamaV3",
    "Exllamav3HF": "ExLlamaV3",
    "TensorRTLLMModel": "TensorRT-LLM",
}
NO_TORCH_LOADERS = {"llama.cpp": "llama.cpp", "ExLlamav3": "ExLlamaV3", "ExLlamav3_HF": "ExLlamaV3", "TensorRT-LLM": "TensorRT-LLM"}
MAX_SESSIONS = 512  # browser sessions remembered in memory (multi-user mode)

# Keys the adapter writes into a request's state (see script.py).
STATE_IS_CHAT = "steering_chat"  # True when the request is a chat reply (chat tab or chat API)
STATE_SESSION = "steering_session"  # the browser session in --multi-user mode, else absent

Items = list[tuple[str, float]]


class SteeringUnavailable(Exception):
    """Steering cannot run now; the message says why, for the user."""


@dataclass
class ChatChoice:
    """What one chat decided: steering on or off, and strengths overriding the presets' own."""

    enabled: bool = True
    strengths: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"enabled": bool(self.enabled), "strengths": {k: float(v) for k, v in self.strengths.items()}}

    @classmethod
    def from_json(cls, data: Any) -> ChatChoice:
        if not isinstance(data, dict):
            return cls()
        strengths = {}
        for name, value in (data.get("strengths") or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                strengths[str(name)] = value
        return cls(bool(data.get("enabled", True)), strengths)


@dataclass(frozen=True)
class ChatRow:
    name: str
    default: float  # the strength from the character or the global list
    strength: float  # the strength this chat uses
    source: str  # "character" or "all chats"


@dataclass(frozen=True)
class ChatView:
    key: str | None  # None: the chat has no id (nothing can be remembered)
    enabled: bool
    rows: list[ChatRow]
    character: str | None
    problem: str | None  # why steering cannot run on the loaded model, if it cannot

    def text(self) -> str:
        """A short Markdown summary for the chat tab."""
        lines = []
        if self.problem:
            lines.append(f"⚠ {self.problem}")
        if not self.rows:
            lines.append("No steering presets for this chat: activate some in the Steering tab or attach them to the character.")
        elif not self.enabled:
            lines.append("Steering is switched off for this chat.")
        elif not self.problem:
            used = [f"{row.name} ×{row.strength:g}" for row in self.rows if row.strength != 0]
            lines.append(f"Steering this chat: {', '.join(used)}." if used else "Every preset is at strength 0 in this chat.")
        if self.key is None:
            lines.append("(This chat has no id yet, so a change here is not remembered.)")
        return "  \n".join(lines)


def chat_key(mode: str | None, character: str | None, unique_id: str | None) -> str | None:
    """The key of one saved chat, as the webui files it: instruct chats have no character folder."""
    if not unique_id:
        return None
    if mode == "instruct":
        return f"instruct/{unique_id}"
    return f"chat/{character or ''}/{unique_id}"


def session_key(session: str | None) -> str | None:
    """The key of a browser session's choice (--multi-user: chats have no id); kept in memory only."""
    return f"session:{session}" if session else None


def _memory_only(key: str) -> bool:
    return key.startswith("session:") or key.rsplit("/", 1)[-1].startswith("incognito-")


def state_key(state: dict) -> str | None:
    """The choice key of one request: its browser session in multi-user mode, else its chat."""
    if not state.get(STATE_IS_CHAT):
        return None
    session = session_key(state.get(STATE_SESSION))
    if session:
        return session
    return chat_key(state.get("mode"), state.get("character_menu"), state.get("unique_id"))


def character_of(state: dict, default_character: str | None = "Assistant") -> str | None:
    """The character a chat request speaks as, or None (notebook, completions, instruct mode)."""
    if not state.get(STATE_IS_CHAT):
        return None
    if "character_menu" in state:  # the chat tab: the character is used in chat modes only
        return state.get("character_menu") or None if state.get("mode") in CHAT_MODES else None
    named = state.get("character")  # the OpenAI-compatible API: a named character applies in any mode
    if named:
        return str(named)
    return default_character if state.get("mode") in CHAT_MODES else None


def parse_items(value: Any, default_strength: Callable[[str], float] | None = None, source: str = "steering") -> Items:
    """Preset items from a ``steering:`` key or a settings value.

    Accepted: ``{name: strength, ...}`` (a null strength means the preset's own), ``[name, ...]``,
    ``[[name, strength], ...]``, ``[{name: ..., strength: ...}, ...]``, or a single name.
    """
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        value = list(value.items())
    if not isinstance(value, list):
        raise PresetError(f"{source}: expected a mapping of preset names to strengths or a list, got {type(value).__name__}")
    items: Items = []
    for entry in value:
        if isinstance(entry, str):
            name, strength = entry, None
        elif isinstance(entry, dict):
            name, strength = entry.get("name", entry.get("preset")), entry.get("strength")
        elif isinstance(entry, (list, tuple)) and 1 <= len(entry) <= 2:
            name, strength = entry[0], entry[1] if len(entry) > 1 else None
        else:
            raise PresetError(f"{source}: cannot read the entry {entry!r}")
        check_name(name)
        if strength is None:
            strength = default_strength(name) if default_strength else 1.0
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise PresetError(f"{source}: strength of {name!r} must be a number, got {strength!r}") from None
        if not math.isfinite(strength):
            raise PresetError(f"{source}: strength of {name!r} must be finite")
        items = [item for item in items if item[0] != name] + [(name, strength)]
    return items


def _clean_items(items: Iterable) -> Items:
    out: Items = []
    for name, strength in items:
        check_name(name)
        strength = float(strength)
        if not math.isfinite(strength):
            raise PresetError(f"strength of {name!r} must be a finite number")
        out = [item for item in out if item[0] != name] + [(name, strength)]
    return out


class ReentrantLock:
    """A per-thread re-entrant lock on top of a host's plain lock (the webui's generation_lock).

    ``get_lock`` is called at each first acquire, so a host that replaces its lock is followed.
    """

    def __init__(self, get_lock: Callable[[], Any], on_acquire: Callable[[], None] | None = None):
        self._get_lock = get_lock
        self.on_acquire = on_acquire  # runs after each first acquire
        self._owner: int | None = None
        self._count = 0
        self._held = None

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


class _ThreadSteering(SteeringHandle):
    """Engine hooks that act only on forwards run by one thread (the thread of one generate call).

    A stopped stream may still run one forward in its own thread after the next generation began in
    another: each generation's hooks then leave the other's forwards alone.
    """

    def __init__(self, *args, thread: int, **kwargs):
        self.thread = thread
        super().__init__(*args, **kwargs)

    def _on_forward(self, module, args, kwargs):
        if threading.get_ident() != self.thread:
            return None
        return super()._on_forward(module, args, kwargs)

    def _block_hook(self, index: int):
        hook = super()._block_hook(index)

        def gated(module, args, kwargs):
            if threading.get_ident() != self.thread:
                return None
            return hook(module, args, kwargs)

        return gated


class _Armed:
    """Steering waiting for the one ``model.generate`` call that receives ``inputs``."""

    def __init__(self, runtime: SteeringRuntime, model: nn.Module, steers: list[Steer], inputs: torch.Tensor | None):
        self.runtime, self.model, self.steers, self.inputs = runtime, model, steers, inputs
        self.original = model.generate  # the class's bound method
        self.done = False

        def generate(*args, **kwargs):
            return self.call(*args, **kwargs)

        generate._steering_armed = self  # marks our wrapper (never remove someone else's attribute)
        self.wrapper = generate
        model.__dict__["generate"] = generate

    def disarm(self) -> None:
        if self.model.__dict__.get("generate") is self.wrapper:
            del self.model.__dict__["generate"]
        self.done = True

    def _matches(self, args, kwargs) -> bool:
        given = kwargs.get("inputs", kwargs.get("input_ids", args[0] if args else None))
        if self.inputs is None or given is self.inputs:
            return True
        return isinstance(given, torch.Tensor) and given.shape == self.inputs.shape and bool(torch.equal(given.to(self.inputs.device), self.inputs))

    def call(self, *args, **kwargs):
        self.disarm()  # one call only
        with self.runtime._state_lock:
            if self.runtime._armed is self:
                self.runtime._armed = None
        if not self._matches(args, kwargs):
            log.warning("steering: a generate call with other prompt tokens than the request's; left unsteered")
            return self.original(*args, **kwargs)
        handle = _ThreadSteering(self.model, self.steers, self.runtime.layers_path, thread=threading.get_ident())
        with self.runtime._state_lock:
            self.runtime._live.add(handle)
        try:
            return self.original(*args, **kwargs)
        finally:
            handle.remove()
            with self.runtime._state_lock:
                self.runtime._live.discard(handle)
                self.runtime._idle.notify_all()


class SteeringRuntime:
    """Presets, attachments, chat choices and the model in use; see the module docstring."""

    def __init__(
        self,
        store: PresetStore,
        data_dir: Path,
        model_source: Callable[[], tuple[Any, Any] | None],
        loader_name: Callable[[], str | None] = lambda: None,
        characters_dir: Path | None = None,
        lock: Any = None,
        layers_path: str | None = None,
        default_enabled: bool = True,
        default_character: Callable[[], str | None] | str | None = "Assistant",
        multi_user: bool = False,
    ):
        self.store = store
        self.data_dir = Path(data_dir)
        self.model_source = model_source
        self.loader_name = loader_name
        self.characters_dir = Path(characters_dir) if characters_dir else None
        if lock is None:
            own = threading.Lock()
            lock = ReentrantLock(lambda: own)
        if isinstance(lock, ReentrantLock) and lock.on_acquire is None:
            lock.on_acquire = self.end_generation  # whoever holds the lock may generate: nothing stays armed
        self.lock = lock  # taken by the tab around its own generate calls (the webui's generation lock)
        self.layers_path = layers_path or None
        self.default_enabled = default_enabled
        self._default_character = default_character
        self.multi_user = multi_user  # sessions must not learn what steered another's reply
        self._state_lock = threading.RLock()  # guards the fields below; never held while generating
        self._idle = threading.Condition(self._state_lock)
        self._model_ref: weakref.ref | None = None
        self._fingerprint: str | None = None
        self._vectors: dict[tuple[str, str, str], SteeringVector] = {}
        self._armed: _Armed | None = None
        self._live: set[_ThreadSteering] = set()
        self._sessions: OrderedDict[str, ChatChoice] = OrderedDict()
        self._character_file_cache: dict[Path, tuple[int, Any]] = {}
        self.last_error: str | None = None
        self.last_applied: Items = []
        self.model_changes = 0
        self._active: Items = self._read_active()

    # -- files -------------------------------------------------------------------------------
    def _read_json(self, name: str, default):
        path = self.data_dir / name
        if not path.is_file():
            return default
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            self._error(f"{path}: unreadable, ignored ({error})")
            return default

    def _write_json(self, name: str, data) -> None:
        text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True)
        atomic_write(self.data_dir / name, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _error(self, message: str) -> None:
        self.last_error = message
        log.warning("steering: %s", message)

    # -- global active presets -----------------------------------------------------------------
    def _read_active(self) -> Items:
        data = self._read_json("active.json", {})
        try:
            return parse_items(data.get("active", []) if isinstance(data, dict) else [], source="active.json")
        except PresetError as error:
            self._error(str(error))
            return []

    @property
    def active(self) -> Items:
        with self._state_lock:
            return list(self._active)

    def set_active(self, items: Iterable) -> None:
        items = _clean_items(items)
        with self._state_lock:
            self._write_json("active.json", {"active": [[n, s] for n, s in items]})
            self._active = items

    # -- characters ----------------------------------------------------------------------------
    def _attachments_file(self) -> dict:
        path = self.data_dir / "characters.yaml"
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            self._error(f"{path}: unreadable, ignored ({error})".replace("\n", " "))
            return {}
        return data if isinstance(data, dict) else {}

    def _write_attachments(self, data: dict) -> None:
        text = yaml.safe_dump(data, sort_keys=True, allow_unicode=True)
        atomic_write(self.data_dir / "characters.yaml", lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def character_file(self, character: str) -> Path | None:
        """The file the webui loads for ``character`` (.yml, .yaml, then .json), if any."""
        if not self.characters_dir or not character or "/" in character or "\\" in character or character.startswith("."):
            return None
        for suffix in (".yml", ".yaml", ".json"):
            path = self.characters_dir / f"{character}{suffix}"
            if path.is_file():
                return path
        return None

    def _character_key(self, character: str) -> Items | None:
        """Items of the ``steering:`` key of the character file, or None when it has none."""
        path = self.character_file(character)
        if path is None:
            return None
        try:
            mtime = path.stat().st_mtime_ns
            cached = self._character_file_cache.get(path)
            if cached and cached[0] == mtime:
                data = cached[1]
            else:
                text = path.read_text(encoding="utf-8")
                data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
                self._character_file_cache[path] = (mtime, data)
        except (OSError, ValueError, yaml.YAMLError) as error:
            self._error(f"{path}: unreadable ({error})".replace("\n", " "))
            return None
        if not isinstance(data, dict) or data.get("steering") is None:
            return None
        try:
            return parse_items(data["steering"], self._default_strength, source=f"{path.name}: steering")
        except PresetError as error:
            self._error(str(error))
            return None

    def _default_strength(self, name: str) -> float:
        try:
            return float(self.store.recipe(name).strength)
        except PresetError:
            return 1.0

    def attachments(self, character: str | None) -> Items:
        """The presets attached to ``character``.

        The last edit wins: what the tab attached (kept in characters.yaml, which saving a character
        from the webui cannot erase), unless the character file's ``steering:`` key was written or
        changed by hand since; such a key is then adopted into characters.yaml, so it survives the
        webui rewriting the file without it.
        """
        if not character:
            return []
        with self._state_lock:
            data = self._attachments_file()
            entry = data.get(character) if isinstance(data.get(character), dict) else None
            key = self._character_key(character)
            if key is not None:
                snapshot = [[n, s] for n, s in key]
                if entry is None or entry.get("from_file") != snapshot:
                    data[character] = {"presets": snapshot, "from_file": snapshot}
                    try:
                        self._write_attachments(data)
                    except OSError as error:
                        self._error(f"cannot record the steering of {character!r}: {error}")
                    return key
            if entry is None:
                return []
            try:
                return parse_items(entry.get("presets") or [], source=f"characters.yaml: {character}")
            except PresetError as error:
                self._error(str(error))
                return []

    def attach(self, character: str, items: Iterable) -> None:
        """Attach presets (with strengths) to ``character``; an empty list detaches all."""
        if not isinstance(character, str) or not character.strip():
            raise PresetError("choose a character first")
        items = _clean_items(items)
        with self._state_lock:
            data = self._attachments_file()
            key = self._character_key(character)
            data[character] = {"presets": [[n, s] for n, s in items]}
            if key is not None:  # the file's key as it is now is not a newer hand edit
                data[character]["from_file"] = [[n, s] for n, s in key]
            self._write_attachments(data)

    # -- per-chat choices ------------------------------------------------------------------------
    def chat_choice(self, chat_id: str | None) -> ChatChoice:
        if not chat_id:
            return ChatChoice(self.default_enabled)
        with self._state_lock:
            if chat_id in self._sessions:
                found = self._sessions[chat_id]
                return ChatChoice(found.enabled, dict(found.strengths))
            if _memory_only(chat_id):
                return ChatChoice(self.default_enabled)
            data = self._read_json("chats.json", {})
            entry = data.get(chat_id) if isinstance(data, dict) else None
            return ChatChoice.from_json(entry) if entry is not None else ChatChoice(self.default_enabled)

    def set_chat_choice(self, chat_id: str | None, choice: ChatChoice) -> None:
        """Remember a chat's choice: on disk for a saved chat, in memory for a session or incognito chat."""
        if not chat_id:
            raise ValueError("this chat has no id; nothing to remember the choice by")
        choice = ChatChoice.from_json(choice.to_json())
        with self._state_lock:
            if _memory_only(chat_id):
                self._sessions[chat_id] = choice
                self._sessions.move_to_end(chat_id)
                while len(self._sessions) > MAX_SESSIONS:
                    self._sessions.popitem(last=False)
                return
            data = self._read_json("chats.json", {})
            data = data if isinstance(data, dict) else {}
            if choice.enabled == self.default_enabled and not choice.strengths:
                data.pop(chat_id, None)
            else:
                data[chat_id] = choice.to_json()
            self._write_json("chats.json", data)

    # -- what applies to one request -----------------------------------------------------------------
    def default_character(self) -> str | None:
        value = self._default_character
        return value() if callable(value) else value

    def items_for_state(self, state: dict) -> tuple[Items, ChatChoice, str | None]:
        """(presets with strengths, the chat's choice, the character) for one request, before filtering."""
        character = character_of(state, self.default_character())
        merged: dict[str, float] = dict(self.active)
        merged.update(dict(self.attachments(character)))
        choice = self.chat_choice(state_key(state))
        return list(merged.items()), choice, character

    def plan(self, state: dict) -> Items:
        """The presets and strengths that would steer this request (strength 0 and off excluded)."""
        items, choice, _ = self.items_for_state(state)
        if not choice.enabled:
            return []
        out = [(name, float(choice.strengths.get(name, strength))) for name, strength in items]
        return [(name, strength) for name, strength in out if strength != 0]

    def steers_for_state(self, state: dict) -> list[Steer]:
        """The steering for one request on the current model; nothing that cannot apply.

        Problems (no torch model, unknown preset, a vector that does not fit) are recorded in
        ``last_error`` and that preset is skipped: generation itself is never blocked.
        """
        plan = self.plan(state)
        if not plan:
            return []
        try:
            self.current_model()
        except SteeringUnavailable as error:
            self._error(f"{error} (wanted: {', '.join(n for n, _ in plan)})")
            return []
        steers = []
        for name, strength in plan:
            try:
                vector = self.vector(name)
                steers.append(Steer(vector, strength, self.store.recipe(name).mode))
            except (PresetError, SteeringUnavailable, ValueError) as error:
                self._error(f"preset {name!r} not applied: {error}")
        return steers

    # -- the model ----------------------------------------------------------------------------------
    def current_model(self) -> tuple[nn.Module, Any]:
        """(model, tokenizer) if steering can run on it, else SteeringUnavailable saying why."""
        found = self.model_source()
        model, tokenizer = found if found else (None, None)
        if model is None:
            raise SteeringUnavailable("No model is loaded. Load one in the Model tab (Transformers loader) to steer.")
        kind = NO_TORCH_CLASSES.get(type(model).__name__) or NO_TORCH_LOADERS.get(self.loader_name() or "")
        if kind or not isinstance(model, nn.Module):
            kind = kind or type(model).__name__
            raise SteeringUnavailable(
                f"Steering is off: the {kind} loader runs the model outside PyTorch, so there are no layers to steer. "
                "Generation is left untouched. Load the model with the Transformers loader to steer it."
            )
        try:
            find_layers(model, self.layers_path)
        except UnsupportedModelError as error:
            raise SteeringUnavailable(f"Steering is off for {type(model).__name__}: {error}") from None
        self._notice(model)
        return model, tokenizer

    def _notice(self, model: nn.Module) -> None:
        with self._state_lock:
            if self._model_ref is not None and self._model_ref() is model:
                return
            fingerprint = model_fingerprint(model)
            if self._model_ref is not None:
                self.model_changes += 1
                log.info("steering: the model changed (now %s, fingerprint %s); vectors are rebuilt for it", type(model).__name__, fingerprint)
            self._model_ref = weakref.ref(model)
            self._fingerprint = fingerprint
            self._vectors.clear()

    def vector(self, name: str) -> SteeringVector:
        """The preset's vector for the current model: cached, else built from its recipe (needs the
        model: the webui holds the generation lock around this, the tab holds ``runtime.lock``)."""
        model, tokenizer = self.current_model()
        recipe = self.store.recipe(name)
        key = (self._fingerprint or "", name, recipe.key())
        vector = self._vectors.get(key)
        if vector is None:
            vector = self.store.cached_vector(recipe, model)
            if vector is None:  # the console says why the first reply with this preset on this model is slow
                log.info("steering: building %s (%s) for %s, first use on this model", name, recipe.method, type(model).__name__)
                start = time.perf_counter()
                vector = self.store.vector(recipe, model, tokenizer)
                log.info("steering: built %s in %.1f s; cached for this model", name, time.perf_counter() - start)
            self.check_fits(vector, model, name)
            with self._state_lock:
                if self._model_ref is not None and self._model_ref() is model:
                    self._vectors[key] = vector
        return vector

    def check_fits(self, vector: SteeringVector, model: nn.Module, name: str = "the vector") -> None:
        hidden, layers = hidden_size(model), len(find_layers(model, self.layers_path))
        if (hidden is not None and vector.hidden_size != hidden) or max(vector.layers) >= layers:
            raise PresetError(
                f"{name}: its vector (hidden size {vector.hidden_size}, layers {vector.layers}) does not fit "
                f"{type(model).__name__} (hidden size {hidden}, {layers} layers); not applied"
            )

    # -- one generation ---------------------------------------------------------------------------------
    def begin_generation(self, state: dict, input_ids: torch.Tensor | None) -> Items:
        """Arm steering for the ``model.generate`` call that will receive ``input_ids``.

        Called by the webui's tokenizer_modifier (inside the generation lock). Returns what was
        armed (empty: the model is not touched at all).
        """
        self.end_generation()
        self.last_applied = []
        steers = self.steers_for_state(state)
        if not steers:
            return []
        model, _ = self.current_model()
        length = int(input_ids.shape[-1]) if isinstance(input_ids, torch.Tensor) else None
        kept = []
        for steer in steers:
            rows = steer.vector.positions if steer.mode == "actadd" else 0
            if length is not None and rows and length < rows + 1:
                self._error(f"an actadd preset needs a prompt of at least {rows + 1} tokens, this one has {length}; skipped")
                continue
            kept.append(steer)
        if not kept:
            return []
        plan = self.plan(state)
        with self._state_lock:
            self._armed = _Armed(self, model, kept, input_ids)
            self.last_applied = plan
            self.last_error = None
        return plan

    def end_generation(self) -> None:
        """Disarm steering that was armed but never reached ``generate`` (an error came first)."""
        with self._state_lock:
            armed, self._armed = self._armed, None
        if armed is not None and not armed.done:
            armed.disarm()

    @property
    def steering_now(self) -> bool:
        """Whether a generate call is running with steering hooks at this moment."""
        with self._state_lock:
            return bool(self._live)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no steered generate call is running (a stopped stream's thread has finished)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._live, timeout)

    # -- the chat tab's panel ------------------------------------------------------------------------------
    def chat_view(self, state: dict) -> ChatView:
        """What the chat tab shows for the chat of ``state`` (a chat request's state)."""
        items, choice, character = self.items_for_state(state)
        attached = dict(self.attachments(character))
        rows = [
            ChatRow(name, strength, float(choice.strengths.get(name, strength)), "character" if name in attached else "all chats")
            for name, strength in items
        ]
        try:
            self.current_model()
            problem = None
        except SteeringUnavailable as error:
            problem = str(error)
        return ChatView(state_key(state), choice.enabled, rows, character, problem)

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
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"the strength of {name} must be a finite number")
            if defaults.get(name) == value:
                choice.strengths.pop(name, None)
            else:
                choice.strengths[name] = value
        self.set_chat_choice(key, choice)
        return self.chat_view(state)

    # -- for people -------------------------------------------------------------------------------------
    def describe(self, items: Items) -> str:
        return ", ".join(f"{name} ×{strength:g}" for name, strength in items) or "none"

    def status_line(self) -> str:
        """One line: the model, whether steering can run on it, the active presets, the last error."""
        try:
            model, _ = self.current_model()
            layers = find_layers(model, self.layers_path)
            loader = self.loader_name()
            head = (
                f"Model: {type(model).__name__} ({len(layers)} layers, hidden size {hidden_size(model)}"
                f"{', ' + loader + ' loader' if loader else ''}): steering can run."
            )
        except SteeringUnavailable as error:
            head = str(error)
        parts = [head, f"Active for all chats: {self.describe(self.active)}."]
        if self.last_applied and not self.multi_user:
            parts.append(f"Last reply steered by: {self.describe(self.last_applied)}.")
        if self.last_error:
            parts.append(f"Last problem: {self.last_error}")
        return " ".join(parts)
