"""Presets: a portable YAML recipe plus tensors cached per model fingerprint (safetensors only).

Layout of a user folder::

    <folder>/<name>.yaml                                  the recipe
    <folder>/tensors/<name>/<fingerprint>-<recipe>.safetensors   vectors built for one model

Shipped recipes (the repo's ``presets/``) are read-only; their tensors are cached in the user folder.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from .calibration import Calibration
from .context import ModelContext
from .files import atomic_write, load_vector, save_vector
from .methods import METHODS, build_vector
from .methods.imported import ImportedVector, vector_path
from .progress import Progress
from .recipe import Recipe, read_recipe
from .validation import NAME_PATTERN, PresetError, check_name
from .vector import SteeringVector

log = logging.getLogger("steering")
# Shipped recipes: extensions/steering/presets once installed into a webui (install.py), else the repo's presets/.
SHIPPED_DIR = next(
    (d for d in (Path(__file__).resolve().parents[1] / "presets", Path(__file__).resolve().parents[3] / "presets") if d.is_dir()),
    Path(__file__).resolve().parents[3] / "presets",
)


@dataclass(frozen=True)
class PresetInfo:
    name: str
    path: Path
    shipped: bool


class PresetStore:
    """User presets in ``folder``; shipped recipes from ``shipped`` are listed too and never written."""

    def __init__(self, folder: str | os.PathLike, shipped: str | os.PathLike | None = SHIPPED_DIR):
        self.folder = Path(folder)
        self.shipped = Path(shipped) if shipped else None

    # -- finding ---------------------------------------------------------------------------
    def _user_path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.yaml"

    def _shipped_path(self, name: str) -> Path | None:
        if self.shipped is None:
            return None
        path = self.shipped / f"{check_name(name)}.yaml"
        return path if path.is_file() else None

    def list(self) -> list[PresetInfo]:
        found: dict[str, PresetInfo] = {}
        for folder, shipped in ((self.shipped, True), (self.folder, False)):
            if folder and folder.is_dir():
                for path in sorted(folder.glob("*.yaml")):
                    if NAME_PATTERN.match(path.stem):
                        found.setdefault(path.stem, PresetInfo(path.stem, path, shipped))
        return sorted(found.values(), key=lambda info: info.name.lower())

    def exists(self, name: str) -> bool:
        return self._user_path(name).is_file() or self._shipped_path(name) is not None

    def path(self, name: str) -> Path:
        shipped = self._shipped_path(name)
        if shipped is not None:
            return shipped
        path = self._user_path(name)
        if not path.is_file():
            known = ", ".join(info.name for info in self.list()) or "none"
            raise PresetError(f"no preset named {name!r} (known: {known})")
        return path

    def is_shipped(self, name: str) -> bool:
        return self._shipped_path(name) is not None

    def recipe(self, name: str) -> Recipe:
        recipe = read_recipe(self.path(name))
        recipe.name = name
        return recipe

    # -- writing ---------------------------------------------------------------------------
    def _writable(self, name: str) -> None:
        if self.is_shipped(name):
            raise PresetError(f"{name!r} is a shipped preset and read-only; save under another name")

    def save(self, recipe: Recipe, vector: SteeringVector | None = None, ctx: ModelContext | None = None, overwrite: bool = False,
             calibration: Calibration | None = None) -> Path:
        """Write the recipe (and the vector built for the model of ``ctx``, if given, with its calibration).
        The old preset survives any failure."""
        self._writable(recipe.name)
        path = self._user_path(recipe.name)
        if path.exists() and not overwrite:
            raise PresetError(f"a preset named {recipe.name!r} exists; choose another name or overwrite it")
        text = recipe.to_yaml()
        if vector is not None:
            if ctx is None:
                raise ValueError("saving a vector needs the model it was built for")
            self.cache_vector(recipe, vector, ctx, calibration)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return path

    def save_imported(self, recipe: Recipe, vector: SteeringVector, overwrite: bool = False) -> Path:
        """Save a vector that came from a file: its tensors go to vectors/<name>.safetensors beside the recipe."""
        if not isinstance(recipe.options, ImportedVector):
            raise ValueError("save_imported takes a method: imported recipe")
        self._writable(recipe.name)
        path = self._user_path(recipe.name)
        if path.exists() and not overwrite:
            raise PresetError(f"a preset named {recipe.name!r} exists; choose another name or overwrite it")
        save_vector(vector_path(recipe, path), vector)
        atomic_write(path, lambda tmp: tmp.write_text(recipe.to_yaml(), encoding="utf-8"))
        return path

    def rename(self, old: str, new: str) -> Path:
        self._writable(old)
        check_name(new)
        source, target = self._user_path(old), self._user_path(new)
        if not source.is_file():
            raise PresetError(f"no user preset named {old!r}")
        if self.exists(new):
            raise PresetError(f"a preset named {new!r} exists already")
        recipe = read_recipe(source)
        recipe.name = new
        if isinstance(recipe.options, ImportedVector):  # its own tensors move with it (a recipe naming others' is refused)
            own = vector_path(recipe)
            recipe.options = replace(recipe.options, file=f"{new}.safetensors")
            if own.is_file():
                os.replace(own, vector_path(recipe, target))
        atomic_write(target, lambda tmp: tmp.write_text(recipe.to_yaml(), encoding="utf-8"))
        tensors = self.folder / "tensors" / old
        if tensors.is_dir():
            os.replace(tensors, self.folder / "tensors" / new)
        source.unlink()
        return target

    def delete(self, name: str) -> None:
        """Remove the recipe and the files under its own name (its cached tensors, its imported vector),
        never a file the recipe names: a damaged or hostile recipe is deleted without touching another preset's."""
        self._writable(name)
        path = self._user_path(name)
        if not path.is_file():
            raise PresetError(f"no user preset named {name!r}")
        path.unlink()
        shutil.rmtree(self.folder / "tensors" / name, ignore_errors=True)
        (self.folder / "vectors" / f"{name}.safetensors").unlink(missing_ok=True)

    # -- tensors ---------------------------------------------------------------------------
    def _tensor_path(self, recipe: Recipe, fingerprint: str) -> Path:
        return self.folder / "tensors" / check_name(recipe.name) / f"{fingerprint}-{recipe.key()}.safetensors"

    def cache_vector(self, recipe: Recipe, vector: SteeringVector, ctx: ModelContext, calibration: Calibration | None = None) -> Path:
        """Cache ``vector`` (already multiplied by its calibrated scale, for ``strength: auto``); the file's
        metadata records the calibration: scale, budget, KL reached, chosen layers, seconds."""
        path = self._tensor_path(recipe, ctx.fingerprint)
        meta = {"hidden_size": str(vector.hidden_size), "num_layers": str(ctx.num_layers), "recipe": recipe.key(), "model": ctx.name,
                "fingerprint": ctx.fingerprint}
        save_vector(path, vector, {**meta, **(calibration.metadata() if calibration else {})})
        return path

    def cache_entries(self, recipe: Recipe) -> list[tuple[str, dict[str, str]]]:
        """(model fingerprint, metadata) of every tensor file cached for this recipe as it is now."""
        folder = self.folder / "tensors" / check_name(recipe.name)
        found = []
        for path in sorted(folder.glob(f"*-{recipe.key()}.safetensors")):
            fingerprint = path.name.split("-", 1)[0]
            try:
                meta = load_vector(path)[1]
                _check_cached(path, meta, recipe, fingerprint)
                found.append((fingerprint, meta))
            except PresetError as error:
                log.warning("steering: %s", error)
        return found

    def cached_vector(self, recipe: Recipe, ctx: ModelContext) -> SteeringVector | None:
        """The vector cached for this model and recipe, or None: none yet, damaged (it is rebuilt from
        the recipe) or not fitting the model (never returned)."""
        path = self._tensor_path(recipe, ctx.fingerprint)
        if not path.is_file():
            return None
        try:
            vector, meta = load_vector(path)
            _check_cached(path, meta, recipe, ctx.fingerprint)
        except PresetError as error:
            log.warning("steering: %s; rebuilding it from the recipe", error)
            return None
        return vector if ctx.fits(vector) is None else None

    def vector(self, name: str | Recipe, ctx: ModelContext, progress: Progress | None = None) -> SteeringVector:
        """The preset's vector for the model of ``ctx``: from the cache, else built from the recipe and cached."""
        recipe = name if isinstance(name, Recipe) else self.recipe(name)
        if not METHODS[recipe.method].cached:
            return build_vector(recipe, ctx, progress).vector
        cached = self.cached_vector(recipe, ctx)
        if cached is not None:
            return cached
        built = build_vector(recipe, ctx, progress)
        self.cache_vector(recipe, built.vector, ctx, built.calibration)
        return built.vector


def _check_cached(path: Path, meta: dict[str, str], recipe: Recipe, fingerprint: str) -> None:
    """A cached file is used only when its own metadata says it was built from this recipe (and, for files
    that record it, for this model): a file copied over another's cache name is refused."""
    if meta.get("recipe") != recipe.key():
        raise PresetError(f"{path}: built from recipe {meta.get('recipe')!r}, not this recipe ({recipe.key()!r})")
    if meta.get("fingerprint", fingerprint) != fingerprint:
        raise PresetError(f"{path}: built for model {meta['fingerprint']!r}, not this one ({fingerprint!r})")
