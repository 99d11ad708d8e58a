"""SteeringVector: per-layer directions with plain arithmetic (``love - hate``, ``0.5 * dogs``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SteeringVector:
    """Directions to add to the residual stream entering decoder blocks.

    ``directions[layer]`` has shape ``(k, d)``. ``k == 1`` is one direction (added at every steered
    position); ``k > 1`` holds ActAdd's per-position rows, row ``i`` belonging to prompt position
    ``i + 1`` (position 0, the attention sink, is never steered). Stored as float32 on the CPU.
    ``residual_norms[layer]`` is the mean residual norm seen while building, to judge strength.
    """

    directions: dict[int, torch.Tensor]
    residual_norms: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise ValueError("a steering vector needs at least one layer")
        clean = {}
        for layer, tensor in self.directions.items():
            tensor = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
            if tensor.dim() == 1:
                tensor = tensor.unsqueeze(0)
            if tensor.dim() != 2 or tensor.shape[0] == 0:
                raise ValueError(f"layer {layer}: expected shape (d,) or (k, d), got {tuple(tensor.shape)}")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"layer {layer}: the vector has NaN or infinite values")
            clean[int(layer)] = tensor
        self.directions = dict(sorted(clean.items()))
        dims = {t.shape[1] for t in self.directions.values()}
        if len(dims) != 1:
            raise ValueError(f"layers disagree on the hidden size: {sorted(dims)}")

    # -- shape -----------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return list(self.directions)

    @property
    def hidden_size(self) -> int:
        return next(iter(self.directions.values())).shape[1]

    @property
    def positions(self) -> int:
        """Rows per layer: 1 for a direction, k for an ActAdd per-position vector."""
        return max(t.shape[0] for t in self.directions.values())

    @property
    def per_position(self) -> bool:
        return self.positions > 1

    def norm(self, layer: int) -> float:
        """Norm of the layer's vector (the largest row for per-position vectors)."""
        return float(self.directions[layer].norm(dim=-1).max())

    def relative_norm(self, layer: int) -> float | None:
        """Vector norm over the typical residual norm at that layer (None when unknown)."""
        residual = self.residual_norms.get(layer)
        return self.norm(layer) / residual if residual else None

    # -- arithmetic ------------------------------------------------------------------------
    def _combine(self, other: SteeringVector, sign: float) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        if other.hidden_size != self.hidden_size:
            raise ValueError(f"hidden sizes differ: {self.hidden_size} vs {other.hidden_size}")
        out = {layer: t.clone() for layer, t in self.directions.items()}
        for layer, t in other.directions.items():
            mine = out.get(layer)
            if mine is None:
                out[layer] = sign * t
                continue
            if (mine.shape[0] == 1) != (t.shape[0] == 1):
                raise ValueError(
                    f"layer {layer}: cannot add a per-position (ActAdd) vector and a single "
                    "direction; apply them together instead"
                )
            rows = max(mine.shape[0], t.shape[0])
            out[layer] = _pad_rows(mine, rows) + sign * _pad_rows(t, rows)
        norms = {**other.residual_norms, **self.residual_norms}
        return SteeringVector(out, norms)

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0)

    def __mul__(self, scale: float) -> SteeringVector:
        if not isinstance(scale, (int, float)):
            return NotImplemented
        return SteeringVector({l: t * float(scale) for l, t in self.directions.items()}, dict(self.residual_norms))

    __rmul__ = __mul__

    def __truediv__(self, scale: float) -> SteeringVector:
        if not isinstance(scale, (int, float)):
            return NotImplemented
        return self * (1.0 / scale)

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def normalized(self) -> SteeringVector:
        """Each layer scaled to unit norm (per row for per-position vectors)."""
        return SteeringVector(
            {l: t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12) for l, t in self.directions.items()},
            dict(self.residual_norms),
        )

    def cosine_similarity(self, other: SteeringVector) -> dict[int, float]:
        """Cosine similarity per shared layer (rows flattened, the shorter zero-padded)."""
        result = {}
        for layer in sorted(set(self.directions) & set(other.directions)):
            a, b = self.directions[layer], other.directions[layer]
            rows = max(a.shape[0], b.shape[0])
            result[layer] = float(
                torch.nn.functional.cosine_similarity(_pad_rows(a, rows).flatten(), _pad_rows(b, rows).flatten(), dim=0)
            )
        return result

    def mean_direction(self) -> SteeringVector:
        """Collapse per-position rows into one direction per layer (their mean)."""
        return SteeringVector({l: t.mean(0, keepdim=True) for l, t in self.directions.items()}, dict(self.residual_norms))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{l}: {tuple(t.shape)}" for l, t in self.directions.items())
        return f"SteeringVector({{{shapes}}})"


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    return torch.cat([t, t.new_zeros(rows - t.shape[0], t.shape[1])])
