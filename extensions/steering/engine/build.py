"""Building steering vectors from prompts: ActAdd (one aligned pair), mean difference and PCA (many pairs);
the methods that use them (engine/methods/prompts.py) pair a recipe's prompts up.

Every prompt is read with one shared sink token in front (the model's BOS, else EOS): on small models
the first position is an attention sink with a huge norm, so it is kept identical on both sides and
out of every vector. Positions counted below start after it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from .context import ModelContext
from .progress import Progress
from .record import StopForward, record_block_inputs
from .tokens import encode
from .validation import block_indices
from .vector import SteeringVector

PairMethod = Literal["mean", "pca"]  # how many pair differences become one direction
Reading = Literal["mean", "last"]
READINGS: tuple[str, ...] = ("mean", "last")


def space_token_id(ctx: ModelContext) -> int:
    ids = ctx.tokens(" ")
    if not ids:
        raise ValueError("the tokenizer cannot encode a space, needed to align ActAdd prompts")
    return int(ids[-1])


@torch.inference_mode()
def _block_inputs(ctx: ModelContext, indices: list[int], ids: list[list[int]], pad_id: int) -> dict[int, torch.Tensor]:
    """Block inputs (batch, seq, d) for right-padded ``ids``; padding sits after every real token."""
    width = max(len(row) for row in ids)
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in ids], device=ctx.device)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], device=input_ids.device)
    with record_block_inputs(ctx, indices, stop_early=True) as recorded:
        try:
            ctx.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        except StopForward:
            pass
    return {i: recorded[i].float() for i in indices}


def _norm_sums(hidden: dict[int, torch.Tensor], real: torch.Tensor) -> tuple[dict[int, float], int]:
    """Sum of the norms of the non-sink real positions per layer, and how many positions that is."""
    weights = real[:, 1:].float()
    return {i: float((h[:, 1:].norm(dim=-1) * weights).sum()) for i, h in hidden.items()}, int(weights.sum())


def _residual_norms(hidden: dict[int, torch.Tensor], real: torch.Tensor) -> dict[int, float]:
    """Mean norm of the non-sink real positions, per layer."""
    sums, count = _norm_sums(hidden, real)
    return {i: total / max(count, 1) for i, total in sums.items()}


def build_actadd(ctx: ModelContext, positive: str, negative: str, layers: Sequence[int]) -> SteeringVector:
    """ActAdd: per-position difference of one prompt pair, the shorter padded with spaces to align."""
    indices = block_indices(layers, ctx.num_layers)
    pos, neg = encode(ctx, positive), encode(ctx, negative)
    width = max(len(pos), len(neg))
    space = space_token_id(ctx)
    pos, neg = (row + [space] * (width - len(row)) for row in (pos, neg))
    hidden = _block_inputs(ctx, indices, [pos, neg], space)
    real = torch.ones(2, width, dtype=torch.bool)
    return SteeringVector(
        {i: h[0, 1:] - h[1, 1:] for i, h in hidden.items()},
        _residual_norms(hidden, real),
    )


def read_positions(hidden: torch.Tensor, lengths: torch.Tensor, reading: Reading, starts: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, d) summary of each prompt: the mean of its positions from ``starts`` (default: the first
    after the sink) to its end, or its last position."""
    if reading == "last":
        return hidden[torch.arange(hidden.shape[0]), lengths - 1]
    first = torch.ones_like(lengths) if starts is None else starts
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    weights = ((positions >= first[:, None]) & (positions < lengths[:, None])).float()
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1)


@dataclass(frozen=True)
class Tokens:
    """One side of a pair as token ids, read from position ``start`` on (1: everything after the sink)."""

    ids: list[int]
    start: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.start < len(self.ids):
            raise ValueError(f"the first position read ({self.start}) must lie after the sink and inside the {len(self.ids)} tokens")


def pair_differences(
    ctx: ModelContext,
    pairs: Sequence[tuple[str, str]],
    layers: Sequence[int],
    reading: Reading = "mean",
    batch_size: int = 32,
    progress: Progress | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
    """(n_pairs, d) positive-minus-negative summaries per layer, and the residual norms seen."""
    if not pairs:
        raise ValueError("give at least one positive/negative pair")
    encoded = [(Tokens(encode(ctx, pos)), Tokens(encode(ctx, neg))) for pos, neg in pairs]
    return token_differences(ctx, encoded, layers, reading, batch_size, progress)


def token_differences(
    ctx: ModelContext,
    pairs: Sequence[tuple[Tokens, Tokens]],
    layers: Sequence[int],
    reading: Reading = "mean",
    batch_size: int = 32,
    progress: Progress | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
    """What ``pair_differences`` gives, for pairs already tokenised, each side read from its own start.
    The residual norms are those of every non-sink position, read or not."""
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; choose one of {', '.join(READINGS)}")
    if not pairs:
        raise ValueError("give at least one positive/negative pair")
    indices = block_indices(layers, ctx.num_layers)
    sides = [side for pair in pairs for side in pair]  # pos0, neg0, pos1, neg1, ...
    summaries: dict[int, list[torch.Tensor]] = {i: [] for i in indices}
    norm_sums = {i: 0.0 for i in indices}
    positions = 0
    # Similar lengths together keep padding (wasted compute) small.
    order = sorted(range(len(sides)), key=lambda k: len(sides[k].ids))
    step = max(2, batch_size)
    for start in range(0, len(order), step):
        chunk = [sides[k] for k in order[start : start + step]]
        hidden = _block_inputs(ctx, indices, [side.ids for side in chunk], ctx.pad_id)
        device = next(iter(hidden.values())).device
        lengths = torch.tensor([len(side.ids) for side in chunk], device=device)
        starts = torch.tensor([side.start for side in chunk], device=device)
        real = torch.arange(hidden[indices[0]].shape[1], device=device) < lengths[:, None]
        sums, count = _norm_sums(hidden, real)
        positions += count
        for i, h in hidden.items():
            summaries[i].append(read_positions(h, lengths, reading, starts).cpu())
            norm_sums[i] += sums[i]
        if progress:
            progress(min(start + step, len(order)), len(order))
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    diffs = {}
    for i in indices:
        stacked = torch.cat(summaries[i])[inverse]
        diffs[i] = stacked[0::2] - stacked[1::2]
    return diffs, {i: s / max(positions, 1) for i, s in norm_sums.items()}


def first_component(diffs: torch.Tensor) -> torch.Tensor:
    """Uncentred first principal component of the differences, signed so positives project higher."""
    if diffs.shape[0] == 1:
        return diffs[0].clone()
    _, _, vh = torch.linalg.svd(diffs.double(), full_matrices=False)
    direction = vh[0]
    return (direction if (diffs.double() @ direction).mean() >= 0 else -direction).float()


def build_from_pairs(
    ctx: ModelContext,
    pairs: Sequence[tuple[str, str]],
    layers: Sequence[int],
    method: PairMethod = "mean",
    reading: Reading = "mean",
    batch_size: int = 32,
    progress: Progress | None = None,
) -> SteeringVector:
    """One direction per layer from many pairs: the mean difference or the first principal component."""
    _many_pairs(method)
    return from_differences(*pair_differences(ctx, pairs, layers, reading, batch_size, progress), method)


def _many_pairs(method: str) -> None:
    if method not in ("mean", "pca"):
        raise ValueError(f"method {method!r} does not take many pairs; choose mean or pca")


def from_differences(diffs: dict[int, torch.Tensor], norms: dict[int, float], method: PairMethod = "mean") -> SteeringVector:
    """The vector of pair differences (``pair_differences``/``token_differences``): per layer, the mean
    difference or the first principal component."""
    _many_pairs(method)
    combine = (lambda d: d.mean(0)) if method == "mean" else first_component
    # Scaled to the typical residual norm, so strength reads as a share of it (0.3 adds 30%)
    # and one default strength fits any pair set, layer and model.
    return SteeringVector({i: unit(combine(d)) * norms[i] for i, d in diffs.items()}, norms)


def unit(direction: torch.Tensor) -> torch.Tensor:
    norm = direction.norm()
    if not norm > 0:
        raise ValueError("the positive and negative prompts give the same activations: nothing to steer by")
    return direction / norm
