"""The ways a vector is made, one entry each: its builder and its defaults (strength, mode, layers).

A builder takes ``(recipe, ctx, layer indices, progress)`` and returns a SteeringVector;
``progress(done, total)`` may be None. ``make`` adds what a recipe asks of a built vector: the layer
chosen by measurement (``layers: auto``) and the calibrated multiplier (``strength: auto``), both from
engine/calibration.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .build import build
from .calibration import Calibration, calibrate, choose_layer
from .expansion import build_expanded, expansion_for
from .progress import Progress
from .validation import AUTO, PresetError

if TYPE_CHECKING:
    from .context import ModelContext
    from .recipe import Recipe
    from .vector import SteeringVector

Builder = Callable[["Recipe", "ModelContext", list[int], "Progress | None"], "SteeringVector"]
PROMPT_LAYERS: list[int | str] = ["20%", "27%"]  # shares of depth: layers 6 and 8 of SmolLM2's 30 (actadd's default)
DEFAULT = "mean"  # what the command line and the tab build when no method is named
# One short pair is expanded by default: on the tuning set at dose 1 (benchmarks/results/tune_expansion.json,
# "other kinds at dose 1, layers auto") it moved sentiment 0.20 the wanted way on average against 0.08
# read as written; topics moved with neither (see "topics by dose, layers auto").
EXPAND_SHORT_PAIRS = True


@dataclass(frozen=True)
class Method:
    name: str
    build: Builder
    strength: float  # ActAdd rows are raw differences (the paper's coefficient); mean/pca directions
    mode: str  # are scaled to the residual norm, so their strength is a share of it
    layers: tuple[int | str, ...]
    takes_prompts: bool  # built from positive/negative prompts (else from its own options)
    summary: str
    options: str | None = None  # the recipe field holding its own options (distill, imported)
    cached: bool = True  # built vectors are cached per model (an imported one is its own file)
    calibrated: bool = False  # a new recipe's strength is "auto" (then ``strength`` is the fixed one asked for by number)
    per_position: bool = False  # it makes a row per prompt position (mode actadd), not one direction
    strength_for: Callable[[Recipe], float | None] | None = None  # a default read from the recipe's own options
    layers_for: Callable[[Recipe], list[int | str] | None] | None = None

    @property
    def expandable(self) -> bool:
        """It reads prompts into one direction, so one short pair can be expanded (engine/expansion.py)."""
        return self.takes_prompts and not self.per_position

    def default_strength(self, recipe: Recipe) -> float:
        own = self.strength_for(recipe) if self.strength_for else None
        return self.strength if own is None else own

    def default_layers(self, recipe: Recipe) -> list[int | str]:
        """The layers of a recipe that names none (empty for an imported one, which must name its own)."""
        own = self.layers_for(recipe) if self.layers_for else None
        return list(self.layers) if own is None else own

    def check(self, recipe: Recipe) -> None:
        """Refuse a recipe this method cannot build or apply as written."""
        for other in ("distill", "imported"):
            if getattr(recipe, other) is not None and self.options != other:
                raise PresetError(f"{other} options belong to method {other}, not {self.name}")
        if self.takes_prompts:
            if not recipe.positive or not recipe.negative:
                raise PresetError("a recipe needs at least one positive and one negative prompt")
        elif AUTO in recipe.layers:
            raise PresetError(f"layers auto is for vectors built from prompts; method {self.name} names its layers")
        elif getattr(recipe, self.options) is None:
            raise PresetError(f"method {self.name} needs its options (a {self.options}: mapping)")
        if self.per_position:
            if len(recipe.positive) != 1 or len(recipe.negative) != 1:
                raise PresetError("method actadd takes one positive and one negative prompt; use mean or pca for many")
            if recipe.mode != "actadd":
                raise PresetError(f"method actadd makes per-position rows: use mode actadd (mode {recipe.mode} adds one direction)")
        elif recipe.mode == "actadd":
            raise PresetError(f"mode actadd needs per-position rows; method {self.name} makes one direction: use mode all or generated")


def _prompt_builder(recipe: Recipe, ctx: ModelContext, layers: list[int], progress: Progress | None) -> SteeringVector:
    if recipe.expand:
        return build_expanded(ctx, recipe.positive[0], recipe.negative[0], layers, recipe.method, recipe.expand, progress)
    return build(ctx, recipe.positive, recipe.negative, layers, recipe.method, recipe.reading, progress=progress)


def check_imported_fits(recipe: Recipe, hidden_size: int | None, num_layers: int, model: str) -> None:
    """Refuse an imported preset whose recipe already says it was made for another model shape (hidden size,
    layer count, layers beyond the model), before any tensor or model is loaded for it."""
    imported = recipe.imported
    if imported is None:
        return
    problem = None
    if hidden_size is not None and imported.hidden_size != hidden_size:
        problem = f"its hidden size is {imported.hidden_size}, the model's {hidden_size}"
    elif imported.layer_count and imported.layer_count != num_layers:
        problem = f"it was made for {imported.layer_count} layers, the model has {num_layers}"
    elif recipe.layers and max(recipe.layers) >= num_layers:
        problem = f"it steers layer {max(recipe.layers)}, the model has {num_layers} layers (0-{num_layers - 1})"
    if problem:
        _refuse_imported(recipe, model, problem)


def _refuse_imported(recipe: Recipe, model: str, problem: str) -> None:
    made = f"made for hidden size {recipe.imported.hidden_size}" + (f", {recipe.imported.layer_count} layers" if recipe.imported.layer_count else "")
    raise PresetError(f"{recipe.name} was imported for another model ({made}) and does not fit {model}: {problem}")


def _imported_builder(recipe: Recipe, ctx: ModelContext, layers: list[int], progress: Progress | None) -> SteeringVector:
    from .files import load_vector

    check_imported_fits(recipe, ctx.hidden_size, ctx.num_layers, ctx.name)
    path = recipe.imported_vector_path()
    if not path.is_file():
        raise PresetError(f"{recipe.name}: its vector file {path} is missing; import it again")
    vector, _ = load_vector(path)
    problem = ctx.fits(vector)  # the file itself may disagree with its recipe
    if problem:
        _refuse_imported(recipe, ctx.name, problem)
    return vector


def _distill_strength(recipe: Recipe) -> float | None:
    from .distill.options import DIRECT_STRENGTH

    return DIRECT_STRENGTH if recipe.distill is not None and recipe.distill.via == "direct" else None


def _distill_layers(recipe: Recipe) -> list[int | str] | None:
    from .distill.options import DEFAULT_LAYERS

    return list(DEFAULT_LAYERS[recipe.distill.via]) if recipe.distill is not None else None


def _distill_builder(recipe: Recipe, ctx: ModelContext, layers: list[int], progress: Progress | None) -> SteeringVector:
    from .distill.training import build_distilled

    return build_distilled(recipe.distill, ctx, layers, progress)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("actadd", _prompt_builder, 4.0, "actadd", tuple(PROMPT_LAYERS), True,
               "one aligned prompt pair, a row per prompt position (ActAdd)", per_position=True),
        Method("mean", _prompt_builder, 0.35, "all", (AUTO,), True,
               "mean difference of one or many pairs, one direction", calibrated=True),
        Method("pca", _prompt_builder, 0.35, "all", (AUTO,), True,
               "first principal component of many pair differences, one direction", calibrated=True),
        Method("distill", _distill_builder, 1.0, "all", (), False,
               "a system prompt fitted into a vector (distill)", "distill",
               strength_for=_distill_strength, layers_for=_distill_layers),
        Method("imported", _imported_builder, 1.0, "all", (), False,
               "a vector imported from a file (a GGUF control vector), for one model shape", "imported", cached=False),
    )
}
PROMPT_METHODS: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.takes_prompts)


def default_expand(method: str, positive: list[str], negative: list[str]) -> str | None:
    """The expansion a NEW recipe gets (None: its prompts are read as written): one pair of labels or of
    one-line sentences, built by mean or pca. A recipe file keeps what it says, so older presets are unchanged."""
    found = METHODS.get(method)
    if EXPAND_SHORT_PAIRS and found is not None and found.expandable:
        return expansion_for(positive, negative)
    return None


def required_fields(method: str) -> tuple[str, ...]:
    """Fields a recipe file must have: a truncated file never loads as the defaults."""
    found = METHODS.get(method)
    own = ("positive", "negative") if found is None or found.takes_prompts else (found.options,)
    return ("method", "layers", "strength", *own)


@dataclass(frozen=True)
class Made:
    """A vector as a recipe asks for it, and its calibration (None for a fixed layer and strength)."""

    vector: SteeringVector
    calibration: Calibration | None = None


def make(recipe: Recipe, ctx: ModelContext, progress: Progress | None = None, budget: float | None = None,
         vector: SteeringVector | None = None) -> Made:
    """The vector ``recipe`` describes for the model of ``ctx``: built (at the measured layer for
    ``layers: auto``), and multiplied by its calibrated scale for ``strength: auto``, so that the
    recipe's strength, the dose, applies to it as any strength does. ``budget``: the KL budget of the
    layer choice and calibration (default calibration.KL_BUDGET); ``vector``: one built already at the
    recipe's layers (a benchmark's candidate reading), to choose the layer of and calibrate."""
    if vector is None:
        vector = METHODS[recipe.method].build(recipe, ctx, recipe.layer_indices(ctx.num_layers), progress)
    if recipe.auto_layers:
        vector, found = choose_layer(ctx, vector, recipe.positive, recipe.negative, recipe.mode, budget)
    elif recipe.calibrated:
        found = calibrate(ctx, vector, recipe.mode, budget)
    else:
        return Made(vector)
    return Made(vector * found.scale if recipe.calibrated else vector, found)


def measuring(recipe: Recipe) -> str | None:
    """What ``make`` does after the prompts are read, for a progress line (None: nothing more)."""
    if recipe.auto_layers:
        return "choosing the layer by measurement" + (" and calibrating the strength" if recipe.calibrated else "")
    return "calibrating the strength" if recipe.calibrated else None


def build_recipe(recipe: Recipe, ctx: ModelContext, progress: Progress | None = None) -> SteeringVector:
    """The vector ``recipe`` describes, built (and calibrated, if it asks) for the model of ``ctx``."""
    return make(recipe, ctx, progress).vector
