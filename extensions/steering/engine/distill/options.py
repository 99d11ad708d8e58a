"""The options of a distilled vector: what a ``method: distill`` recipe stores under ``distill:``.

The defaults (DistillOptions' field defaults and DEFAULT_LAYERS) are what a new recipe gets; a recipe
file stores every option, so later changes of the defaults never change its tensors. A file that
leaves an option out (every file of earlier releases, the shipped ``*-distilled`` presets) means the
first release's value, ``LEGACY``: it builds the same tensors as before.

TUNING (placeholder: filled in from benchmarks/results/distill_tuning.json).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..validation import PresetError, mapping_to

VIAS: tuple[str, ...] = ("kl", "contrast", "direct")
BASELINES: tuple[str, ...] = ("none", "empty")
# kl fits every layer jointly; contrast and direct add a measured difference, which a later layer
# would count again (it already carries what the earlier one added), so they take one layer
DEFAULT_LAYERS: dict[str, list[int | str]] = {"kl": ["10%", "20%", "30%", "40%", "50%"], "contrast": ["20%"], "direct": ["20%"]}
# S read on its own differs from a neutral prompt far more than a chat with S differs from one without:
# direct is a prompt-pair mean direction at a gentle share of the residual norm (the kind preset's)
DIRECT_STRENGTH = 0.15
# what an option left out of a recipe file means: the defaults of the first release
LEGACY: dict[str, Any] = {"via": "kl", "steps": 24, "lr": 0.05, "reply_tokens": 16, "messages": 32, "baseline": "none",
                          "batch_size": 8, "plateau": 0.0}


@dataclass(frozen=True)
class CutShort:
    """A kl fit that the user's time limit stopped before its last step: the limit and the steps asked
    for (the options' ``steps`` are the steps done, so the recipe rebuilds to the vector it saved).
    A record for the user, not part of the tensor key."""

    time_limit: float
    planned_steps: int

    def __post_init__(self) -> None:
        if isinstance(self.time_limit, bool) or not isinstance(self.time_limit, (int, float)) or not self.time_limit >= 0:
            raise PresetError(f"distill.cut_short.time_limit must be a number of seconds, got {self.time_limit!r}")
        if not isinstance(self.planned_steps, int) or isinstance(self.planned_steps, bool) or self.planned_steps < 1:
            raise PresetError(f"distill.cut_short.planned_steps must be a whole number of at least 1, got {self.planned_steps!r}")

    def note(self, steps_done: int) -> str:
        return (f"cut short by a time limit of {self.time_limit:g} s after {steps_done} of {self.planned_steps} steps: "
                f"a weaker fit than the options ask for; distil again without --time-limit for the full fit")


@dataclass(frozen=True)
class DistillOptions:
    """How a system prompt S becomes a vector; every field but ``cut_short`` changes the tensors (the recipe's key).

    ``instead``: the system message the steered chat sends in place of S (e.g. the one line a
    character keeps as its context); fitting and measuring use it. ``cut_short``: set when a time
    limit the user asked for stopped the fit (``steps`` then counts the steps done).
    """

    system: str
    via: str = "kl"
    instead: str | None = None
    steps: int = 24
    lr: float = 0.05
    reply_tokens: int = 16
    messages: int = 32
    baseline: str = "none"
    batch_size: int = 8
    plateau: float = 0.0
    cut_short: CutShort | None = None

    def __post_init__(self) -> None:
        if self.cut_short is not None and not isinstance(self.cut_short, CutShort):
            object.__setattr__(self, "cut_short", mapping_to(CutShort, self.cut_short, "distill.cut_short"))
        if not isinstance(self.system, str) or not self.system.strip():
            raise PresetError("a distilled vector needs the system prompt it stands in for (distill.system)")
        if self.via not in VIAS:
            raise PresetError(f"unknown distill.via {self.via!r}; choose one of {', '.join(VIAS)}")
        if self.baseline not in BASELINES:
            raise PresetError(f"unknown distill.baseline {self.baseline!r}; choose one of {', '.join(BASELINES)}")
        for key in ("steps", "reply_tokens", "messages", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "steps" else 1):
                raise PresetError(f"distill.{key} must be a whole number of at least {0 if key == 'steps' else 1}, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < 10:
            raise PresetError(f"distill.lr must be a positive number below 10, got {self.lr!r}")
        if isinstance(self.plateau, bool) or not isinstance(self.plateau, (int, float)) or not 0 <= self.plateau < 1:
            raise PresetError(f"distill.plateau must be a share from 0 (never stop early) to below 1, got {self.plateau!r}")
        if self.instead is not None and (not isinstance(self.instead, str) or not self.instead.strip()):
            raise PresetError(f"distill.instead must be text (the system message sent in place of S) or left out, got {self.instead!r}")

    @classmethod
    def from_dict(cls, data: Any) -> DistillOptions:
        """Options as a recipe file gives them; one left out (or null) is the first release's (``LEGACY``)."""
        if isinstance(data, dict):
            data = {**LEGACY, **{key: value for key, value in data.items() if value is not None}}
        return mapping_to(cls, data, "distill", required=("system",))

    def to_dict(self) -> dict:
        """Every option (``instead`` and ``cut_short`` when given): a file read back builds the same tensors whatever the defaults are then."""
        return {k: v for k, v in asdict(self).items() if k not in ("instead", "cut_short") or v is not None}

    def tensor_options(self) -> dict:
        """What determines the tensors: every option but the record of a time limit."""
        return {k: v for k, v in asdict(self).items() if k != "cut_short"}

    def note(self) -> str | None:
        """One line for the user when the fit was cut short, else None."""
        return self.cut_short.note(self.steps) if self.cut_short else None
