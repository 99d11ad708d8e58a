"""Recipes for distilled vectors: what the command line and the distill panel save as presets."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .options import DistillOptions

if TYPE_CHECKING:
    from ..recipe import Recipe


def distill_recipe(name: str, system: str, layers: Sequence[int | str] | None = None, via: str = DistillOptions.via,
                   description: str = "", strength: float | None = None, metric: str | None = None,
                   instead: str | None = None, **options) -> Recipe:
    """A ``method: distill`` recipe; ``options`` are DistillOptions fields (steps, lr, messages, ...), None for the default.

    The layers and the strength default to the method's (``DEFAULT_LAYERS``; 1, the vector as fitted
    or measured, or for ``via="direct"`` ``DIRECT_STRENGTH`` of the residual norm). ``metric``, the
    behaviour score to evaluate it by, is not part of the vector: changing it keeps the cached tensors.
    """
    # engine.recipe imports this package (for DistillOptions), so it is imported when a recipe is made
    from ..recipe import Recipe, StandIn

    given = {key: value for key, value in options.items() if value is not None}
    distill = DistillOptions(system=system, via=via, instead=instead or None, **given)
    return Recipe(name=name, description=description, method="distill", layers=list(layers) if layers else None,
                  strength=strength, mode="all", distill=distill, stands_in_for=StandIn(metric=metric) if metric else None)
