"""Preset items: (name, strength) pairs, as characters, settings and the tab give them."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from ..engine.validation import PresetError, check_name, split_spec
from ..engine.validation import strength as checked_strength
from ..engine.wording import shown

Items = list[tuple[str, float]]
MAX_ITEMS = 64  # presets steering one reply: far more than anyone combines; bounds what a file makes each reply walk


def _strength(name: str, value: Any, source: str) -> float:
    try:
        return checked_strength(value, f"{source}: the strength of {name!r}")
    except ValueError as error:
        raise PresetError(str(error)) from None


def parse_items(value: Any, default_strength: Callable[[str], float] | None = None, source: str = "steering") -> Items:
    """Preset items from a ``steering:`` key, a settings value or an API request.

    Accepted: ``{name: strength, ...}`` (a null strength means the preset's own), ``[name, ...]``,
    ``[[name, strength], ...]``, ``[{name: ..., strength: ...}, ...]``, or a string of the command
    line's ``NAME[:STRENGTH]`` specs separated by commas (``"love:0.5, concise"``).
    """
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = [split_spec(spec, f"{source}: the strength after ':' in {spec.strip()!r}") for spec in value.split(",")]
        except ValueError as error:
            raise PresetError(str(error)) from None
    if isinstance(value, dict):
        value = list(value.items())
    if not isinstance(value, list):
        raise PresetError(f"{source}: expected a mapping of preset names to strengths or a list, got {type(value).__name__}")
    _check_count(value, source)
    items: dict[str, float] = {}  # a repeated name: the last one wins and moves to the end
    name: Any  # whatever the file holds, until check_name has seen it
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
        items.pop(name, None)
        items[name] = _strength(name, strength, source)
    return list(items.items())


def clean_items(items: Iterable, source: str = "steering") -> Items:
    """Checked (name, strength) pairs, the last of a repeated name winning."""
    items = list(items)
    _check_count(items, source)
    out: dict[str, float] = {}
    for name, strength in items:
        check_name(name)
        out.pop(name, None)
        out[name] = _strength(name, strength, source)
    return list(out.items())


def _check_count(items: list, source: str) -> None:
    if len(items) > MAX_ITEMS:
        raise PresetError(f"{source}: {len(items)} presets, more than the {MAX_ITEMS} one reply may combine")


def describe(items: Items) -> str:
    return ", ".join(f"{name} ×{shown(strength)}" for name, strength in items) or "none"
