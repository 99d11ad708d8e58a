"""A recipe: how to build and apply a vector, independent of any model (a preset's YAML file).

Two optional typed parts besides the prompts:
- ``options``: the method's own options (engine/methods/: DistillOptions for distill, ImportedVector
  for imported, None for the prompt methods), written to the file under the method's key (``distill:``,
  ``imported:``); part of the tensor key.
- ``stands_in_for`` (StandIn): the system prompt a preset replaces and how to score it; evaluation
  only, never part of the tensor key.

Files written before these existed kept both in one ``extra:`` mapping; they still load.

Calibrated strength (engine/calibration.py): ``strength: auto`` (with an optional ``dose: 1.5``) builds
the vector, finds the multiplier at which it spends the KL budget on the calibration probe, and caches
the vector times that multiplier; the recipe's ``strength`` is then the dose, a float like any other
strength (1.0 = calibrated), so every caller that applies ``recipe.strength`` speaks in doses.
``recipe.calibrated`` says which. A number (``strength: 0.35``) is a fixed, uncalibrated strength, as
in every file written before. ``layers: auto`` chooses the layer per model by measurement.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .apply import MODES
from .build import READINGS
from .calibration import CANDIDATE_DEPTHS, KL_BUDGET, VERSION
from .expansion import VERSIONS as EXPANSIONS
from .methods import DEFAULT, METHODS, Method, method_named
from .untrusted import RECIPE, FileRefused, parse_yaml, read_text
from .validation import AUTO, PresetError, check_name, layer_indices, layer_spec, mapping_to
from .validation import strength as checked_strength

# Files we write open and close with these lines, so a truncated one (a full disk, a cut copy) is
# refused instead of loading with some fields missing or cut short (strength 0.3 read as 0).
HEADER = "# steering recipe\n"
FOOTER = "# end of recipe\n"
STAND_IN_KEYS = ("system", "metric", "instead")


@dataclass(frozen=True)
class StandIn:
    """The system prompt a preset stands in for, the behaviour metric to score it by, and the system
    message a chat sends in its place (e.g. a character's one-line context)."""

    system: str | None = None
    metric: str | None = None
    instead: str | None = None

    def __post_init__(self) -> None:
        for key in STAND_IN_KEYS:
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise PresetError(f"stands_in_for.{key} must be text, got {value!r}")

    @classmethod
    def from_dict(cls, data: Any) -> StandIn:
        return mapping_to(cls, data, "stands_in_for")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in STAND_IN_KEYS if getattr(self, k) is not None}


@dataclass
class Recipe:
    """How to build and apply a vector. ``strength``, ``mode`` and ``layers`` left as None take the method's defaults.

    ``strength`` may be given as ``"auto"`` (calibrated, dose 1) or as a number with ``calibrated=True``
    (that dose); after construction it is always a float, and ``calibrated`` a bool."""

    name: str
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    description: str = ""
    method: str = DEFAULT
    layers: list[int | str] | None = None
    strength: float | str | None = None
    mode: str | None = None
    reading: str = "mean"
    options: Any = None  # the method's own options (engine/methods/), e.g. DistillOptions; None for prompt methods
    stands_in_for: StandIn | None = None
    expand: str | None = None  # a short pair read by expansion (engine/expansion.py): its version, e.g. v1
    calibrated: bool | None = None  # written to YAML as ``strength: auto`` (and ``dose``), never as its own key
    origin: Path | None = field(default=None, compare=False, repr=False)  # the file it was read from (not written)

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.description, str):
            raise PresetError(f"description must be text, got {type(self.description).__name__}")
        made_by = method_named(self.method)
        if self.stands_in_for is not None and not isinstance(self.stands_in_for, StandIn):
            self.stands_in_for = StandIn.from_dict(self.stands_in_for)
        self.options = made_by.read_options(self.options)
        if self.mode is None:
            self.mode = made_by.mode
        self._resolve_strength(made_by)
        if self.layers is None:
            self.layers = made_by.default_layers(self.options)
        self.positive = _text_list(self.positive, "positive")
        self.negative = _text_list(self.negative, "negative")
        if self.mode not in MODES:
            raise PresetError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.reading not in READINGS:
            raise PresetError(f"unknown reading {self.reading!r}; choose one of {', '.join(READINGS)}")
        try:
            self.strength = checked_strength(self.strength)
        except ValueError as error:
            raise PresetError(str(error)) from None
        if isinstance(self.layers, (int, str)):
            self.layers = [self.layers]
        if not isinstance(self.layers, list) or not self.layers:
            raise PresetError("a recipe needs at least one layer")
        try:
            self.layers = [layer_spec(layer) for layer in self.layers]  # syntax only; the model fixes the range
        except ValueError as error:
            raise PresetError(str(error)) from None
        if AUTO in self.layers and len(self.layers) > 1:
            raise PresetError(f"layers auto chooses the layer itself: give auto alone or layer numbers, not {self.layers}")
        if self.expand is not None and self.expand not in EXPANSIONS:
            raise PresetError(f"unknown expand {self.expand!r}; choose one of {', '.join(EXPANSIONS)}")
        made_by.check(self)

    def _resolve_strength(self, made_by: Method) -> None:
        """``strength`` to a float and ``calibrated`` to a bool: "auto" is dose 1 calibrated, a number
        alone is fixed, nothing at all is the method's default."""
        if isinstance(self.strength, str) and self.strength.strip().lower() == AUTO:
            if self.calibrated is False:
                raise PresetError("strength auto is calibrated; it cannot be calibrated=False")
            self.strength, self.calibrated = 1.0, True
        elif self.strength is None and self.calibrated is None:
            self.calibrated = made_by.calibrated
            self.strength = 1.0 if self.calibrated else made_by.default_strength(self.options)
        elif self.strength is None:
            self.strength = 1.0 if self.calibrated else made_by.default_strength(self.options)
        self.calibrated = bool(self.calibrated)
        if self.calibrated and not made_by.takes_prompts:
            raise PresetError(f"strength auto is for vectors built from prompts; method {self.method} takes a number")

    @property
    def auto_layers(self) -> bool:
        return self.layers == [AUTO]

    @property
    def dose(self) -> float | None:
        """The strength relative to calibration (1.0 = calibrated), or None for a fixed strength."""
        return self.strength if self.calibrated else None

    def layer_indices(self, num_layers: int) -> list[int]:
        """The blocks this recipe steers on a model of ``num_layers``; for ``layers: auto`` the
        candidates it chooses among (the choice itself is measured when the vector is built)."""
        if self.auto_layers:
            return layer_indices(CANDIDATE_DEPTHS, num_layers)
        return layer_indices(self.layers, num_layers)

    def key(self) -> str:
        """Hash of what determines the tensors (not the strength, mode, description or what it stands in for)."""
        parts: dict[str, Any] = {"positive": self.positive, "negative": self.negative, "method": self.method,
                                 "layers": [str(l) for l in self.layers], "reading": self.reading}
        parts.update(METHODS[self.method].key_parts(self.options))
        if self.expand is not None:
            parts["expand"] = self.expand
        if self.calibrated or self.auto_layers:  # a calibrated and a fixed vector are different tensors
            parts["calibration"] = {"budget": KL_BUDGET, "version": VERSION, "scaled": self.calibrated}
        if self.auto_layers:  # another set of candidates may choose another layer
            parts["calibration"]["candidates"] = list(CANDIDATE_DEPTHS)
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]

    def target(self) -> StandIn:
        """What the preset stands in for: ``stands_in_for``, its method's options (a distilled vector's prompt) filling the gaps."""
        given = self.stands_in_for or StandIn()
        own = METHODS[self.method].stands_in(self.options)
        return replace(given, **{key: getattr(given, key) or value for key, value in own.items()})

    def note(self) -> str | None:
        """One line for the user about how its vector was made (a fit cut short by a time limit), else None."""
        return METHODS[self.method].note(self.options)

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"name": self.name}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "origin", "calibrated") or value in ({}, [], None, ""):
                continue
            if f.name == "strength" and self.calibrated:
                data["strength"] = AUTO
                if value != 1.0:
                    data["dose"] = value
                continue
            if f.name == "layers" and self.auto_layers:
                value = AUTO
            if f.name == "options":
                data.update(METHODS[self.method].file_fields(value))
                continue
            data[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return data

    def to_yaml(self) -> str:
        return HEADER + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True) + FOOTER

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Recipe:
        if not isinstance(data, dict):
            raise PresetError(f"{source}: expected a mapping of recipe fields, got {type(data).__name__}")
        data = dict(data)
        if "layer" in data:
            data["layers"] = data.pop("layer")
        try:
            made_by = method_named(data.get("method", DEFAULT))
            _adopt_extra(data, made_by)
            _adopt_dose(data)
            _adopt_options(data, made_by)
            unknown = set(data) - ({f.name for f in fields(cls)} - {"origin", "options"} | _option_keys())
            if unknown:
                raise PresetError(f"unknown field(s) {', '.join(sorted(unknown))}")
            missing = [key for key in made_by.required_fields() if key not in data]
            if missing:  # a truncated file must never load as the defaults
                raise PresetError(f"missing field(s) {', '.join(missing)}; the file may be truncated")
            if made_by.options_key is not None:
                data["options"] = data.pop(made_by.options_key)
            return cls(**data)
        except (PresetError, TypeError) as error:
            raise PresetError(f"{source}: {error}") from None


def _option_keys() -> set[str]:
    """The file keys holding a method's own options (distill:, imported:)."""
    return {m.options_key for m in METHODS.values() if m.options_key is not None}


def _adopt_options(data: dict, made_by: Method) -> None:
    """Refuse options a file gives under another method's key (``distill:`` in a ``method: mean`` file)."""
    for key in sorted(_option_keys() & set(data)):
        if key != made_by.options_key:
            raise PresetError(f"{key} options belong to method {key}, not {made_by.name}")


def _adopt_extra(data: dict, made_by: Method) -> None:
    """Files of earlier releases: ``extra`` held the options of a method that has its own (``method:
    distill``) and the stand-in metadata (system, metric, instead) for every other method."""
    extra = data.pop("extra", None)
    if extra is None:
        return
    if not isinstance(extra, dict):
        raise PresetError(f"extra: expected a mapping, got {type(extra).__name__}")
    extra = dict(extra)
    if made_by.options_key is not None:
        metric = extra.pop("metric", None)
        data.setdefault(made_by.options_key, extra)
        if metric is not None:
            data.setdefault("stands_in_for", {"metric": metric})
    else:
        data.setdefault("stands_in_for", extra)


def _adopt_dose(data: dict) -> None:
    """``strength: auto`` with an optional ``dose`` becomes a calibrated recipe of that dose."""
    if "calibrated" in data:
        raise PresetError("unknown field(s) calibrated; write strength: auto (and dose: X) instead")
    dose = data.pop("dose", None)
    strength = data.get("strength")
    if isinstance(strength, str) and strength.strip().lower() == AUTO:
        data["strength"] = 1.0 if dose is None else dose
        data["calibrated"] = True
    elif dose is not None:
        raise PresetError(f"dose {dose!r} is relative to a calibrated strength: write strength: auto with it")


def _text_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PresetError(f"{what} prompts must be non-empty texts")
    return list(value)


def read_recipe(path: Path) -> Recipe:
    """The recipe in ``path``, every limit of untrusted.RECIPE checked before it is parsed."""
    try:
        text = read_text(path, RECIPE)
        data = parse_yaml(text, path, RECIPE)
    except FileRefused as error:
        raise PresetError(str(error)) from None
    if text.startswith(HEADER) and not text.endswith(FOOTER):
        raise PresetError(f"{path}: truncated (its last line, {FOOTER.strip()!r}, is missing); save the preset again")
    if isinstance(data, dict) and "name" not in data:
        data["name"] = Path(path).stem
    recipe = Recipe.from_dict(data, str(path))
    recipe.origin = Path(path)
    return recipe
