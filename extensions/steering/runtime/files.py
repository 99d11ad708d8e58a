"""The runtime's files in its data folder, read forgivingly and written atomically."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..engine.files import atomic_write
from ..engine.untrusted import DATA_FILE, FileRefused, load_text_file
from .problems import Problems


class DataFiles:
    """JSON and YAML files in ``folder``; an unreadable file, or one over a limit of DATA_FILE, is
    reported and read as ``default``, and kept beside the new one (``NAME.unreadable``) when it is next
    written: what a user had there is never lost."""

    def __init__(self, folder: Path, problems: Problems):
        self.folder = Path(folder)
        self.problems = problems
        self._refused: set[str] = set()  # names read as the default because the file was refused

    def read(self, name: str, default: Any) -> Any:
        path = self.folder / name
        if not path.is_file():
            return default
        try:
            data = load_text_file(path, DATA_FILE)
        except FileRefused as error:
            self.problems.report(f"unreadable, ignored: {error}")
            self._refused.add(name)
            return default
        return default if data is None else data

    def write(self, name: str, data: Any) -> None:
        if name.endswith((".yaml", ".yml")):
            text = yaml.safe_dump(data, sort_keys=True, allow_unicode=True)
        else:
            text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True)
        path = self.folder / name
        if name in self._refused and path.is_file():
            kept = path.with_name(name + ".unreadable")
            path.replace(kept)
            self.problems.report(f"{path} could not be read; it is kept as {kept} and a new one is written")
        self._refused.discard(name)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
