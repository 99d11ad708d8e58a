"""Presets out to GGUF control vectors and back in: what the command line and the tab both do."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .context import ModelContext
from .control_vectors import fit_to_model, read_control_vector, to_direction_index, write_control_vector
from .methods.imported import ImportedVector
from .presets import PresetStore
from .recipe import Recipe
from .validation import PresetError, check_name
from .validation import strength as checked_strength


@dataclass(frozen=True)
class Exported:
    path: Path
    name: str
    strength: float
    layers: list[int]  # ours; llama.cpp's direction indices are one less

    def summary(self) -> str:
        directions = " ".join(str(to_direction_index(layer)) for layer in self.layers)
        return (f"wrote {self.path}: {self.name} at strength {self.strength:g}, llama.cpp directions {directions} "
                f"(our layers {' '.join(map(str, self.layers))}); use it: llama-server -m MODEL.gguf --control-vector-scaled {self.path}:1")


def model_hint(ctx: ModelContext) -> str:
    """The model type a control vector names (llama.cpp ignores it; repeng and people read it)."""
    return str(getattr(getattr(ctx.model, "config", None), "model_type", None) or ctx.name)


def check_export_path(path: Path, overwrite: bool = False) -> Path:
    """Refuse a path a control vector cannot be written to, before any model is loaded."""
    path = Path(path)
    if path.suffix.lower() != ".gguf":
        raise PresetError(f"{path}: a control vector file ends in .gguf")
    if path.exists() and not overwrite:
        raise PresetError(f"{path} exists; choose another file or overwrite it")
    if not path.parent.is_dir():
        raise PresetError(f"{path.parent}: no such folder")
    return path


def export_preset(store: PresetStore, name: str, ctx: ModelContext, path: Path, strength: float | None = None,
                  overwrite: bool = False) -> Exported:
    """Write preset ``name``'s vector for ``ctx``'s model as a control vector at ``strength`` (default its own)."""
    path = check_export_path(path, overwrite)
    recipe = store.recipe(name)
    scale = recipe.strength if strength is None else checked_strength(strength)
    vector = store.vector(recipe, ctx)
    write_control_vector(path, vector, scale, model_hint(ctx), mode=recipe.mode)
    return Exported(path, name, scale, vector.layers)


@dataclass(frozen=True)
class Imported:
    recipe: Recipe
    path: Path
    dropped: list[int]  # layers of the file no hook here can reach (the output of the last block)

    def summary(self) -> str:
        text = (f"imported {self.recipe.options.source} as {self.recipe.name} ({self.path}): layers "
                f"{' '.join(map(str, self.recipe.layers))}, strength 1 = llama.cpp scale 1")
        if self.dropped:
            last = to_direction_index(self.dropped[0])
            text += (f"; left out the output of the last block (llama.cpp direction.{last}), which steering here cannot reach "
                     f"(llama-server steers as this preset does with --control-vector-layer-range 1 {last - 1})")
        return text


def import_control_vector(store: PresetStore, source: Path, name: str, ctx: ModelContext, description: str = "",
                          overwrite: bool = False) -> Imported:
    """A preset from a GGUF control vector, checked against ``ctx``'s model (a misfit is refused naming both)."""
    check_name(name)
    if store.is_shipped(name) or (store.exists(name) and not overwrite):
        raise PresetError(f"a preset named {name!r} exists; choose another name" + ("" if store.is_shipped(name) else " or overwrite it"))
    vector, info = read_control_vector(source)
    vector, dropped = fit_to_model(vector, ctx.hidden_size, ctx.num_layers, str(source))
    recipe = Recipe(name, method="imported", layers=vector.layers, strength=1.0, mode="all", description=description,
                    options=ImportedVector(f"{name}.safetensors", vector.hidden_size, ctx.num_layers, info.model_hint, Path(source).name))
    path = store.save_imported(recipe, vector, overwrite=overwrite)
    return Imported(recipe, path, dropped)
