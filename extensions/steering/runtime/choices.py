"""Who chose what: the presets active for all chats, and each chat's switch and strengths.

A saved chat's choice is kept on disk (``chats.json``) under its key (mode, character, chat id); a
browser session's (``--multi-user``) or an incognito chat's in memory only, so it never leaks.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..engine.validation import PresetError
from .files import DataFiles
from .items import Items, clean_items, parse_items
from .problems import Problems

CHAT_MODES = ("chat", "chat-instruct")
MAX_SESSIONS = 512  # browser sessions remembered in memory (multi-user mode)
# Keys the adapter writes into a request's state (see script.py).
STATE_IS_CHAT = "steering_chat"  # True when the request is a chat reply (chat tab or chat API)
STATE_SESSION = "steering_session"  # the browser session in --multi-user mode, else absent


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


def memory_only(key: str) -> bool:
    return key.startswith("session:") or key.rsplit("/", 1)[-1].startswith("incognito-")


def is_chat_request(state: dict) -> bool:
    """A chat request: flagged so by the adapter's state_modifier, or not flagged at all, which only
    Impersonate is (the chat's own request, generated without state_modifier; every other path runs it)."""
    return bool(state.get(STATE_IS_CHAT, True))


def state_key(state: dict) -> str | None:
    """The choice key of one request: its browser session in multi-user mode, else its chat."""
    if not is_chat_request(state):
        return None
    session = session_key(state.get(STATE_SESSION))
    if session:
        return session
    return chat_key(state.get("mode"), state.get("character_menu"), state.get("unique_id"))


def character_of(state: dict, default_character: str | None = "Assistant") -> str | None:
    """The character a chat request speaks as, or None (notebook, completions, instruct mode)."""
    if not is_chat_request(state):
        return None
    if "character_menu" in state:  # the chat tab: the character is used in chat modes only
        return state.get("character_menu") or None if state.get("mode") in CHAT_MODES else None
    named = state.get("character")  # the OpenAI-compatible API: a named character applies in any mode
    if named:
        return str(named)
    return default_character if state.get("mode") in CHAT_MODES else None


class ChatChoices:
    """Per-chat choices: ``chats.json`` for saved chats, memory for sessions and incognito chats."""

    FILE = "chats.json"

    def __init__(self, files: DataFiles, default_enabled: bool = True):
        self.files = files
        self.default_enabled = default_enabled
        self._lock = threading.RLock()
        self._memory: OrderedDict[str, ChatChoice] = OrderedDict()

    def get(self, key: str | None) -> ChatChoice:
        if not key:
            return ChatChoice(self.default_enabled)
        with self._lock:
            if key in self._memory:
                found = self._memory[key]
                return ChatChoice(found.enabled, dict(found.strengths))
            if memory_only(key):
                return ChatChoice(self.default_enabled)
            data = self.files.read(self.FILE, {})
            entry = data.get(key) if isinstance(data, dict) else None
            return ChatChoice.from_json(entry) if entry is not None else ChatChoice(self.default_enabled)

    def set(self, key: str | None, choice: ChatChoice) -> None:
        """Remember a chat's choice: on disk for a saved chat, in memory for a session or incognito chat."""
        if not key:
            raise ValueError("this chat has no id; nothing to remember the choice by")
        choice = ChatChoice.from_json(choice.to_json())
        with self._lock:
            if memory_only(key):
                self._memory[key] = choice
                self._memory.move_to_end(key)
                while len(self._memory) > MAX_SESSIONS:
                    self._memory.popitem(last=False)
                return
            data = self.files.read(self.FILE, {})
            data = data if isinstance(data, dict) else {}
            if choice.enabled == self.default_enabled and not choice.strengths:
                data.pop(key, None)
            else:
                data[key] = choice.to_json()
            self.files.write(self.FILE, data)

    def follow(self, old: str | None, new: str | None) -> bool:
        """A chat got a new key (renamed or branched): the new key gets the old one's choice (a branch
        keeps the old one too). False when there was nothing to carry over."""
        if not old or not new or old == new:
            return False
        with self._lock:
            choice = self.get(old)
            if choice == ChatChoice(self.default_enabled) or self.get(new) != ChatChoice(self.default_enabled):
                return False
            self.set(new, choice)
            return True

    def __len__(self) -> int:
        return len(self._memory)


class ActivePresets:
    """The presets active for all chats (``active.json``)."""

    FILE = "active.json"

    def __init__(self, files: DataFiles, problems: Problems):
        self.files = files
        self._lock = threading.RLock()
        data = files.read(self.FILE, {})
        try:
            self._items: Items = parse_items(data.get("active", []) if isinstance(data, dict) else [], source=self.FILE)
        except PresetError as error:
            problems.report(str(error))
            self._items = []

    @property
    def items(self) -> Items:
        with self._lock:
            return list(self._items)

    def set(self, items: Iterable) -> None:
        items = clean_items(items)
        with self._lock:
            self.files.write(self.FILE, {"active": [[n, s] for n, s in items]})
            self._items = items
