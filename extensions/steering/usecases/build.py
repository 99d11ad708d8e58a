"""Build: a recipe from what the user asked for, "will this pair work?", the vector built for the model,
saved as a preset.

The strength a user gives is read here and nowhere else (``Strength``): a number is fixed, ``auto`` is
calibrated (engine/calibration.py) at a dose, nothing is the method's default. ``vector_for`` is the one
way a use case turns a recipe into a vector (engine/methods ``build_vector``).
"""
from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..engine.apply import Steer
from ..engine.calibration import Calibration
from ..engine.context import ModelContext
from ..engine.feasibility import Feasibility, check_pair
from ..engine.languages import DEFAULT_NEGATIVE, language_named, language_recipe
from ..engine.methods import DEFAULT as DEFAULT_METHOD
from ..engine.methods import METHODS, default_expand, measuring
from ..engine.methods import Built as Made
from ..engine.methods import build_vector as make
from ..engine.progress import Progress
from ..engine.recipe import Recipe
from ..engine.validation import AUTO
from ..engine.validation import dose as checked_dose
from ..engine.validation import strength as checked_strength
from ..engine.vector import SteeringVector
from ..engine.wording import first_stage
from .describe import details_line, plain_line
from .workspace import Workspace

__all__ = ["BuildRequest", "DEFAULT_METHOD", "Draft", "Strength", "build", "check", "first_stage", "loaded", "measuring", "negative_side", "save",
           "vector_for", "vector_now"]


@dataclass(frozen=True)
class Strength:
    """The strength asked for: a number (fixed), ``"auto"`` (calibrated) or None (the method's default).
    ``dose`` is relative to a calibrated strength (1 = calibrated); given alone it asks for calibration."""

    value: float | str | None = None
    dose: float | None = None

    @classmethod
    def from_form(cls, text, dose, method: str) -> Strength:
        """The tab's fields: a strength text (empty, ``auto`` or a number) and a Dose that is always filled,
        so it counts only where the strength is calibrated (auto, or empty for a method calibrated by default)."""
        text = text.strip().lower() if isinstance(text, str) else text
        value = None if text in (None, "") else AUTO if text == AUTO else checked_strength(text)
        calibrated = value == AUTO or (value is None and getattr(METHODS.get(method), "calibrated", False))
        return cls(value, checked_dose(dose) if calibrated else None)

    def resolve(self) -> tuple[float | None, bool | None]:
        """(strength, calibrated) for a Recipe; (None, None) leaves both to the method."""
        if self.dose is not None and self.value not in (None, AUTO):
            raise ValueError("the dose is relative to a calibrated strength: use it with strength auto, not a number")
        if self.value == AUTO or self.dose is not None:
            return (1.0 if self.dose is None else checked_dose(self.dose)), True
        if self.value is None:
            return None, None
        return checked_strength(self.value), False


def negative_side(positive: Sequence[str], negative: Sequence[str]) -> list[str]:
    """The negative prompts; left out, ``DEFAULT_NEGATIVE`` (English) when the positive side is one language name."""
    if negative:
        return list(negative)
    if len(positive) == 1 and language_named(positive[0]):
        return [DEFAULT_NEGATIVE]
    raise ValueError("give at least one negative prompt (only a positive side that is one language name, such as Spanish, "
                     f"may go without: it is then built against {DEFAULT_NEGATIVE})")


@dataclass(frozen=True)
class BuildRequest:
    """A new preset from prompt pairs; what is left as None takes the method's default (method: ``DEFAULT_METHOD``).
    The negative side may be left empty when the positive side is one language name (``negative_side``)."""

    name: str
    positive: Sequence[str]
    negative: Sequence[str]
    method: str | None = None
    layers: Sequence[int | str] | None = None
    strength: Strength = field(default_factory=Strength)
    mode: str | None = None
    reading: str = "mean"
    expand: bool = True  # one short pair is read in many framings (engine/expansion.py)
    description: str = ""

    def recipe(self) -> Recipe:
        method = self.method or DEFAULT_METHOD
        strength, calibrated = self.strength.resolve()
        positive, negative = list(self.positive), negative_side(self.positive, self.negative)
        return language_recipe(Recipe(  # a language name alone is built from its distilled instruction (engine/languages.py)
            name=self.name, positive=positive, negative=negative, description=self.description, method=method,
            layers=None if self.layers is None else list(self.layers), strength=strength, calibrated=calibrated,
            mode=self.mode, reading=self.reading, expand=default_expand(method, positive, negative) if self.expand else None))


@dataclass(frozen=True)
class Draft:
    """A vector built (or loaded from a preset), with the recipe that made it."""

    recipe: Recipe
    vector: SteeringVector
    model: weakref.ref  # the model it was built for
    calibration: Calibration | None = None  # what calibration measured when it was built

    def built_for(self, ctx: ModelContext) -> bool:
        return self.model() is ctx.model

    def steer(self) -> Steer:
        return Steer(self.vector, self.recipe.strength, self.recipe.mode)

    def plain(self) -> str:
        """What a newcomer reads first: where it steers, how strongly, at which layer."""
        return plain_line(self)

    def summary(self) -> str:
        """The method's details (the tab shows them under Advanced)."""
        return details_line(self)


def vector_for(recipe: Recipe, ctx: ModelContext, progress: Progress | None = None) -> Made:
    """The vector ``recipe`` describes for the model of ``ctx`` (at its measured layer, times its calibrated scale)."""
    return make(recipe, ctx, progress=progress)


def build(ws: Workspace, recipe: Recipe | BuildRequest, progress: Progress | None = None) -> Draft:
    """The vector of ``recipe`` for the workspace's model (layers out of its range are refused before any work)."""
    recipe = recipe.recipe() if isinstance(recipe, BuildRequest) else recipe
    ctx = ws.model()
    if not recipe.auto_layers:
        ctx.layer_indices(recipe.layers)
    with ws.lock:
        made = vector_for(recipe, ctx, progress)
    return Draft(recipe, made.vector, weakref.ref(ctx.model), made.calibration)


def loaded(ws: Workspace, name: str) -> Draft:
    """A saved preset as built for the workspace's model."""
    recipe = ws.store.recipe(name)
    ctx = ws.model()
    return Draft(recipe, ws.vector(name), weakref.ref(ctx.model))


def vector_now(ws: Workspace, built: Draft) -> SteeringVector:
    """The vector for the model loaded now (rebuilt when the model changed since it was built)."""
    return built.vector if built.built_for(ws.model()) else build(ws, built.recipe).vector


def save(ws: Workspace, built: Draft, name: str | None = None, overwrite: bool = False) -> Path:
    """Save ``built`` (under ``name``, else its recipe's); its tensors too while its model is loaded."""
    recipe = dataclasses.replace(built.recipe, name=name) if name else built.recipe
    ctx = ws.model()
    fresh = built.built_for(ctx)
    return ws.store.save(recipe, built.vector if fresh else None, ctx if fresh else None, overwrite=overwrite,
                         calibration=built.calibration if fresh else None)


def check(ws: Workspace, positive: str, negative: str | None) -> Feasibility:
    """Whether a vector from this one pair is likely to move the model (engine/feasibility.py), before building.
    The negative side may be left out as for a build (``negative_side``)."""
    [negative] = negative_side([positive], [negative] if negative and negative.strip() else [])
    ctx = ws.model()
    with ws.lock:
        return check_pair(ctx, positive, negative)
