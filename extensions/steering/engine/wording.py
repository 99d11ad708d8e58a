"""A built vector in plain words: the first line the tab and the command line show (the method's
details follow it, in the tab under "Advanced"), and numbers as a person reads them."""
from __future__ import annotations

from typing import Sequence

from .distill.options import DistillOptions
from .methods.imported import ImportedVector
from .recipe import Recipe

MEASURED = "1 = measured for this model"  # what a calibrated strength (a dose) is, in plain words


def strength_name(calibrated: bool) -> str:
    """The name of a strength axis or column: a calibrated one counts multiples of the measured strength."""
    return f"strength ({MEASURED})" if calibrated else "strength"


def shown(value: float) -> str:
    """A number as the page shows it: the noise of float sums rounded away (-2e-15 is 0, 0.30000000000000004 is 0.3)."""
    return f"{round(float(value), 6) + 0.0:g}"


def _quoted(lines: Sequence[str]) -> str:
    first = lines[0] if len(lines[0]) <= 40 else lines[0][:39] + "…"
    return f"“{first}”" + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")


def _what(recipe: Recipe) -> str:
    if recipe.positive and recipe.negative:
        return f"toward {_quoted(recipe.positive)}, away from {_quoted(recipe.negative)}"
    if isinstance(recipe.options, DistillOptions):
        return f"as if told {_quoted([recipe.options.system])} (distilled from that system prompt)"
    if isinstance(recipe.options, ImportedVector):
        return "a vector imported from a control-vector file"  # no prompt pair to name
    return f"a {recipe.method} vector"


def _strength(recipe: Recipe) -> str:
    return f"strength {shown(recipe.strength)}" + (f" ({MEASURED})" if recipe.calibrated else "")


def plain_summary(recipe: Recipe, layers: Sequence[int], measured: bool) -> str:
    """'toward “Love”, away from “Hate”: strength 1 (1 = measured for this model), layer 24 (picked by
    measuring this model)'. ``measured``: the layer was chosen by measurement, not by the user."""
    where = ", ".join(map(str, layers[:4])) + (" …" if len(layers) > 4 else "")
    layer = f"layer{'s' if len(layers) > 1 else ''} {where}" + (" (picked by measuring this model)" if measured else "")
    return f"{_what(recipe)}: {_strength(recipe)}, {layer}"


def plain_recipe(recipe: Recipe) -> str:
    """A preset in plain words before it is built for a model (an auto layer is measured then)."""
    if recipe.auto_layers:
        return f"{_what(recipe)}: {_strength(recipe)}, the layer picked by measuring each model"
    return plain_summary(recipe, list(recipe.layers or []), measured=False)


def first_stage(recipe: Recipe) -> str:
    """What building ``recipe`` does first, for a progress line."""
    return f"distilling {_quoted([recipe.options.system])}" if isinstance(recipe.options, DistillOptions) else "reading prompt pairs"
