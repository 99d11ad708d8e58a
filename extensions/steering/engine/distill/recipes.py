"""Recipes for distilled vectors: what the command line and the distill panel save as presets.

Not imported by the package's ``__init__``: engine.recipe reaches engine.distill (through the distill
method), so this module, which sits above engine.recipe, is imported by name (``engine.distill.recipes``).
"""
from __future__ import annotations

from typing import Sequence

from ..recipe import Recipe, StandIn
from .options import DistillOptions


def distill_recipe(name: str, system: str, layers: Sequence[int | str] | None = None, via: str = DistillOptions.via,
                   description: str = "", strength: float | None = None, metric: str | None = None,
                   instead: str | None = None, **options) -> Recipe:
    """A ``method: distill`` recipe; ``options`` are DistillOptions fields (steps, lr, messages, ...), None for the default.

    The layers and the strength default to the method's (``DEFAULT_LAYERS``; 1, the vector as fitted
    or measured, or for ``via="direct"`` ``DIRECT_STRENGTH`` of the residual norm). ``metric``, the
    behaviour score to evaluate it by, is not part of the vector: changing it keeps the cached tensors.
    """
    given = {key: value for key, value in options.items() if value is not None}
    distill = DistillOptions(system=system, via=via, instead=instead or None, **given)
    return Recipe(name=name, description=description, method="distill", layers=list(layers) if layers else None,
                  strength=strength, mode="all", options=distill, stands_in_for=StandIn(metric=metric) if metric else None)
