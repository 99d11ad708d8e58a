"""The options of a distilled vector: what a ``method: distill`` recipe stores under ``distill:``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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


@dataclass(frozen=True)
class DistillOptions:
    """How a system prompt S becomes a vector; every field changes the tensors (part of the recipe's key).

    ``instead``: the system message the steered chat sends in place of S (e.g. the one line a
    character keeps as its context); fitting and measuring use it.
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

    def __post_init__(self) -> None:
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
        if self.instead is not None and (not isinstance(self.instead, str) or not self.instead.strip()):
            raise PresetError(f"distill.instead must be text (the system message sent in place of S) or left out, got {self.instead!r}")

    @classmethod
    def from_dict(cls, data: Any) -> DistillOptions:
        return mapping_to(cls, data, "distill", required=("system",))

    def to_dict(self) -> dict:
        """Only what differs from the defaults, the system prompt always."""
        defaults = {f.name: f.default for f in fields(self)}
        return {k: v for k, v in asdict(self).items() if k == "system" or v != defaults[k]}
