"""Iso-KL calibration: the strength at which a vector spends a fixed distribution-shift budget, and the
layer where that budget buys the most movement along the contrast.

The probe: a handful of short neutral chat messages (in the model's own chat template) and two raw-text
openings, all of our own writing, each continued once by the unsteered model (greedy, ROLLOUT_TOKENS
tokens). A multiplier ``s`` of the vector is measured by one teacher-forced pass of those rollouts with
the vector applied through the engine's own apply path (``steer`` with the recipe's mode, so what is
measured is what a chat gets): the per-token KL(steered || unsteered) of the next-token distributions
at the rollout positions. ``s`` is bracketed and then bisected on a log scale (a secant step in
log KL / log s, kept inside the bracket) until the mean KL lies within TOLERANCE of the budget.

Why the mean and not a high quantile: the cross-entropy under the unsteered model of a text drawn from
the steered one is its entropy plus KL(steered || unsteered), per token; so the mean KL is, to first
order, the log of the perplexity ratio the budget is chosen by (a quantile bounds the worst tokens but
says nothing of the others, and varies more with the few positions where the model is unsure).

KL_BUDGET (nats per token), chosen by ``benchmarks/calibration.py`` on the shipped prompt presets and
contrasts of our own (results in benchmarks/results/calibration.json) and checked at the auto layer on
the tuning set (benchmarks/tuning/tune_expansion.py --budget): see KL_BUDGET below.

Layer choice (``layers: auto``): the vector is built at CANDIDATE_DEPTHS (20-80 % of depth) at once;
each layer's vector is measured once at a multiplier adding 30 % of its residual norm and scored by how far it moves the next-token
distributions toward those the model has when the positive text is in its prompt (a system message, or
the text before a raw opening) and away from those with the negative text:
``effect = E_steered[log p+ - log p-] - E_unsteered[log p+ - log p-]`` per token (nats), measured on the
same rollout positions, scaled to the budget by sqrt(budget / KL) (effect grows about linearly with the
strength, KL about quadratically). All candidates spend the same KL, so the best score is the most
movement along the contrast per unit of KL. The winner is then calibrated to the tolerance.
"""
from __future__ import annotations

import math
import time
import weakref
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .apply import Steer, steer
from .context import ModelContext
from .metrics import next_token_logprobs
from .tokens import left_pad, prompt_ids
from .vector import SteeringVector

# Every shipped prompt preset and contrast of ours stays within 2x completion perplexity at its own fixed
# layers up to 0.4 (french reaches 3.2x at 0.5); at the layer a new preset gets (layers auto, mostly 80 %
# of depth) 0.35 takes the tuning set's pirate pair to 2.27x and passes no more tuning contrasts than 0.25
# (3 of 12 either way; results/tune_expansion.json "budget 0.35, ..." against "budget 0.25, ...").
# In chat form (greedy replies to the tuning set's chat messages, benchmarks/chat_dose.py; docs/chat-dose.md) a
# larger budget moves more replies but leaves the 2x bound: 0.5 takes Football - Knitting's replies to 2.5x,
# 0.8 Grateful - Bitter's to 2.1x; and the chat rows of the probe spend about what its raw rows do (0.16-0.34
# nats each at 0.25), so calibrating on chat rows alone would not change the strength either.
KL_BUDGET = 0.25
VERSION = 1  # the probe, the rollout and the statistic: part of a calibrated recipe's tensor key
TOLERANCE = 0.1  # the mean KL reached lies within ±10 % of the budget
MAX_STEPS = 12
ROLLOUT_TOKENS = 16
# 20-80 %: on the tuning set (benchmarks/results/tune_expansion.json, "candidates 20-80 %, n 12 x 3" against
# "candidates 10-60 %, n 12 x 3") 80 % is where a short topic pair moves at all (football 50 %, mountains 47 %
# of replies against 3 % and 0 %) and no other kind moved less but moods (mean shift 0.09 against 0.15);
# 10 % was never chosen.
CANDIDATE_DEPTHS: tuple[str, ...] = ("20%", "30%", "40%", "50%", "60%", "70%", "80%")
MAX_RELATIVE_NORM = 8.0  # a vector that needs more than 8x the residual norm cannot reach the budget
START_RELATIVE_NORM = 0.3  # the first multiplier tried adds 30 % of the residual norm (mean/pca's old default)
CHAT_MESSAGES: tuple[str, ...] = (
    "How should I spend a free afternoon?",
    "Tell me about your morning.",
    "I have a job interview tomorrow. Any advice?",
    "Write a few lines about a train journey.",
    "What is a good way to remember new words?",
    "My friend forgot my birthday. What should I say to her?",
)
TEXT_OPENINGS: tuple[str, ...] = (
    "The letter arrived on a Tuesday, and",
    "When we reached the top of the hill, we",
)
_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
CONTRAST_TEXTS = 4  # the first few positive (negative) prompts stand for the side in the effect's prompts


@dataclass(frozen=True)
class Calibration:
    """What calibrating a vector found: the multiplier that meets the budget, the KL it reached, how many
    passes it took and how long, and the layers of the vector (chosen ones for ``layers: auto``)."""

    scale: float
    kl: float
    budget: float
    steps: int
    seconds: float
    layers: tuple[int, ...]
    scores: dict[int, float] = field(default_factory=dict)  # layer -> effect at the budget (layers: auto)

    def metadata(self) -> dict[str, str]:
        """The cache file's safetensors metadata (strings only)."""
        data = {"calibration_scale": f"{self.scale:.6g}", "calibration_budget": f"{self.budget:g}",
                "calibration_kl": f"{self.kl:.4g}", "calibration_steps": str(self.steps),
                "calibration_seconds": f"{self.seconds:.2f}", "calibration_version": str(VERSION),
                "layers_chosen": ",".join(map(str, self.layers))}
        if self.scores:
            data["layer_scores"] = ",".join(f"{layer}:{score:.4g}" for layer, score in self.scores.items())
        return data


@dataclass
class _Point:
    scale: float
    kl: float
    logprobs: torch.Tensor  # (rows, positions, vocab) of the steered pass


class Probe:
    """The calibration prompts' unsteered rollouts on one model, made once (``Probe.of``) and measured at any steering."""

    @classmethod
    def of(cls, ctx: ModelContext) -> Probe:
        """The probe of ``ctx``'s model, made at its first calibration and kept while the context lives."""
        if ctx not in _PROBES:
            _PROBES[ctx] = cls(ctx)
        return _PROBES[ctx]

    def __init__(self, ctx: ModelContext, rollout_tokens: int = ROLLOUT_TOKENS):
        self._ctx = weakref.ref(ctx)  # a cached probe must not keep its model alive
        self.length = rollout_tokens
        chat = bool(getattr(ctx.tokenizer, "chat_template", None))
        self.messages = list(CHAT_MESSAGES) if chat else []
        self.prompts = [prompt_ids(ctx, m, chat=True) for m in self.messages] + [prompt_ids(ctx, t) for t in TEXT_OPENINGS]
        ids, mask = left_pad(self.prompts, ctx.pad_id)
        with torch.inference_mode():
            out = ctx.model.generate(input_ids=ids.to(ctx.device), attention_mask=mask.to(ctx.device), do_sample=False,
                                     max_new_tokens=rollout_tokens, min_new_tokens=rollout_tokens, pad_token_id=ctx.pad_id)
        self.rollouts = out[:, ids.shape[1]:].cpu()
        self.ids = torch.cat([ids, self.rollouts], 1)
        self.mask = torch.cat([mask, torch.ones_like(self.rollouts)], 1)
        self.base = self._logprobs(self.ids, self.mask, [], "all")

    @property
    def ctx(self) -> ModelContext:
        ctx = self._ctx()
        if ctx is None:
            raise RuntimeError("the model this probe was made for is gone")
        return ctx

    # -- passes --------------------------------------------------------------------------------------
    def _logprobs(self, ids: torch.Tensor, mask: torch.Tensor, steers: Sequence[Steer], mode: str) -> torch.Tensor:
        """Log next-token distributions at the last prompt position and the rollout's (all but its last)."""
        ctx = self.ctx
        ids, mask = ids.to(ctx.device), mask.to(ctx.device)
        with torch.inference_mode(), (steer(ctx, steers) if steers else nullcontext()):
            if mode != "generated":
                return next_token_logprobs(ctx, ids, mask, self.length).cpu()
            # the rollout is steered as generated tokens after a prompt pass
            positions = (mask.long().cumsum(-1) - 1).clamp_min(0)  # as generate numbers left-padded rows
            cut = ids.shape[1] - self.length
            first = ctx.model(input_ids=ids[:, :cut], attention_mask=mask[:, :cut], position_ids=positions[:, :cut], use_cache=True)
            rest = ctx.model(input_ids=ids[:, cut:], attention_mask=mask, position_ids=positions[:, cut:],
                             past_key_values=first.past_key_values, use_cache=True)
            logits = torch.cat([first.logits[:, -1:], rest.logits[:, :-1]], 1)
        return torch.log_softmax(logits.float(), -1).cpu()

    def measure(self, vector: SteeringVector, scale: float, mode: str) -> _Point:
        """The mean per-token KL(steered || unsteered) over the rollouts with ``vector`` applied at ``scale``."""
        rows = self._rows_for(vector, mode)
        logprobs = self._logprobs(self.ids[rows], self.mask[rows], [Steer(vector * scale, 1.0, mode)], mode)
        base = self.base[rows]
        kl = (logprobs.exp() * (logprobs - base)).sum(-1)
        return _Point(scale, float(kl.mean()), logprobs)

    def _rows_for(self, vector: SteeringVector, mode: str) -> list[int]:
        """Every row, but for actadd rows only those whose prompt is longer than the vector's rows (so the
        rollout itself is never steered, as in a chat)."""
        if mode != "actadd":
            return list(range(len(self.prompts)))
        rows = [i for i, p in enumerate(self.prompts) if len(p) > vector.positions]
        if not rows:
            raise ValueError(f"this actadd vector has {vector.positions} rows, longer than every calibration prompt; use a shorter pair or mode all")
        return rows

    def told(self, texts: Sequence[str]) -> torch.Tensor:
        """Log next-token distributions at the rollout positions with ``texts`` in the prompt (a chat's system
        message, the line before a raw opening): the model told one side of a contrast."""
        text = "\n".join(t.strip()[:200] for t in texts[:CONTRAST_TEXTS])
        rows = [prompt_ids(self.ctx, m, chat=True, system=text) for m in self.messages]
        rows += [prompt_ids(self.ctx, f"{text}\n\n{t}") for t in TEXT_OPENINGS]
        ids, mask = left_pad([p + r.tolist() for p, r in zip(rows, self.rollouts)], self.ctx.pad_id)
        return self._logprobs(ids, mask, [], "all")

    def contrast(self, positive: Sequence[str], negative: Sequence[str]) -> torch.Tensor:
        """log p+ - log p- at the rollout positions: the model with the positive text in its prompt against the negative."""
        return self.told(positive) - self.told(negative)


# -- the search ------------------------------------------------------------------------------------------
def _start(vector: SteeringVector) -> float:
    relative = [r for r in (vector.relative_norm(layer) for layer in vector.layers) if r]
    return START_RELATIVE_NORM / max(relative) if relative else 1.0


def _max_scale(vector: SteeringVector) -> float:
    relative = [r for r in (vector.relative_norm(layer) for layer in vector.layers) if r]
    return MAX_RELATIVE_NORM / max(relative) if relative else 100.0


def _met(point: _Point, budget: float) -> bool:
    return abs(point.kl - budget) <= TOLERANCE * budget


def _next_scale(points: list[_Point], budget: float, ceiling: float) -> float:
    """Bracket the budget (growing or shrinking the multiplier by the local log-log slope, at most 10x a
    step), then bisect the bracket on a log scale with a secant step kept away from its ends."""
    below = [p for p in points if p.kl < budget]
    above = [p for p in points if p.kl > budget]
    if below and above:
        lo, hi = max(below, key=lambda p: p.scale), min(above, key=lambda p: p.scale)
        a, b = math.log(lo.scale), math.log(hi.scale)
        ka, kb = math.log(max(lo.kl, 1e-12)), math.log(hi.kl)
        guess = a + (math.log(budget) - ka) * (b - a) / (kb - ka) if kb > ka else (a + b) / 2
        margin = 0.1 * (b - a)
        return math.exp(min(max(guess, a + margin), b - margin))
    last = points[-1]
    slope = 2.0  # KL grows about as the square of a small multiplier
    if len(points) >= 2:
        prev = points[-2]
        if prev.scale != last.scale and prev.kl > 0 and last.kl > 0:
            measured = math.log(last.kl / prev.kl) / math.log(last.scale / prev.scale)
            if measured > 0.5:
                slope = measured
    step = (math.log(budget) - math.log(max(last.kl, 1e-12))) / slope
    return min(ceiling, last.scale * math.exp(min(max(step, -math.log(10)), math.log(10))))


def _search(probe: Probe, vector: SteeringVector, mode: str, budget: float, points: list[_Point], max_steps: int) -> list[_Point]:
    """Measure until a point meets the budget or ``max_steps`` passes were made (points are kept)."""
    ceiling = _max_scale(vector)
    while len(points) < max_steps and not any(_met(p, budget) for p in points):
        scale = _start(vector) if not points else _next_scale(points, budget, ceiling)
        if points and scale >= ceiling and points[-1].scale >= ceiling:
            break  # even the largest multiplier stays under the budget
        points.append(probe.measure(vector, scale, mode))
    return points


def _closest(points: list[_Point], budget: float) -> _Point:
    return min(points, key=lambda p: abs(math.log(max(p.kl, 1e-12) / budget)))


def _budget(budget: float | None) -> float:
    budget = KL_BUDGET if budget is None else budget
    if not budget > 0:
        raise ValueError(f"the KL budget must be positive, got {budget}")
    return budget


def calibrate(ctx: ModelContext, vector: SteeringVector, mode: str = "all", budget: float | None = None,
              probe: Probe | None = None) -> Calibration:
    """The multiplier of ``vector`` whose mean per-token KL on the probe meets ``budget`` (default KL_BUDGET)
    within TOLERANCE, or the nearest it came (a vector too weak even at MAX_RELATIVE_NORM)."""
    budget = _budget(budget)
    began = time.perf_counter()
    probe = probe or Probe.of(ctx)
    points = _search(probe, vector, mode, budget, [], MAX_STEPS)
    best = _closest(points, budget)
    return Calibration(best.scale, best.kl, budget, len(points), time.perf_counter() - began, tuple(vector.layers))


def single_layer(vector: SteeringVector, layer: int) -> SteeringVector:
    norms = {layer: vector.residual_norms[layer]} if layer in vector.residual_norms else {}
    return SteeringVector({layer: vector.directions[layer]}, norms)


def choose_layer(ctx: ModelContext, vector: SteeringVector, positive: Sequence[str], negative: Sequence[str],
                 mode: str = "all", budget: float | None = None, probe: Probe | None = None) -> tuple[SteeringVector, Calibration]:
    """Of ``vector``'s layers (one direction each, built at the candidates), the one that moves the model
    furthest along the contrast per unit of KL: its single-layer vector (uncalibrated) and its calibration."""
    budget = _budget(budget)
    began = time.perf_counter()
    probe = probe or Probe.of(ctx)
    contrast = probe.contrast(positive, negative)
    base_shift = (probe.base.exp() * contrast).sum(-1)
    tried: dict[int, list[_Point]] = {}
    scores: dict[int, float] = {}
    for layer in vector.layers:
        candidate = single_layer(vector, layer)
        points = _search(probe, candidate, mode, budget, [], 1)
        point = _closest(points, budget)
        rows = probe._rows_for(candidate, mode)
        shift = (point.logprobs.exp() * contrast[rows]).sum(-1) - base_shift[rows]
        scores[layer] = float(shift.mean()) * math.sqrt(budget / max(point.kl, 1e-12))
        tried[layer] = points
    chosen = max(scores, key=scores.get)
    winner = single_layer(vector, chosen)
    points = _search(probe, winner, mode, budget, tried[chosen], MAX_STEPS)
    best = _closest(points, budget)
    steps = sum(len(p) for p in tried.values()) + len(points) - len(tried[chosen])
    return winner, Calibration(best.scale, best.kl, budget, steps, time.perf_counter() - began, (chosen,), scores)
