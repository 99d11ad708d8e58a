"""Saved presets: their names, one shown (recipe, notes, what is cached per model), all listed, renamed, deleted."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine.presets import PresetStore
from ..engine.recipe import Recipe, read_recipe
from ..engine.untrusted import one_line
from ..engine.validation import PresetError, check_name

__all__ = ["Listed", "Shown", "delete", "listing", "names", "rename", "show"]


def names(store: PresetStore) -> list[str]:
    return [info.name for info in store.list()]


@dataclass(frozen=True)
class Shown:
    """A preset as the user reads it: its file, its recipe as YAML, a note on how it was made, its cached builds."""

    name: str
    path: Path
    shipped: bool
    recipe: Recipe
    note: str | None  # e.g. a distilled fit cut short by a time limit
    cached: list[str]  # one line per model it was built for

    @property
    def yaml(self) -> str:
        return self.recipe.to_yaml()


def show(store: PresetStore, name: str) -> Shown:
    """A damaged file raises PresetError."""
    name = check_name(name)
    path, recipe = store.path(name), store.recipe(name)
    cached = []
    for fingerprint, meta in store.cache_entries(recipe):
        line = f"cached for model {meta.get('model', '?')} ({fingerprint})"
        if "calibration_scale" in meta:
            line += (f": calibrated scale {meta['calibration_scale']}, KL budget {meta['calibration_budget']} nats/token, "
                     f"KL reached {meta['calibration_kl']}, layers {meta['layers_chosen']}, {meta['calibration_seconds']} s")
        if "layer_scores" in meta:
            line += f"; layer scores {meta['layer_scores']}"
        cached.append(one_line(line, limit=10_000))
    note = recipe.note()
    return Shown(name, path, store.is_shipped(name), recipe, note or None, cached)


@dataclass(frozen=True)
class Listed:
    name: str
    shipped: bool
    summary: str  # method, layers, strength, mode; or why the file is damaged
    description: str  # one line of a stranger's text, never raw


def listing(store: PresetStore) -> list[Listed]:
    """Every preset, a damaged one said as such (listing never fails on one file)."""
    found = []
    for info in store.list():
        try:
            recipe = read_recipe(info.path)
            strength = f"auto × {recipe.strength:g}" if recipe.calibrated else f"{recipe.strength:g}"
            summary = f"{recipe.method}, layers {recipe.layers}, strength {strength}, mode {recipe.mode}"
            description = one_line(recipe.description) if recipe.description else ""
        except PresetError as error:
            summary, description = f"damaged: {error}", ""
        found.append(Listed(info.name, info.shipped, summary, description))
    return found


def rename(store: PresetStore, old: str, new: str) -> Path:
    return store.rename(check_name(old), check_name(new))


def delete(store: PresetStore, name: str) -> None:
    store.delete(check_name(name))
