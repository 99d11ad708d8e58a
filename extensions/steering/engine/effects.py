"""Measuring an effect: completions sampled steered and unsteered from the same seeds, scored by a metric,
with the fluency cost beside it (the ActAdd paper's: the perplexity of the completions under the
unsteered model, steered over unsteered). The tab's sweep and every benchmark measure through here.

    meter = EffectMeter(ctx, Sampling(), n=8, seed=0)
    effect = meter.measure([prompt_ids(ctx, p) for p in prompts], [Steer(vector, 0.35, "all")])
    effect.scores(metric("sentiment").score), effect.perplexity_ratio
"""
from __future__ import annotations

import statistics
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .apply import Steer, steer
from .context import ModelContext
from .generation import Sampling, sample_batch
from .metrics import mean, next_token_logits, perplexity
from .tokens import left_pad
from .vector import SteeringVector

Score = Callable[[str], float]


@dataclass(frozen=True)
class Samples:
    """Completions, and the perplexity of each under the unsteered model (empty when not asked for)."""

    texts: tuple[str, ...] = ()
    perplexities: tuple[float, ...] = ()

    def __add__(self, other: Samples) -> Samples:
        return Samples(self.texts + other.texts, self.perplexities + other.perplexities)

    def score(self, score: Score) -> float:
        """The mean score of the completions (nan when there are none)."""
        return mean([score(text) for text in self.texts])

    @property
    def perplexity(self) -> float:
        """The median perplexity; completions with no tokens to read (nan) are left out."""
        found = [p for p in self.perplexities if p == p]
        return statistics.median(found) if found else float("nan")


@dataclass(frozen=True)
class Effect:
    """What steering did to the completions of the same prompts from the same seeds."""

    unsteered: Samples
    steered: Samples

    def scores(self, score: Score) -> tuple[float, float]:
        """(unsteered, steered) mean score."""
        return self.unsteered.score(score), self.steered.score(score)

    @property
    def perplexity_ratio(self) -> float:
        """The fluency cost: median perplexity of the steered completions over the unsteered ones'."""
        return self.steered.perplexity / self.unsteered.perplexity


def sample(ctx: ModelContext, ids: Sequence[int], steers: Sequence[Steer], n: int, seed: int, sampling: Sampling,
           reference: Sequence[int] | None = None, fluency: bool = True) -> Samples:
    """``n`` completions of ``ids`` in one batch from ``seed`` under ``steers`` (none: unsteered). With
    ``fluency``, each one's perplexity under the unsteered model after ``reference`` (default ``ids``:
    a completion of a prompt given a system message is read after the plain prompt when told so)."""
    with steer(ctx, steers) if steers else nullcontext():
        texts = sample_batch(ctx, ids, n, seed, sampling)
    after = ids if reference is None else reference
    return Samples(tuple(texts), tuple(perplexity(ctx, after, text) for text in texts) if fluency else ())


class EffectMeter:
    """Same-seed steered and unsteered completions of prompts: ``n`` per prompt from ``seed``, each
    prompt's unsteered ones sampled once and kept for every steering measured after."""

    def __init__(self, ctx: ModelContext, sampling: Sampling, n: int, seed: int = 0):
        self.ctx, self.sampling, self.n, self.seed = ctx, sampling, n, seed
        self._unsteered: dict[tuple[int, ...], Samples] = {}

    def unsteered(self, ids: Sequence[int]) -> Samples:
        key = tuple(ids)
        if key not in self._unsteered:
            self._unsteered[key] = sample(self.ctx, ids, (), self.n, self.seed, self.sampling)
        return self._unsteered[key]

    def steered(self, ids: Sequence[int], steers: Sequence[Steer], given: Sequence[int] | None = None) -> Samples:
        """Completions of ``given`` (default ``ids``) under ``steers``, read after ``ids`` for fluency."""
        return sample(self.ctx, ids if given is None else given, steers, self.n, self.seed, self.sampling, reference=ids)

    def measure(self, prompts: Sequence[Sequence[int]], steers: Sequence[Steer],
                given: Sequence[Sequence[int]] | None = None) -> Effect:
        """The effect of ``steers`` over ``prompts`` (token ids); ``given``: what the steered side is given
        instead, prompt by prompt (the prompt with a system message, for the model told in words)."""
        if given is not None and len(given) != len(prompts):
            raise ValueError(f"given has {len(given)} prompts for {len(prompts)}")
        unsteered, steered = Samples(), Samples()
        for i, ids in enumerate(prompts):
            unsteered += self.unsteered(ids)
            steered += self.steered(ids, steers, given[i] if given is not None else None)
        return Effect(unsteered, steered)


@torch.inference_mode()
def sample_padded(ctx: ModelContext, prompts: Sequence[Sequence[int]], steers: Sequence[Steer], n: int, seed: int,
                  sampling: Sampling) -> Samples:
    """``n`` completions of every prompt in ONE left-padded batch from ``seed`` (faster than a batch per prompt,
    other samples than ``sample``), each completion's perplexity under the unsteered model read on the
    generated tokens themselves, up to and including the first end of text."""
    model, tokenizer = ctx.model, ctx.tokenizer
    rows = [list(p) for p in prompts for _ in range(n)]
    ids, mask = left_pad(rows, ctx.pad_id, ctx.device)
    torch.manual_seed(seed)
    with steer(ctx, steers) if steers else nullcontext():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=sampling.temperature,
                             top_p=sampling.top_p, top_k=0, max_new_tokens=sampling.max_new_tokens, pad_token_id=ctx.pad_id)
    new = out[:, ids.shape[1]:]
    ends = (new == tokenizer.eos_token_id).long()
    keep = (ends.cumsum(-1) - ends) == 0
    full_mask = torch.cat([mask, keep.long()], 1)
    logits = next_token_logits(ctx, out, full_mask, new.shape[1])
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), new, reduction="none")  # not log_softmax(-1): its sums differ by ~1e-4
    ppl = ((nll * keep).sum(-1) / keep.sum(-1).clamp_min(1)).exp().tolist()
    return Samples(tuple(tokenizer.decode(row[k], skip_special_tokens=True) for row, k in zip(new, keep)), tuple(ppl))


# -- a sweep: the effect over a grid of layers and strengths -----------------------------------------
@dataclass(frozen=True)
class SweepCell:
    layer: int
    strength: float
    texts: tuple[str, ...]
    effect: float


def sweep(ctx: ModelContext, vector_at: Callable[[int], SteeringVector], mode: str, ids: Sequence[int], layers: Sequence[int],
          strengths: Sequence[float], seeds: Sequence[int], sampling: Sampling, score: Score,
          progress: Callable[[int, int, int, float], None] | None = None,
          guard: Callable[[], AbstractContextManager] = nullcontext) -> list[SweepCell]:
    """One completion of ``ids`` per seed for every layer × strength (the vector of ``vector_at(layer)``),
    scored. ``progress(done, total, layer, strength)`` before each completion; each completion runs inside
    ``guard()`` (a lock around the shared model)."""
    total, done, cells = len(layers) * len(strengths) * len(seeds), 0, []
    for layer in layers:
        vector = vector_at(layer)
        for strength in strengths:
            found = Samples()
            for seed in seeds:
                if progress is not None:
                    progress(done, total, layer, strength)
                with guard():
                    found += sample(ctx, ids, [Steer(vector, strength, mode)], 1, seed, sampling, fluency=False)
                done += 1
            cells.append(SweepCell(layer, strength, found.texts, found.score(score)))
    return cells
