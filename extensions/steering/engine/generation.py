"""Sampling completions with and without steering from the same seeds."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .apply import Steer, steer
from .context import ModelContext
from .monitor import Monitor, Reading
from .validation import fits_context
from .validation import max_new_tokens as checked_max_new_tokens
from .validation import seed as checked_seed
from .validation import temperature as checked_temperature
from .validation import top_p as checked_top_p


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 40
    temperature: float = 0.7
    top_p: float = 0.9

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_new_tokens", checked_max_new_tokens(self.max_new_tokens))
        object.__setattr__(self, "temperature", checked_temperature(self.temperature))
        object.__setattr__(self, "top_p", checked_top_p(self.top_p))


@dataclass(frozen=True)
class Completion:
    text: str
    steered: bool
    seed: int
    prompt_tokens: int
    readings: tuple[Reading, ...] = ()  # with a monitor: how strongly the completion carries each of its directions


def check_room(ctx: ModelContext, ids: Sequence[int], sampling: Sampling) -> None:
    """Refuse, before any work, a prompt that leaves no room in the model's context for the tokens asked."""
    fits_context(len(ids), sampling.max_new_tokens, ctx.max_positions)


def complete(ctx: ModelContext, ids: Sequence[int], seed: int, sampling: Sampling) -> str:
    """One completion of ``ids`` from ``seed`` (greedy at temperature 0)."""
    return sample_batch(ctx, ids, 1, seed, sampling)[0]


@torch.inference_mode()
def sample_batch(ctx: ModelContext, ids: Sequence[int], n: int, seed: int, sampling: Sampling) -> list[str]:
    """``n`` completions of one prompt in one batch from one seed (faster than ``complete`` n times)."""
    check_room(ctx, ids, sampling)
    torch.manual_seed(checked_seed(seed))
    input_ids = torch.tensor([list(ids)] * n, device=ctx.device)
    options = dict(do_sample=sampling.temperature > 0, max_new_tokens=sampling.max_new_tokens)
    if sampling.temperature > 0:
        options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    output = ctx.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pad_token_id=ctx.pad_id, **options)
    return [ctx.tokenizer.decode(row[input_ids.shape[1] :], skip_special_tokens=True) for row in output]


def completions(
    ctx: ModelContext,
    ids: Sequence[int],
    steers: Sequence[Steer],
    seeds: Sequence[int],
    sampling: Sampling,
    compare: bool = False,
    monitor: Monitor | None = None,
) -> Iterator[Completion]:
    """Steered completions (unsteered when ``steers`` is empty); with ``compare`` both, seed by seed; with a
    ``monitor`` each read while it is generated. Steering (and reading) is removed before each completion is
    handed out, so a generator left half-read leaves no hooks."""
    for seed in seeds:
        if steers:
            with steer(ctx, steers), _recording(monitor) as recording:
                text = complete(ctx, ids, seed, sampling)
            yield Completion(text, True, seed, len(ids), _readings(recording))
        if compare or not steers:
            with _recording(monitor) as recording:
                text = complete(ctx, ids, seed, sampling)
            yield Completion(text, False, seed, len(ids), _readings(recording))


def _recording(monitor: Monitor | None):
    return monitor.record() if monitor is not None else nullcontext()


def _readings(recording) -> tuple[Reading, ...]:
    return tuple(recording.readings()) if recording is not None else ()
