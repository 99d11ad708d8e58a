"""Imported: a vector that came from a file (a GGUF control vector), for one model shape, never rebuilt.

Its options (ImportedVector) name the file, stored with the preset (``vectors/<name>.safetensors``
beside the recipe), and the shape of the model it was made for.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..context import ModelContext
from ..files import load_vector
from ..progress import Progress
from ..validation import PresetError, mapping_to
from ..vector import SteeringVector
from .base import OptionsMethod, RecipeParts


@dataclass(frozen=True)
class ImportedVector:
    """Where an imported vector's tensors are and the model shape they were made for."""

    file: str  # the safetensors file in the preset folder's vectors/
    hidden_size: int
    layer_count: int  # layers of the model it was made for (0 when the source did not say)
    model_hint: str | None = None  # the model type the source named, e.g. "llama"
    source: str | None = None  # the file it was imported from

    def __post_init__(self) -> None:
        if not isinstance(self.file, str) or "/" in self.file or "\\" in self.file or not self.file.endswith(".safetensors"):
            raise PresetError(f"imported.file must be a .safetensors file name in the preset folder's vectors/, got {self.file!r}")
        for key in ("hidden_size", "layer_count"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "hidden_size" else 0):
                raise PresetError(f"imported.{key} must be a whole number, got {value!r}")

    @classmethod
    def from_dict(cls, data: Any) -> ImportedVector:
        return mapping_to(cls, data, "imported")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def tensor_options(self) -> dict:
        return asdict(self)


class ImportedMethod(OptionsMethod):
    name = "imported"
    summary = "a vector imported from a file (a GGUF control vector), for one model shape"
    options_key = "imported"
    options_type = ImportedVector
    cached = False  # the vector is its own file

    def build(self, recipe: RecipeParts, ctx: ModelContext, layers: list[int], progress: Progress | None) -> SteeringVector:
        check_imported_fits(recipe, ctx.hidden_size, ctx.num_layers, ctx.name)
        path = vector_path(recipe)
        if not path.is_file():
            raise PresetError(f"{recipe.name}: its vector file {path} is missing; import it again")
        vector, _ = load_vector(path)
        problem = ctx.fits(vector)  # the file itself may disagree with its recipe
        if problem:
            _refuse(recipe, ctx.name, problem)
        return vector


IMPORTED = ImportedMethod()


def vector_path(recipe: RecipeParts, recipe_path: Path | None = None) -> Path:
    """The file holding an imported vector: ``vectors/<stem>.safetensors`` beside the recipe file
    (``recipe_path``, else the file it was read from). A recipe whose ``imported.file`` names any other
    file (another preset's vector) is refused: a preset reads, moves and deletes only its own files."""
    path = recipe_path or recipe.origin
    if not isinstance(recipe.options, ImportedVector) or path is None:
        raise PresetError(f"{recipe.name}: an imported vector is read from its preset folder; save the preset first")
    own = f"{Path(path).stem}.safetensors"
    if recipe.options.file != own:
        raise PresetError(f"{path}: imported.file {recipe.options.file!r} is not this preset's own vector file ({own!r}); "
                          "a preset may only use and change its own files")
    return Path(path).parent / "vectors" / own


def check_imported_fits(recipe: RecipeParts, hidden_size: int | None, num_layers: int, model: str) -> None:
    """Refuse an imported preset whose recipe already says it was made for another model shape (hidden size,
    layer count, layers beyond the model), before any tensor or model is loaded for it."""
    imported = recipe.options
    if not isinstance(imported, ImportedVector):
        return
    problem = None
    if hidden_size is not None and imported.hidden_size != hidden_size:
        problem = f"its hidden size is {imported.hidden_size}, the model's {hidden_size}"
    elif imported.layer_count and imported.layer_count != num_layers:
        problem = f"it was made for {imported.layer_count} layers, the model has {num_layers}"
    elif recipe.layers and max(recipe.layers) >= num_layers:  # an imported recipe names block numbers
        problem = f"it steers layer {max(recipe.layers)}, the model has {num_layers} layers (0-{num_layers - 1})"
    if problem:
        _refuse(recipe, model, problem)


def _refuse(recipe: RecipeParts, model: str, problem: str) -> None:
    imported = recipe.options
    made = f"made for hidden size {imported.hidden_size}" + (f", {imported.layer_count} layers" if imported.layer_count else "")
    raise PresetError(f"{recipe.name} was imported for another model ({made}) and does not fit {model}: {problem}")
