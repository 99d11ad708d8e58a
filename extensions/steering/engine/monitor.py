"""A reading of each reply (a monitor): how strongly a reply carries a preset's direction.

The reading of a reply for one vector: the mean, over the reply's tokens, of the projection of the
residual stream entering the vector's first layer on its direction there (an ActAdd vector's rows are
averaged first), measured in the metric of the unsteered spread and expressed as a z-score against it.

The unsteered spread (the baseline) is taken from the calibration probe's unsteered rollouts
(engine/calibration.py: its neutral chat messages and text openings, each continued greedily): per
hidden dimension the variance ``var`` of the block input over the rollout tokens. The read-out vector is
``w = unit(d / var)`` for the unit direction ``d`` (the linear discriminant of ``d`` under a diagonal
covariance), each token's reading is ``w · h``, and a reply's is ``z = (mean_t w · h_t - mean) / std``
with the mean and standard deviation of ``w · h`` over the same rollout tokens. So ``love +1.8σ`` says
the reply's average token lies 1.8 unsteered standard deviations further along ``love``.

Why the metric and not the plain projection ``d · h``: residual streams have a few dimensions that are
huge and vary tenfold from token to token (on SmolLM2 one dimension holds 96 % of ``love``'s norm at
layer 6 and is ~50 on most tokens, ~550 on " the"); the plain projection then counts which tokens a
reply has, not what it says (Spearman 0.18 with the reply's sentiment on a pilot of 40 completions of
"I hate you because" against 0.57 for ``w``; docs/monitor.md has the full benchmark).

Where it is read: a forward pre-hook on the vector's first block, put in front of every other hook
there (``prepend``), so it sees the block's input before any steering addition at that block; and
steering at that block or later ones never reaches it (no earlier block sees their additions, at any
position). So the number measures what the reply's tokens carry, not the vector that was added. When
another preset steers an EARLIER layer, its addition, carried on by the blocks in between, is part of
what is read: the reading then also moves with that preset's push along this direction.

Which tokens: a recording (``Monitor.record``, hooks around a generate call) projects each position
the model computes after the prompt as it is computed, at the cost of one small matrix product per
step and no extra pass. The model reads back every generated token but the last (never fed in; for a
reply that ended by itself, the end-of-turn token), so a recorded reading covers those; ``Monitor.read``
reads given tokens after a prompt in one pass, and ``read(prompt, reply[:-1])`` equals the recording.

Baselines are made once per model and direction (the probe's greedy rollouts, shared with calibration,
and one pass), kept in memory by the model's fingerprint and the direction's key, and on disk
(safetensors) when a folder is given. Everything is deterministic.
"""
from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .apply import Gate, on_thread
from .calibration import VERSION as PROBE_VERSION
from .calibration import Probe
from .context import ModelContext
from .files import atomic_write
from .hooks import block_input
from .record import StopForward, record_block_inputs
from .vector import SteeringVector

VERSION = 1  # what a baseline is (statistic, tokens read): part of its cache key
MAX_BASELINE_FILE = 1 << 20  # bytes; a baseline file is one hidden-size vector and three numbers
_BASELINES: dict[tuple[str, str], Baseline] = {}
_BASELINES_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class Gauge:
    """One direction to read: a unit vector (float32, CPU) at the block whose input is read."""

    name: str
    layer: int
    direction: torch.Tensor

    @classmethod
    def of(cls, name: str, vector: SteeringVector) -> Gauge:
        """The gauge of ``vector``: its first layer, its (row-averaged) direction there, normalised."""
        layer = vector.layers[0]
        direction = vector.directions[layer].mean(0)
        norm = float(direction.norm())
        if not norm > 0:
            raise ValueError(f"{name}: the vector is zero at layer {layer}; it has no direction to read")
        return cls(name, layer, direction / norm)

    @property
    def key(self) -> str:
        """Identifies the layer and direction (not the name): keys the baseline."""
        digest = hashlib.sha256(f"{self.layer}:{VERSION}:{PROBE_VERSION}:".encode())
        digest.update(self.direction.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Baseline:
    """An unsteered reply along one gauge: the read-out vector ``unit(direction / var)`` and the mean and
    standard deviation of its per-token reading, over ``tokens`` rollout tokens of the probe."""

    readout: torch.Tensor = field(repr=False)  # (d,) float32 on the CPU, unit norm
    mean: float
    std: float
    tokens: int


@dataclass(frozen=True)
class Reading:
    """How strongly one reply carries one direction."""

    name: str
    layer: int
    z: float  # (projection - baseline mean) / baseline std; NaN when no token was read
    projection: float  # mean per-token reading w · h (w the unit read-out vector), in the residual's units
    tokens: int  # reply tokens read

    def label(self) -> str:
        """``love +1.8σ`` (``love: no reply tokens`` when none was read)."""
        return f"{self.name} {self.z:+.1f}σ" if self.tokens else f"{self.name}: no reply tokens"

    def to_dict(self) -> dict:
        data = asdict(self)
        if not self.tokens:  # JSON has no NaN
            data["z"] = data["projection"] = None
        return data


def labels(readings: Sequence[Reading]) -> str:
    """``love +1.8σ, kind −0.2σ``: a line for people."""
    return ", ".join(reading.label() for reading in readings)


class Monitor:
    """Gauges with their baselines on one model: ``record`` around a generate call, or ``read`` tokens."""

    def __init__(self, ctx: ModelContext, gauges: Sequence[Gauge], baselines: Sequence[Baseline]):
        if not gauges:
            raise ValueError("nothing to read: give at least one vector")
        if len(gauges) != len(baselines):
            raise ValueError("one baseline per gauge")
        for gauge in gauges:
            if ctx.hidden_size is not None and gauge.direction.shape[0] != ctx.hidden_size:
                raise ValueError(f"{gauge.name}: the vector has hidden size {gauge.direction.shape[0]}, the model {ctx.hidden_size}")
            if not 0 <= gauge.layer < ctx.num_layers:
                raise ValueError(f"{gauge.name}: layer {gauge.layer} is out of range (the model has {ctx.num_layers} layers)")
        self.ctx = ctx
        self.gauges = list(gauges)
        self.baselines = list(baselines)
        # per layer read: the columns of the gauges there and their (d, g) matrix of directions
        self._columns: dict[int, list[int]] = {}
        for index, gauge in enumerate(self.gauges):
            self._columns.setdefault(gauge.layer, []).append(index)
        self._matrices = {layer: torch.stack([self.baselines[i].readout for i in cols], 1) for layer, cols in self._columns.items()}

    @classmethod
    def of(cls, ctx: ModelContext, vectors: Mapping[str, SteeringVector], cache_dir: Path | None = None) -> Monitor:
        """A monitor of ``vectors`` (name -> vector) on ``ctx``'s model; baselines made once, then cached."""
        gauges = [Gauge.of(name, vector) for name, vector in vectors.items()]
        return cls(ctx, gauges, baselines(ctx, gauges, cache_dir))

    @property
    def layers(self) -> list[int]:
        return sorted(self._columns)

    def project(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """(..., g) readings of (..., d) block inputs at ``layer`` along the gauges read there (float32)."""
        matrix = self._matrices[layer]
        if matrix.device != hidden.device:
            matrix = self._matrices[layer] = matrix.to(hidden.device)
        return hidden.float() @ matrix

    def readings(self, projections: torch.Tensor) -> list[Reading]:
        """Readings of one reply from its (tokens, gauges) projections, gauges in this monitor's order."""
        count = int(projections.shape[0])
        out = []
        for index, (gauge, base) in enumerate(zip(self.gauges, self.baselines)):
            mean = float(projections[:, index].double().mean()) if count else math.nan
            out.append(Reading(gauge.name, gauge.layer, (mean - base.mean) / base.std, mean, count))
        return out

    def _ordered(self, by_layer: dict[int, torch.Tensor]) -> torch.Tensor:
        """(..., tokens, g) from per-layer (..., tokens, g_layer) projections."""
        parts = torch.cat([by_layer[layer] for layer in self.layers], -1)
        order = [i for layer in self.layers for i in self._columns[layer]]
        return parts[..., torch.tensor(order).argsort()]

    @torch.inference_mode()
    def read(self, prompt: Sequence[int], reply: Sequence[int]) -> list[Reading]:
        """Readings of ``reply`` (token ids) after ``prompt`` (token ids), by one pass.

        The model runs as it is now: steering hooks on it (of this thread) apply, but only those at
        layers before a gauge's change what it reads (as while generating).
        """
        prompt, reply = list(prompt), list(reply)
        if not prompt:
            raise ValueError("reading a reply needs its prompt (at least one token)")
        if not reply:
            return self.readings(torch.zeros(0, len(self.gauges)))
        ids = torch.tensor([prompt + reply], device=self.ctx.device)
        with record_block_inputs(self.ctx, self.layers, stop_early=True, before_hooks=True) as recorded:
            try:
                self.ctx.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            except StopForward:
                pass
        by_layer = {layer: self.project(layer, recorded[layer][0, len(prompt):]) for layer in self.layers}
        return self.readings(self._ordered(by_layer).cpu())

    def record(self, gate: Gate | None = None) -> Recording:
        """Hooks that project each position computed after the prompt; see Recording."""
        return Recording(self, gate or on_thread())


class Recording:
    """Projects, at each gauge's block input, every position a generate call computes after its prompt.

    The first forward it sees is the prompt (not read); each later one adds its new positions (a
    cache-less step re-reads the sequence: only its last position is new). Forwards the ``gate`` does
    not let through (by default those of other threads) are not read. Use as a context manager, or
    call ``remove``; then ``readings()``.
    """

    def __init__(self, monitor: Monitor, gate: Gate):
        self.monitor = monitor
        self.gate = gate
        self._seen: dict[int, int] = {}
        self._steps: dict[int, list[torch.Tensor]] = {layer: [] for layer in monitor.layers}
        self._handles = []
        try:
            for layer in monitor.layers:
                block = monitor.ctx.layers.blocks[layer]
                # in front of every other hook: the input before any steering addition at this block
                self._handles.append(block.register_forward_pre_hook(self._hook(layer), with_kwargs=True, prepend=True))
        except BaseException:
            self.remove()
            raise

    def _hook(self, layer: int):
        def hook(module, args, kwargs):
            if not self.gate():
                return None
            hidden, _ = block_input(module, args, kwargs)
            length = hidden.shape[1]
            seen = self._seen.get(layer)
            if seen is None:  # the prompt
                self._seen[layer] = length
                return None
            new = 1 if length == seen + 1 else length  # a cache-less step re-reads all; a cached one is all new
            self._seen[layer] = seen + new
            self._steps[layer].append(self.monitor.project(layer, hidden[:, -new:].detach()))
            return None

        return hook

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    @property
    def positions(self) -> int:
        """Positions read after the prompt so far (per row)."""
        steps = self._steps[self.monitor.layers[0]]
        return sum(step.shape[1] for step in steps)

    def readings(self, row: int = 0, tokens: int | None = None) -> list[Reading]:
        """Readings of batch row ``row`` over its first ``tokens`` positions read (default all: a row
        that stopped early while others went on was fed padding after its end; count only its own)."""
        if not self.positions:
            return self.monitor.readings(torch.zeros(0, len(self.monitor.gauges)))
        by_layer = {layer: torch.cat(steps, 1)[row] for layer, steps in self._steps.items()}
        projections = self.monitor._ordered(by_layer).cpu()
        return self.monitor.readings(projections if tokens is None else projections[:tokens])


# -- baselines -------------------------------------------------------------------------------------------
def baselines(ctx: ModelContext, gauges: Sequence[Gauge], cache_dir: Path | None = None) -> list[Baseline]:
    """The baseline of each gauge on ``ctx``'s model: from memory, else from ``cache_dir``, else measured
    (all missing ones in one pass) and kept in both."""
    found: dict[str, Baseline] = {}
    missing = []
    for gauge in gauges:
        key = (ctx.fingerprint, gauge.key)
        with _BASELINES_LOCK:
            known = _BASELINES.get(key)
        path = _baseline_path(cache_dir, ctx, gauge) if cache_dir is not None else None
        if known is None and path is not None:
            known = _load(path, gauge.direction.shape[0])
        elif known is not None and path is not None and not path.is_file():
            _save(path, known)
        if known is None:
            missing.append(gauge)
        else:
            found[gauge.key] = known
    if missing:
        for gauge, measured in zip(missing, _measure(ctx, missing)):
            found[gauge.key] = measured
            if cache_dir is not None:
                _save(_baseline_path(cache_dir, ctx, gauge), measured)
    with _BASELINES_LOCK:
        for gauge in gauges:
            _BASELINES[(ctx.fingerprint, gauge.key)] = found[gauge.key]
    return [found[gauge.key] for gauge in gauges]


def cached_baselines() -> int:
    """How many baselines are kept in memory (for tests and diagnostics)."""
    with _BASELINES_LOCK:
        return len(_BASELINES)


@torch.inference_mode()
def _measure(ctx: ModelContext, gauges: Sequence[Gauge]) -> list[Baseline]:
    probe = Probe.of(ctx)
    layers = sorted({gauge.layer for gauge in gauges})
    ids, mask = probe.ids.to(ctx.device), probe.mask.to(ctx.device)
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)  # as generate numbers left-padded rows
    with record_block_inputs(ctx, layers, stop_early=True) as recorded:
        try:
            ctx.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        except StopForward:
            pass
    rollouts = {layer: recorded[layer][:, -probe.length:].flatten(0, 1).cpu().double() for layer in layers}
    variances = {layer: tokens.var(0, unbiased=False).clamp_min(1e-12) for layer, tokens in rollouts.items()}
    out = []
    for gauge in gauges:
        weights = gauge.direction.double() / variances[gauge.layer]
        readout = weights / weights.norm()
        values = rollouts[gauge.layer] @ readout
        std = float(values.std(unbiased=False))
        out.append(Baseline(readout.float(), float(values.mean()), max(std, 1e-6), int(values.numel())))
    return out


def _baseline_path(folder: Path, ctx: ModelContext, gauge: Gauge) -> Path:
    return Path(folder) / f"{ctx.fingerprint}-{gauge.key}.safetensors"


def _load(path: Path, hidden: int) -> Baseline | None:
    """A cached baseline, or None (none yet, or damaged: it is measured again)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_BASELINE_FILE:
            return None
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
            readout = handle.get_tensor("readout").float()
        found = Baseline(readout, float(meta["mean"]), float(meta["std"]), int(meta["tokens"]))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        return None
    sound = readout.shape == (hidden,) and bool(torch.isfinite(readout).all()) and math.isfinite(found.mean)
    return found if sound and math.isfinite(found.std) and found.std > 0 and found.tokens > 0 else None


def _save(path: Path, baseline: Baseline) -> None:
    meta = {"mean": repr(baseline.mean), "std": repr(baseline.std), "tokens": str(baseline.tokens)}
    try:
        atomic_write(path, lambda tmp: save_file({"readout": baseline.readout.contiguous()}, str(tmp), metadata=meta))
    except OSError:  # a read-only folder: the baseline stays in memory
        pass
