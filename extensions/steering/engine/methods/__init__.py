"""The ways a vector is made, one module each, registered here by name; and ``build_vector``, THE way to
get the vector a recipe describes for one model (``PresetStore.vector`` is the same, cached per model).

- ``prompts``: actadd, mean and pca, built from positive/negative prompts
- ``distill``: a system prompt fitted into a vector (options: DistillOptions)
- ``imported``: a vector imported from a file (options: ImportedVector)

A method (``base.Method``) owns its defaults (strength, mode, layers), the checks of a recipe that
names it, its builder and its options (``Recipe.options``: how a file stores them, what of them is
part of the tensor key). Registration is explicit: ``register`` below, nothing happens on import of a
method's module.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..calibration import Calibration, calibrate, choose_layer
from ..context import ModelContext
from ..progress import Progress
from ..validation import PresetError
from ..vector import SteeringVector
from .base import Method, OptionsMethod, RecipeParts
from .distill import DISTILL
from .imported import IMPORTED
from .prompts import ACTADD, MEAN, PCA, PROMPT_LAYERS, PromptMethod

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make ``method`` known by its name to recipes, the command line and the tab."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is registered already")
    METHODS[method.name] = method
    return method


register(ACTADD)
register(MEAN)
register(PCA)
register(DISTILL)
register(IMPORTED)

DEFAULT = MEAN.name  # what Recipe(...), the command line and the tab build when no method is named
PROMPT_METHODS: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.takes_prompts)


def method_named(name: str) -> Method:
    """The method registered as ``name``; an unknown name is refused with the known ones."""
    found = METHODS.get(name) if isinstance(name, str) else None
    if found is None:
        raise PresetError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return found


def default_expand(name: str, positive: list[str], negative: list[str]) -> str | None:
    """The expansion a NEW recipe of method ``name`` gets (None: its prompts are read as written)."""
    found = METHODS.get(name)
    return found.default_expand(positive, negative) if isinstance(found, PromptMethod) else None


@dataclass(frozen=True)
class Built:
    """A vector as a recipe asks for it, and its calibration (None for a fixed layer and strength)."""

    vector: SteeringVector
    calibration: Calibration | None = None


def build_vector(recipe: RecipeParts, ctx: ModelContext, progress: Progress | None = None, budget: float | None = None,
                 vector: SteeringVector | None = None) -> Built:
    """The vector ``recipe`` describes for the model of ``ctx``: built by its method (at the measured layer
    for ``layers: auto``), and multiplied by its calibrated scale for ``strength: auto``, so that the
    recipe's strength, the dose, applies to it as any strength does. ``PresetStore.vector`` is this, cached.
    ``budget``: the KL budget of the layer choice and calibration (default calibration.KL_BUDGET);
    ``vector``: one built already at the recipe's layers (a benchmark's candidate reading), to choose the
    layer of and calibrate."""
    if vector is None:
        vector = method_named(recipe.method).build(recipe, ctx, recipe.layer_indices(ctx.num_layers), progress)
    if recipe.auto_layers:
        vector, found = choose_layer(ctx, vector, recipe.positive, recipe.negative, recipe.mode, budget)
    elif recipe.calibrated:
        found = calibrate(ctx, vector, recipe.mode, budget)
    else:
        return Built(vector)
    return Built(vector * found.scale if recipe.calibrated else vector, found)


def measuring(recipe: RecipeParts) -> str | None:
    """What ``build_vector`` does after the prompts are read, for a progress line (None: nothing more)."""
    if recipe.auto_layers:
        return "choosing the layer by measurement" + (" and calibrating the strength" if recipe.calibrated else "")
    return "calibrating the strength" if recipe.calibrated else None


__all__ = [
    "DEFAULT", "METHODS", "PROMPT_LAYERS", "PROMPT_METHODS", "Built", "Method", "OptionsMethod", "RecipeParts", "build_vector",
    "default_expand", "measuring", "method_named", "register",
]
