"""Presets: a portable YAML recipe plus tensors cached per model fingerprint (safetensors only).

Layout of a user folder::

    <folder>/<name>.yaml                                  the recipe
    <folder>/tensors/<name>/<fingerprint>-<recipe>.safetensors   vectors built for one model

Shipped recipes (the repo's ``presets/``) are read-only; their tensors are cached in the user folder.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .apply import MODES
from .build import METHODS, READINGS
from .layers import config_value, find_layers, hidden_size
from .vector import SteeringVector

# Shipped recipes: extensions/steering/presets once installed into a webui (install.py), else the repo's presets/.
SHIPPED_DIR = next(
    (d for d in (Path(__file__).resolve().parents[1] / "presets", Path(__file__).resolve().parents[3] / "presets") if d.is_dir()),
    Path(__file__).resolve().parents[3] / "presets",
)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
DEFAULT_LAYERS = ["20%", "27%"]  # shares of the model's depth: layers 6 and 8 of SmolLM2's 30
DEFAULT_LAYER = DEFAULT_LAYERS[0]  # for single-layer choices (a slider)
# ActAdd rows are raw differences (the paper's coefficient); mean/PCA directions are scaled to the
# residual norm, so their strength is a share of it. Chosen on the default model (README).
DEFAULT_METHOD = "mean"
DEFAULT_STRENGTH = {"actadd": 4.0, "mean": 0.35, "pca": 0.35}


class PresetError(ValueError):
    """A preset name, file or recipe is unusable; the message names the file and the problem."""


def check_name(name: str) -> str:
    """Refuse names that could escape the folder or hide: '..', '/', absolute paths, leading dots, control characters."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name or name.strip() != name:
        raise PresetError(
            f"invalid preset name {name!r}: use 1-64 letters, digits, spaces, '_', '-' or '.', "
            "starting with a letter or digit, without '..'"
        )
    return name


def resolve_layer(layer: int | str, num_layers: int) -> int:
    """A recipe layer: an index (negative counts from the end) or a share of depth such as '20%'."""
    if isinstance(layer, str) and layer.strip().endswith("%"):
        try:
            share = float(layer.strip()[:-1]) / 100
        except ValueError:
            raise PresetError(f"invalid layer {layer!r}: write an index such as 6 or a share such as '20%'") from None
        if not 0 <= share <= 1:
            raise PresetError(f"invalid layer {layer!r}: a share must lie between 0% and 100%")
        return min(num_layers - 1, round(share * num_layers))
    try:
        index = int(layer)
    except (TypeError, ValueError):
        raise PresetError(f"invalid layer {layer!r}: write an index such as 6 or a share such as '20%'") from None
    if isinstance(layer, float) and not layer.is_integer():
        raise PresetError(f"invalid layer {layer!r}: a layer index is a whole number")
    if index < 0:
        index += num_layers
    if not 0 <= index < num_layers:
        raise PresetError(f"layer {layer} is out of range: the model has {num_layers} layers (0-{num_layers - 1})")
    return index


@dataclass
class Recipe:
    """How to build and apply a vector, independent of any model."""

    name: str
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    description: str = ""
    method: str = "actadd"
    layers: list[int | str] = field(default_factory=lambda: list(DEFAULT_LAYERS))
    strength: float | None = None  # None: the method's default (DEFAULT_STRENGTH)
    mode: str | None = None  # None: actadd for actadd, all for one direction
    reading: str = "mean"
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. a distilled system prompt

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.mode is None:
            self.mode = "actadd" if self.method == "actadd" else "all"
        if self.strength is None:
            self.strength = DEFAULT_STRENGTH.get(self.method, 1.0)
        self.positive = _text_list(self.positive, "positive")
        self.negative = _text_list(self.negative, "negative")
        if self.method not in METHODS and self.method not in RECIPE_BUILDERS:
            raise PresetError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.mode not in MODES:
            raise PresetError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.reading not in READINGS:
            raise PresetError(f"unknown reading {self.reading!r}; choose one of {', '.join(READINGS)}")
        if self.method in METHODS:
            if not self.positive or not self.negative:
                raise PresetError("a recipe needs at least one positive and one negative prompt")
            if self.method == "actadd" and (len(self.positive) != 1 or len(self.negative) != 1):
                raise PresetError("method actadd takes one positive and one negative prompt; use mean or pca for many")
            if self.method == "actadd" and self.mode != "actadd":
                raise PresetError(f"method actadd makes per-position rows: use mode actadd (mode {self.mode} adds one direction)")
            if self.method != "actadd" and self.mode == "actadd":
                raise PresetError(f"mode actadd needs per-position rows; method {self.method} makes one direction: use mode all or generated")
        try:
            self.strength = float(self.strength)
        except (TypeError, ValueError):
            raise PresetError(f"strength must be a number, got {self.strength!r}") from None
        if not math.isfinite(self.strength):
            raise PresetError(f"strength must be a finite number, got {self.strength}")
        if isinstance(self.layers, (int, str)):
            self.layers = [self.layers]
        if not self.layers:
            raise PresetError("a recipe needs at least one layer")
        for layer in self.layers:
            resolve_layer(layer, 10**6)  # syntax only; the model fixes the range

    def layer_indices(self, num_layers: int) -> list[int]:
        return sorted({resolve_layer(layer, num_layers) for layer in self.layers})

    def key(self) -> str:
        """Hash of what determines the tensors (not the strength, mode or description)."""
        parts = {"positive": self.positive, "negative": self.negative, "method": self.method, "layers": [str(l) for l in self.layers], "reading": self.reading}
        if self.method not in METHODS:  # the prompt-pair methods ignore extra (there it only names what a preset stands in for)
            parts["extra"] = self.extra
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v not in ({}, [])}
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Recipe:
        if not isinstance(data, dict):
            raise PresetError(f"{source}: expected a mapping of recipe fields, got {type(data).__name__}")
        data = dict(data)
        if "layer" in data:
            data["layers"] = data.pop("layer")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise PresetError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except PresetError as error:
            raise PresetError(f"{source}: {error}") from None
        except TypeError as error:
            raise PresetError(f"{source}: {error}") from None


def _text_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PresetError(f"{what} prompts must be non-empty texts")
    return list(value)


def read_recipe(path: Path) -> Recipe:
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as error:
        raise PresetError(f"{path}: cannot read: {error}") from None
    except yaml.YAMLError as error:
        raise PresetError(f"{path}: damaged YAML: {error}".replace("\n", " ")) from None
    if isinstance(data, dict) and "name" not in data:
        data["name"] = Path(path).stem
    return Recipe.from_dict(data, str(path))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_fingerprint(model: nn.Module) -> str:
    """Identifies a model's weights cheaply: class, shape and samples of the first and last blocks."""
    layers = find_layers(model)
    digest = hashlib.sha256()
    digest.update(f"{type(model).__name__}:{hidden_size(model)}:{len(layers)}:{config_value(model, 'vocab_size')}".encode())
    for block in (layers.blocks[0], layers.blocks[-1]):
        for name, param in list(block.named_parameters())[:4]:
            digest.update(name.encode())
            digest.update(param.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_vector(path: Path, vector: SteeringVector, metadata: dict[str, str] | None = None) -> None:
    tensors = {f"layer.{layer}": t.contiguous() for layer, t in vector.directions.items()}
    meta = {"residual_norms": json.dumps(vector.residual_norms), **(metadata or {})}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_vector(path: Path) -> tuple[SteeringVector, dict[str, str]]:
    """Read a vector saved by save_vector (safetensors only: nothing executable is ever loaded)."""
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            meta = json.loads(handle.read(header_len)).get("__metadata__", {}) or {}
        directions = {int(key.split(".", 1)[1]): t for key, t in tensors.items()}
        norms = {int(k): float(v) for k, v in json.loads(meta.get("residual_norms", "{}")).items()}
        return SteeringVector(directions, norms), meta
    except (SafetensorError, OSError, ValueError, IndexError, json.JSONDecodeError) as error:
        raise PresetError(f"{path}: damaged tensor file: {error}") from None


Builder = Callable[..., SteeringVector]
RECIPE_BUILDERS: dict[str, Builder] = {}  # extra methods (e.g. distillation) register here


def build_recipe(recipe: Recipe, model: nn.Module, tokenizer, progress=None) -> SteeringVector:
    from .build import build

    layers = recipe.layer_indices(len(find_layers(model)))
    if recipe.method in RECIPE_BUILDERS:
        return RECIPE_BUILDERS[recipe.method](recipe, model, tokenizer, layers, progress=progress)
    return build(model, tokenizer, recipe.positive, recipe.negative, layers, recipe.method, recipe.reading, progress=progress)


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

    def save(self, recipe: Recipe, vector: SteeringVector | None = None, model: nn.Module | None = None, overwrite: bool = False) -> Path:
        """Write the recipe (and the vector built for ``model``, if given). The old preset survives any failure."""
        self._writable(recipe.name)
        path = self._user_path(recipe.name)
        if path.exists() and not overwrite:
            raise PresetError(f"a preset named {recipe.name!r} exists; choose another name or overwrite it")
        text = recipe.to_yaml()
        if vector is not None:
            if model is None:
                raise ValueError("saving a vector needs the model it was built for")
            self.cache_vector(recipe, vector, model)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
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
        atomic_write(target, lambda tmp: tmp.write_text(recipe.to_yaml(), encoding="utf-8"))
        tensors = self.folder / "tensors" / old
        if tensors.is_dir():
            os.replace(tensors, self.folder / "tensors" / new)
        source.unlink()
        return target

    def delete(self, name: str) -> None:
        self._writable(name)
        path = self._user_path(name)
        if not path.is_file():
            raise PresetError(f"no user preset named {name!r}")
        path.unlink()
        shutil.rmtree(self.folder / "tensors" / name, ignore_errors=True)

    # -- tensors ---------------------------------------------------------------------------
    def _tensor_path(self, recipe: Recipe, fingerprint: str) -> Path:
        return self.folder / "tensors" / check_name(recipe.name) / f"{fingerprint}-{recipe.key()}.safetensors"

    def cache_vector(self, recipe: Recipe, vector: SteeringVector, model: nn.Module) -> Path:
        path = self._tensor_path(recipe, model_fingerprint(model))
        save_vector(path, vector, {"hidden_size": str(vector.hidden_size), "num_layers": str(len(find_layers(model))), "recipe": recipe.key()})
        return path

    def cached_vector(self, recipe: Recipe, model: nn.Module) -> SteeringVector | None:
        """The vector cached for this model and recipe, or None; one that does not fit is never returned."""
        path = self._tensor_path(recipe, model_fingerprint(model))
        if not path.is_file():
            return None
        vector, _ = load_vector(path)
        num_layers = len(find_layers(model))
        if vector.hidden_size != hidden_size(model) or max(vector.layers) >= num_layers:
            return None
        return vector

    def vector(self, name: str | Recipe, model: nn.Module, tokenizer, progress=None) -> SteeringVector:
        """The preset's vector for ``model``: from the cache, else built from the recipe and cached."""
        recipe = name if isinstance(name, Recipe) else self.recipe(name)
        cached = self.cached_vector(recipe, model)
        if cached is not None:
            return cached
        vector = build_recipe(recipe, model, tokenizer, progress)
        self.cache_vector(recipe, vector, model)
        return vector
