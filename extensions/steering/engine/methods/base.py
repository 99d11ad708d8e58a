"""What every method is: its defaults, the checks of a recipe that names it, its builder and its own options.

Each method is a subclass in its own module (prompts.py, distill.py, imported.py), registered by name in
``methods/__init__.py``. A method reads a recipe through ``RecipeParts``, never through engine/recipe.py,
which sits above the methods (a recipe looks its method up; a method never looks a recipe up).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..context import ModelContext
from ..progress import Progress
from ..validation import AUTO, PresetError
from ..vector import SteeringVector

EXPAND_ONE_PAIR = "expand turns one short pair into many: give one positive and one negative prompt, method mean or pca"


class RecipeParts(Protocol):
    """What a method reads of a recipe (engine/recipe.py's Recipe), typed as its fields are declared: the
    recipe fills layers, mode and calibrated in when it is made."""

    @property
    def name(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def positive(self) -> list[str]: ...
    @property
    def negative(self) -> list[str]: ...
    @property
    def reading(self) -> str: ...
    @property
    def expand(self) -> str | None: ...
    @property
    def mode(self) -> str | None: ...
    @property
    def layers(self) -> list[int | str] | None: ...
    @property
    def calibrated(self) -> bool | None: ...
    @property
    def options(self) -> Any: ...  # the method's own options object (None for a method that has none)
    @property
    def origin(self) -> Path | None: ...  # the recipe file it was read from
    @property
    def auto_layers(self) -> bool: ...

    def layer_indices(self, num_layers: int) -> list[int]: ...


class Method:
    """One way a vector is made; a subclass says what differs from these defaults."""

    name: str
    summary: str
    strength: float = 1.0  # ActAdd rows are raw differences (the paper's coefficient); mean/pca directions
    mode: str = "all"  # are scaled to the residual norm, so their strength is a share of it
    layers: tuple[int | str, ...] = ()
    takes_prompts: bool = False  # built from positive/negative prompts (else from its own options)
    calibrated: bool = False  # a new recipe's strength is "auto" (then ``strength`` is the fixed one asked for by number)
    per_position: bool = False  # it makes a row per prompt position (mode actadd), not one direction
    cached: bool = True  # built vectors are cached per model (an imported one is its own file)
    options_key: str | None = None  # the recipe file's mapping that holds its own options (distill:, imported:)

    @property
    def expandable(self) -> bool:
        """It reads prompts into one direction, so one short pair can be expanded (engine/expansion.py)."""
        return self.takes_prompts and not self.per_position

    def read_options(self, given: Any) -> Any:
        """The method's options object from what a recipe was given: the object, a file's mapping, or None."""
        if given is not None:
            raise PresetError(f"method {self.name} takes no options of its own, got {type(given).__name__}")
        return None

    def default_strength(self, options: Any) -> float:
        return self.strength

    def default_layers(self, options: Any) -> list[int | str]:
        """The layers of a recipe that names none (empty for an imported one, which must name its own)."""
        return list(self.layers)

    def required_fields(self) -> tuple[str, ...]:
        """Fields a recipe file must have: a truncated file never loads as the defaults."""
        return ("method", "layers", "strength", *(("positive", "negative") if self.takes_prompts else ()))

    def check(self, recipe: RecipeParts) -> None:
        """Refuse a recipe this method cannot build or apply as written."""
        if not self.takes_prompts and recipe.layers and AUTO in recipe.layers:
            raise PresetError(f"layers auto is for vectors built from prompts; method {self.name} names its layers")
        if not self.per_position and recipe.mode == "actadd":
            raise PresetError(f"mode actadd needs per-position rows; method {self.name} makes one direction: use mode all or generated")
        if recipe.expand is not None and not self.expandable:
            raise PresetError(EXPAND_ONE_PAIR)

    def build(self, recipe: RecipeParts, ctx: ModelContext, layers: list[int], progress: Progress | None) -> SteeringVector:
        """The vector of ``recipe`` at block indices ``layers``, as built (before any calibration)."""
        raise NotImplementedError

    def key_parts(self, options: Any) -> dict[str, Any]:
        """What of its options determines the tensors (part of the recipe's key)."""
        return {} if options is None or self.options_key is None else {self.options_key: options.tensor_options()}

    def file_fields(self, options: Any) -> dict[str, Any]:
        """Its options as a recipe file writes them."""
        return {} if options is None or self.options_key is None else {self.options_key: options.to_dict()}

    def stands_in(self, options: Any) -> dict[str, str | None]:
        """What its options say about the system prompt a preset stands in for (StandIn's fields)."""
        return {}

    def note(self, options: Any) -> str | None:
        """One line for the user about how the vector was made (a fit cut short), else None."""
        return None


class OptionsMethod(Method):
    """A method built from its own options (a ``<options_key>:`` mapping in the recipe file), not from prompts."""

    options_type: Any  # the options class; its ``from_dict`` reads a file's mapping
    options_key: str

    def required_fields(self) -> tuple[str, ...]:
        return (*super().required_fields(), self.options_key)

    def read_options(self, given: Any) -> Any:
        if given is None:
            raise PresetError(f"method {self.name} needs its options (a {self.options_key}: mapping)")
        return given if isinstance(given, self.options_type) else self.options_type.from_dict(given)
