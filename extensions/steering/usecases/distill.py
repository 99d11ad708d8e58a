"""Distil a system prompt (a character's context) into a preset: the recipe, a name free to save under,
the fit, the preset saved (recording a fit cut short, so it rebuilds to the same vector)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..engine import distill as d
from ..engine.distill.recipes import distill_recipe
from ..engine.progress import Fitting
from ..engine.recipe import Recipe
from ..engine.vector import SteeringVector
from .build import vector_for
from .workspace import Workspace

__all__ = ["Distilled", "DistillRequest", "distill"]


@dataclass(frozen=True)
class DistillRequest:
    """What to distil and how; None takes the method's default (engine/distill/options.py)."""

    name: str
    system: str
    via: str = d.DistillOptions.via
    layers: Sequence[int | str] | None = None
    steps: int | None = None
    lr: float | None = None
    messages: int | None = None
    plateau: float | None = None
    instead: str | None = None  # the system message the steered chat sends in place of ``system``
    metric: str | None = None  # the behaviour score to evaluate it by
    description: str = ""

    def recipe(self) -> Recipe:
        return distill_recipe(self.name, self.system, self.layers, via=self.via, description=self.description, steps=self.steps,
                                lr=self.lr, messages=self.messages, plateau=self.plateau, metric=self.metric, instead=self.instead)


@dataclass(frozen=True)
class Distilled:
    recipe: Recipe  # as saved: a fit cut short by a time limit records the steps it made
    vector: SteeringVector
    path: Path
    fit: str  # how the fit ended: its steps and last loss, or why it stopped early ("" for a fit without steps)


def distill(ws: Workspace, request: DistillRequest | Recipe, fitting: Fitting, overwrite: bool = False) -> Distilled:
    """Fit the vector (``fitting`` shows its progress and holds the time limit) and save it as a preset."""
    recipe = request.recipe() if isinstance(request, DistillRequest) else request
    ws.check_new_name(recipe.name, overwrite)
    ctx = ws.model()
    asked = recipe.options.steps
    with ws.lock:
        vector = vector_for(recipe, ctx, fitting).vector
    recipe.options = d.fitted_options(recipe.options, fitting)
    path = ws.store.save(recipe, vector, ctx, overwrite=overwrite)
    fit = d.stop_note(fitting, asked) if fitting.steps_done is not None else ""
    return Distilled(recipe, vector, path, fit)
