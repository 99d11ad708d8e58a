"""The webui's character files (``user_data/characters/<name>.yaml|.yml|.json``): finding and reading them.

A character's ``context`` is the system prompt the webui sends; ``{{char}}`` and ``{{user}}`` in it
stand for the character's name and the user's (the webui's default user name is "You").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from .engine.untrusted import CHARACTER, load_text_file

SUFFIXES = (".yml", ".yaml", ".json")  # the order in which the webui looks for a character's file
MAX_NAME_BYTES = 255  # a character is a file <name>.yaml: no file system takes a longer name
DEFAULT_USER = "You"


class Character(NamedTuple):
    name: str
    context: str


def character_names(folder: Path | None) -> list[str]:
    """Stems of the character files in ``folder`` (what the webui's character menu lists)."""
    if not folder or not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith(".")})


def character_file(folder: Path | None, name: str | None) -> Path | None:
    """The file the webui loads for character ``name``, if any; never one outside ``folder``, and None
    for a name no file can have (too long, a NUL)."""
    if not folder or not name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        return None
    for suffix in SUFFIXES:
        path = folder / f"{name}{suffix}"
        if len(path.name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            return None
        try:
            if path.is_file():
                return path
        except OSError:  # e.g. a name the file system cannot encode: no such file
            return None
    return None


def read_character_file(path: Path) -> Any:
    """The parsed contents of a character file, every limit of CHARACTER checked; ValueError
    (engine.untrusted.FileRefused) when it cannot be read, is damaged or breaks a limit."""
    return load_text_file(path, CHARACTER)


def read_character(path: str | Path) -> Character:
    """The name and context of a character file, ``{{char}}`` and ``{{user}}`` filled in; ValueError
    when it has no context."""
    path = Path(path)
    data = read_character_file(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a character file (expected a mapping with a context)")
    name = str(data.get("name") or data.get("char_name") or path.stem)
    context = data.get("context") or data.get("char_persona") or ""
    if not isinstance(context, str) or not context.strip():
        raise ValueError(f"{path}: the character has no context to distil")
    for placeholder, value in (("{{char}}", name), ("<BOT>", name), ("{{user}}", DEFAULT_USER), ("<USER>", DEFAULT_USER)):
        context = context.replace(placeholder, value)
    return Character(name, context.strip())
