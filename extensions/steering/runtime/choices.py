"""Who chose what: the presets active for all chats, and each chat's switch and strengths.

A saved chat's choice is kept on disk (``chats.json``) under its key (mode, character, chat id); a
browser session's (``--multi-user``) or an incognito chat's in memory only, so it never leaks.

Keys are unambiguous: each part has '%', '/' and '#' escaped (so character ``A/B`` with chat ``C``
and character ``A`` with chat ``B/C`` differ), and a part longer than a file name (MAX_NAME_BYTES;
the webui saves a chat as ``<character>/<id>.json``) is kept as ``#`` and its digest, so every key is
short. chats.json keeps at most MAX_CHATS choices; past that a new chat's choice is refused, with a
message. Sessions are kept in memory up to MAX_SESSIONS; a session whose choice had to be dropped
reads as switched off, and its panel says so: a choice never flips back on by itself.
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..characters import MAX_NAME_BYTES
from ..engine.validation import PresetError
from .files import DataFiles
from .items import Items, clean_items, parse_items
from .problems import Problems

CHAT_MODES = ("chat", "chat-instruct")
MAX_SESSIONS = 512  # browser sessions whose choice is kept in memory (multi-user mode)
# Sessions remembered as dropped (a 64-bit digest each, under 5 MiB in all): they read as off. Should
# even that overflow, every session without a kept choice reads as off, so none flips back on.
MAX_DROPPED = 65_536
MAX_CHATS = 10_000  # saved chats whose choice chats.json keeps (a key is at most about 1.6 KB: 2 parts, escaped)
CHATS_FORMAT = 2  # chats.json: {"format": 2, "chats": {key: choice}}; format 1 was the bare mapping
INCOGNITO = "incognito-"  # how the webui's incognito chat ids begin: their choices stay in memory
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
        stored = data.get("strengths")
        for name, value in (stored if isinstance(stored, dict) else {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                strengths[str(name)] = value
        return cls(bool(data.get("enabled", True)), strengths)


def key_part(text: str) -> str:
    """One part of a key, unambiguous (see the module's note): escaped, or '#' and a digest when long."""
    text = str(text)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return "#" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return text.replace("%", "%25").replace("/", "%2F").replace("#", "%23")


def chat_key(mode: str | None, character: str | None, unique_id: str | None) -> str | None:
    """The key of one saved chat, as the webui files it: instruct chats have no character folder."""
    if not unique_id:
        return None
    chat = key_part(unique_id)
    if str(unique_id).startswith(INCOGNITO) and not chat.startswith(INCOGNITO):  # a digest: still kept in memory only
        chat = INCOGNITO + chat
    if mode == "instruct":
        return f"instruct/{chat}"
    return f"chat/{key_part(character or '')}/{chat}"


def session_key(session: str | None) -> str | None:
    """The key of a browser session's choice (--multi-user: chats have no id); kept in memory only."""
    return f"session:{key_part(session)}" if session else None


def state_session(state: dict) -> str | None:
    """The key of the browser session the request of ``state`` came from (--multi-user), else None."""
    return session_key(state.get(STATE_SESSION))


def migrated_key(old: str) -> str | None:
    """The key of a format-1 chats.json entry now: its character is the webui's file stem, which has no
    '/', so the id is everything after the first '/' (None: not a key we wrote)."""
    kind, _, rest = old.partition("/")
    if kind == "instruct" and rest:
        return chat_key("instruct", None, rest)
    character, _, unique_id = rest.partition("/")
    return chat_key("chat", character, unique_id) if kind == "chat" and unique_id else None


def memory_only(key: str) -> bool:
    return key.startswith("session:") or key.rsplit("/", 1)[-1].startswith(INCOGNITO)


def is_chat_request(state: dict) -> bool:
    """A chat request: flagged so by the adapter's state_modifier, or not flagged at all, which only
    Impersonate is (the chat's own request, generated without state_modifier; every other path runs it)."""
    return bool(state.get(STATE_IS_CHAT, True))


def state_key(state: dict) -> str | None:
    """The choice key of one request: its browser session in multi-user mode, else its chat."""
    if not is_chat_request(state):
        return None
    session = state_session(state)
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
        self._memory: OrderedDict[str, ChatChoice] = OrderedDict()  # least recently used first
        self._dropped: dict[int, None] = {}  # digests of keys whose choice was dropped, oldest first
        self._dropped_overflowed = False  # some dropped key is no longer known as such

    def get(self, key: str | None) -> ChatChoice:
        if not key:
            return ChatChoice(self.default_enabled)
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                found = self._memory[key]
                return ChatChoice(found.enabled, dict(found.strengths))
            if memory_only(key):
                return ChatChoice(False) if self.dropped(key) else ChatChoice(self.default_enabled)
            try:
                entry = self._saved().get(key)
            except ValueError as error:  # a reply is never blocked by the file: it is said, and the default used
                self.files.problems.report(str(error))
                entry = None
            return ChatChoice.from_json(entry) if entry is not None else ChatChoice(self.default_enabled)

    def dropped(self, key: str | None) -> bool:
        """True when this key's choice was kept in memory and had to be dropped (it then reads as off)."""
        with self._lock:
            if not key or not memory_only(key) or key in self._memory:
                return False
            return self._dropped_overflowed or _digest(key) in self._dropped

    def set(self, key: str | None, choice: ChatChoice) -> None:
        """Remember a chat's choice: on disk for a saved chat, in memory for a session or incognito chat."""
        if not key:
            raise ValueError("this chat has no id; nothing to remember the choice by")
        choice = ChatChoice.from_json(choice.to_json())
        with self._lock:
            if memory_only(key):
                self._remember(key, choice)
                return
            data = self._saved()
            if choice.enabled == self.default_enabled and not choice.strengths:
                data.pop(key, None)
            else:
                if key not in data and len(data) >= MAX_CHATS:
                    raise ValueError(f"{self.files.folder / self.FILE} already keeps the choices of {MAX_CHATS} chats, the most it "
                                     "keeps: this chat's is not remembered; set other chats back to the defaults to make room")
                data[key] = choice.to_json()
            self._write(data)

    def _remember(self, key: str, choice: ChatChoice) -> None:
        self._dropped.pop(_digest(key), None)
        self._memory[key] = choice
        self._memory.move_to_end(key)
        while len(self._memory) > MAX_SESSIONS:
            old, _ = self._memory.popitem(last=False)
            self._dropped[_digest(old)] = None
            if len(self._dropped) > MAX_DROPPED:
                del self._dropped[next(iter(self._dropped))]
                self._dropped_overflowed = True

    def _saved(self) -> dict:
        """The saved chats' choices by key; a chats.json of format 1 is read as format 2 and written so at the next save
        (reading never writes: a damaged old file stays as it was)."""
        data = self.files.read(self.FILE, {})
        if not isinstance(data, dict):
            return {}
        if "format" not in data:  # format 1: the mapping itself, keys not escaped
            migrated = {}
            for old, entry in data.items():
                new = migrated_key(old) if isinstance(old, str) else None
                if new is not None:
                    migrated[new] = entry
            return migrated
        if data.get("format") != CHATS_FORMAT or not isinstance(data.get("chats"), dict):
            raise ValueError(f"{self.files.folder / self.FILE} is not a format this version reads (format {data.get('format')!r}); "
                             "left unchanged, chats use the defaults")
        return dict(data["chats"])

    def _write(self, chats: dict) -> None:
        self.files.write(self.FILE, {"format": CHATS_FORMAT, "chats": chats})

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


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


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
