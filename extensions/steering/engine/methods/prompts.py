"""The prompt-pair family: ActAdd (one aligned pair, a row per position), mean difference and PCA (one direction).

Their options are the recipe's prompts themselves (``positive``, ``negative``, ``reading``, ``expand``);
the algorithms are in engine/build.py and engine/expansion.py.
"""
from __future__ import annotations

from ..build import build_actadd, build_from_pairs
from ..context import ModelContext
from ..expansion import build_expanded, expansion_for
from ..progress import Progress
from ..validation import AUTO, PresetError
from ..vector import SteeringVector
from .base import EXPAND_ONE_PAIR, Method, RecipeParts

PROMPT_LAYERS: list[int | str] = ["20%", "27%"]  # shares of depth: layers 6 and 8 of SmolLM2's 30 (actadd's default)
# One short pair is expanded by default: on the tuning set at dose 1 (benchmarks/results/tune_expansion.json,
# "other kinds at dose 1, layers auto") it moved sentiment 0.20 the wanted way on average against 0.08
# read as written; topics moved with neither (see "topics by dose, layers auto").
EXPAND_SHORT_PAIRS = True


class PromptMethod(Method):
    takes_prompts = True

    def __init__(self, name: str, summary: str, strength: float, mode: str, layers: tuple[int | str, ...],
                 calibrated: bool = False, per_position: bool = False):
        self.name, self.summary, self.strength, self.mode, self.layers = name, summary, strength, mode, layers
        self.calibrated, self.per_position = calibrated, per_position

    def check(self, recipe: RecipeParts) -> None:
        if not recipe.positive or not recipe.negative:
            raise PresetError("a recipe needs at least one positive and one negative prompt")
        if self.per_position:
            if len(recipe.positive) != 1 or len(recipe.negative) != 1:
                raise PresetError("method actadd takes one positive and one negative prompt; use mean or pca for many")
            if recipe.mode != "actadd":
                raise PresetError(f"method actadd makes per-position rows: use mode actadd (mode {recipe.mode} adds one direction)")
        super().check(recipe)
        if recipe.expand is not None and (len(recipe.positive) != 1 or len(recipe.negative) != 1):
            raise PresetError(EXPAND_ONE_PAIR)
        _paired(recipe.positive, recipe.negative)

    def default_expand(self, positive: list[str], negative: list[str]) -> str | None:
        """The expansion a NEW recipe gets (None: its prompts are read as written): one pair of labels or of
        one-line sentences, built by mean or pca. A recipe file keeps what it says, so older presets are unchanged."""
        return expansion_for(positive, negative) if EXPAND_SHORT_PAIRS and self.expandable else None

    def build(self, recipe: RecipeParts, ctx: ModelContext, layers: list[int], progress: Progress | None) -> SteeringVector:
        if recipe.expand:
            return build_expanded(ctx, recipe.positive[0], recipe.negative[0], layers, self.name, recipe.expand, progress)
        positives, negatives = _paired(recipe.positive, recipe.negative)
        if self.per_position:
            return build_actadd(ctx, positives[0], negatives[0], layers)
        return build_from_pairs(ctx, list(zip(positives, negatives)), layers, self.name, recipe.reading, progress=progress)


def _paired(positives: list[str], negatives: list[str]) -> tuple[list[str], list[str]]:
    """positives[i] pairs with negatives[i]; one prompt on a side pairs with every prompt on the other."""
    if len(positives) == len(negatives):
        return positives, negatives
    if len(positives) == 1:
        return positives * len(negatives), negatives
    if len(negatives) == 1:
        return positives, negatives * len(positives)
    raise PresetError(f"{len(positives)} positive and {len(negatives)} negative prompts: give equal numbers, or one on a side")


ACTADD = PromptMethod("actadd", "one aligned prompt pair, a row per prompt position (ActAdd)", 4.0, "actadd", tuple(PROMPT_LAYERS),
                      per_position=True)
MEAN = PromptMethod("mean", "mean difference of one or many pairs, one direction", 0.35, "all", (AUTO,), calibrated=True)
PCA = PromptMethod("pca", "first principal component of many pair differences, one direction", 0.35, "all", (AUTO,), calibrated=True)
