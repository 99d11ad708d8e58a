"""Presets attached to chat characters.

The last edit wins: what the tab attached (kept in ``characters.yaml`` in the data folder, which saving
a character from the webui cannot erase), unless the character file's ``steering:`` key was written or
changed by hand since; such a key is then adopted into characters.yaml, so it survives the webui
rewriting the file without it.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from ..characters import MAX_NAME_BYTES, character_file, read_character_file
from ..engine.validation import PresetError
from .files import DataFiles
from .items import Items, clean_items, parse_items
from .problems import Problems


class Attachments:
    FILE = "characters.yaml"

    def __init__(self, files: DataFiles, characters_dir: Path | None, default_strength: Callable[[str], float], problems: Problems):
        self.files = files
        self.characters_dir = Path(characters_dir) if characters_dir else None
        self.default_strength = default_strength
        self.problems = problems
        self._lock = threading.RLock()
        self._file_cache: dict[Path, tuple[int, Any]] = {}

    def character_file(self, character: str) -> Path | None:
        """The file the webui loads for ``character``, if any."""
        return character_file(self.characters_dir, character)

    def _file_key(self, character: str) -> Items | None:
        """Items of the ``steering:`` key of the character file, or None when it has none."""
        path = self.character_file(character)
        if path is None:
            return None
        try:
            mtime = path.stat().st_mtime_ns
            cached = self._file_cache.get(path)
            if cached and cached[0] == mtime:
                data = cached[1]
            else:
                try:
                    data = read_character_file(path)
                except ValueError as error:  # kept too: a refused file is not read again at every reply
                    data = error
                self._file_cache[path] = (mtime, data)
        except OSError as error:
            self.problems.report(f"{path}: unreadable ({error})")
            return None
        if isinstance(data, ValueError):
            self.problems.report(str(data))
            return None
        if not isinstance(data, dict) or data.get("steering") is None:
            return None
        try:
            return parse_items(data["steering"], self.default_strength, source=f"{path.name}: steering")
        except PresetError as error:
            self.problems.report(str(error))
            return None

    def _entries(self) -> dict:
        data = self.files.read(self.FILE, {})
        return data if isinstance(data, dict) else {}

    def of(self, character: str | None) -> Items:
        """The presets attached to ``character``."""
        if not character:
            return []
        with self._lock:
            data = self._entries()
            entry = data.get(character) if isinstance(data.get(character), dict) else None
            key = self._file_key(character)
            if key is not None:
                snapshot = [[n, s] for n, s in key]
                if entry is None or entry.get("from_file") != snapshot:
                    data[character] = {"presets": snapshot, "from_file": snapshot}
                    try:
                        self.files.write(self.FILE, data)
                    except OSError as error:
                        self.problems.report(f"cannot record the steering of {character!r}: {error}")
                    return key
            if entry is None:
                return []
            try:
                return parse_items(entry.get("presets") or [], source=f"{self.FILE}: {character}")
            except PresetError as error:
                self.problems.report(str(error))
                return []

    def names(self) -> list[str]:
        """The characters with an entry in characters.yaml (presets attached now or before)."""
        with self._lock:
            return [name for name in self._entries() if isinstance(name, str)]

    def attach(self, character: str, items: Iterable) -> None:
        """Attach presets (with strengths) to ``character``; an empty list detaches all."""
        if not isinstance(character, str) or not character.strip():
            raise PresetError("choose a character first")
        if len(character.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise PresetError(f"a character name has at most {MAX_NAME_BYTES} bytes (it names a file); this one has "
                              f"{len(character.encode('utf-8', 'surrogatepass'))}")
        items = clean_items(items)
        with self._lock:
            data = self._entries()
            key = self._file_key(character)
            data[character] = {"presets": [[n, s] for n, s in items]}
            if key is not None:  # the file's key as it is now is not a newer hand edit
                data[character]["from_file"] = [[n, s] for n, s in key]
            self.files.write(self.FILE, data)
