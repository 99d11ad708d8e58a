"""Distill: a system prompt fitted into a vector. Its options are DistillOptions (engine/distill/options.py)."""
from __future__ import annotations

from typing import Any

from ..context import ModelContext
from ..distill.options import DEFAULT_LAYERS, DIRECT_STRENGTH, DistillOptions
from ..distill.training import build_distilled
from ..progress import Progress
from ..vector import SteeringVector
from .base import OptionsMethod, RecipeParts


class DistillMethod(OptionsMethod):
    name = "distill"
    summary = "a system prompt fitted into a vector (distill)"
    options_key = "distill"
    options_type = DistillOptions

    def default_strength(self, options: DistillOptions) -> float:
        """1, the vector as fitted; a ``direct`` one is a mean direction, applied at a gentle share of the residual norm."""
        return DIRECT_STRENGTH if options.via == "direct" else self.strength

    def default_layers(self, options: DistillOptions) -> list[int | str]:
        return list(DEFAULT_LAYERS[options.via])

    def build(self, recipe: RecipeParts, ctx: ModelContext, layers: list[int], progress: Progress | None) -> SteeringVector:
        return build_distilled(recipe.options, ctx, layers, progress)

    def stands_in(self, options: DistillOptions) -> dict[str, Any]:
        return {"system": options.system, "instead": options.instead}

    def note(self, options: DistillOptions) -> str | None:
        return options.note()


DISTILL = DistillMethod()
