"""A mix of presets: a formula such as ``Love - Hate + 0.5 × dogs`` read as (preset, strength) items, each
weight times the preset's saved strength."""
from __future__ import annotations

import re

from ..engine.presets import PresetStore
from ..engine.validation import check_name, finite
from ..engine.wording import shown

Items = list[tuple[str, float]]
_OPERATOR = re.compile(r"\s+([+\-−])\s*")
_TERM = re.compile(
    r"^(?:(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|[+-]?nan|[+-]?inf(?:inity)?)\s*[*×]\s*)?"
    r"(?P<name>\"[^\"]*\"|'[^']*'|.+?)\s*$",
    re.IGNORECASE,
)


def parse_mix(formula: str | None) -> list[tuple[str, float]]:
    """``Love - Hate + 0.5 × dogs`` → [("Love", 1), ("Hate", -1), ("dogs", 0.5)] (weights, not strengths).

    Put spaces around + and − (names may contain '-'); quote names that start with a number."""
    text = (formula or "").strip()
    if not text:
        return []
    sign = 1.0
    if text[0] in "+-−":
        sign, text = (-1.0 if text[0] != "+" else 1.0), text[1:].strip()
    pieces = _OPERATOR.split(text)
    terms = [(sign, pieces[0])]
    for operator, term in zip(pieces[1::2], pieces[2::2]):
        terms.append((1.0 if operator == "+" else -1.0, term))
    return [_parse_term(term, sign) for sign, term in terms]


def _parse_term(term: str, sign: float) -> tuple[str, float]:
    match = _TERM.match(term.strip())
    if not term.strip() or not match:
        raise ValueError(f"mix: cannot read the term {term!r}; write e.g. Love - Hate + 0.5 × dogs")
    weight = finite(match["weight"], f"mix: the weight of {match['name']!r}") if match["weight"] else 1.0
    name = match["name"].strip("\"'")
    return check_name(name), sign * weight


def mix_items(store: PresetStore, formula: str | None) -> Items:
    """The mix as (preset, strength) items: each weight times the preset's saved strength (a preset
    named twice gets the sum)."""
    strengths: dict[str, float] = {}
    for name, weight in parse_mix(formula):
        strengths[name] = strengths.get(name, 0.0) + weight * store.recipe(name).strength
    return list(strengths.items())


def describe_items(items: Items) -> str:
    if not items:
        return "nothing"
    return ", ".join(f"{name} × {shown(strength)}" for name, strength in items)


