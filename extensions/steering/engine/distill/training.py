"""Fitting a vector that makes the model without a system prompt S behave like the model with it.

The model *with* S is the teacher; the same model *without* S, steered, is the student. Ways (``via``):

- ``kl`` (default): one learnable direction per layer, added at every position after the sink
  (the engine's mode ``all``), fitted with Adam so that the steered model without S matches the
  next-token distributions of the model with S, KL(p_with_S || p_steered), over the reply tokens of
  with-S replies (greedy, teacher-forced) to the training messages. The in-context-vector idea
  (Liu et al. 2023) trained the way Subramani et al. (2022) fit steering vectors.
- ``contrast``: the mean difference of the block inputs of the chats with S and without S over their
  shared suffix (user message, assistant header and the with-S reply), averaged over the training
  messages (CAA-like, Rimsky et al. 2023).
- ``direct``: the mean difference of S against a neutral system prompt, read on their own (the
  engine's prompt-pair ``mean`` method).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator, Sequence

import torch

from ..build import build_from_pairs
from ..context import ModelContext
from ..hooks import block_input
from ..progress import Fitting, Progress
from ..record import record_block_inputs
from ..validation import block_indices
from ..vector import SteeringVector
from .chats import Batch, chat_ids, greedy_replies, reply_logprobs, token_kl
from .messages import training_messages
from .options import VIAS, CutShort, DistillOptions

log = logging.getLogger("steering")
NEUTRAL_SYSTEM = "You are a helpful assistant."


class TrainableSteering:
    """Adds ``params[layer]`` (d,) to the input of each block at the real positions after the sink.

    For whole-sequence, cache-less forwards of a :class:`Batch` only; it is the engine's mode
    ``all`` (``apply.SteeringHandle``) with gradients, which the engine's inference path never needs.
    """

    def __init__(self, ctx: ModelContext, layers: Sequence[int]):
        if ctx.hidden_size is None:
            raise ValueError("cannot tell this model's hidden size")
        self.ctx = ctx
        self.params = {i: torch.zeros(ctx.hidden_size, device=ctx.device, requires_grad=True) for i in layers}
        self.weight: torch.Tensor | None = None
        self._handles = []

    def _hook(self, index: int):
        def hook(module, args, kwargs):
            if self.weight is None:
                return None
            hidden, replace = block_input(module, args, kwargs)
            return replace(hidden + self.weight.to(hidden.dtype) * self.params[index].to(hidden.dtype))

        return hook

    @contextmanager
    def applied(self, batch: Batch) -> Iterator[None]:
        self.weight = batch.steered_positions().unsqueeze(-1)
        blocks = self.ctx.layers.blocks
        self._handles = [blocks[i].register_forward_pre_hook(self._hook(i), with_kwargs=True) for i in self.params]
        try:
            yield
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles, self.weight = [], None

    def vector(self, residual_norms: dict[int, float]) -> SteeringVector:
        return SteeringVector({i: p.detach().cpu() for i, p in self.params.items()}, residual_norms)


def _residual_norms(ctx: ModelContext, batch: Batch, layers: Sequence[int]) -> dict[int, float]:
    weight = batch.steered_positions()
    with torch.inference_mode(), record_block_inputs(ctx, list(layers)) as recorded:
        ctx.model(**batch.inputs())
    return {i: float((recorded[i].float().norm(dim=-1) * weight).sum() / weight.sum().clamp_min(1)) for i in layers}


def _suffix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Tokens the two prompts share at their ends, never reaching either's first position (the sink)."""
    n, limit = 0, min(len(a), len(b)) - 1
    while n < limit and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _contrast(ctx: ModelContext, with_batch: Batch, without_batch: Batch, suffixes: list[int], layers: list[int]) -> tuple[dict, dict]:
    """Mean (with S − without S) block input over the shared suffix (user turn, header, reply)."""
    readings = {}
    for name, batch in (("with", with_batch), ("without", without_batch)):
        with torch.inference_mode(), record_block_inputs(ctx, layers) as recorded:
            ctx.model(**batch.inputs())
        readings[name] = {i: recorded[i].float() for i in layers}
    T = with_batch.reply_tokens
    width = T + max(suffixes)  # the last columns of both batches: each row's shared prompt suffix, then its reply
    weight = torch.zeros(len(suffixes), width, device=with_batch.input_ids.device)
    for r, s in enumerate(suffixes):
        weight[r, width - T - s : width - T] = 1.0
        weight[r, width - T :] = with_batch.reply_mask[r]
    directions, norms = {}, {}
    for i in layers:
        diff = readings["with"][i][:, -width:] - readings["without"][i][:, -width:]
        directions[i] = (diff * weight[..., None]).sum((0, 1)) / weight.sum()
        norms[i] = float((readings["without"][i][:, -width:].norm(dim=-1) * weight).sum() / weight.sum())
    return directions, norms


@torch.inference_mode(False)  # fitting needs autograd, even when the caller is in inference mode
def distill(
    ctx: ModelContext,
    system: str,
    layers: Sequence[int],
    via: str = DistillOptions.via,
    steps: int = DistillOptions.steps,
    progress: Progress | None = None,
    messages: Sequence[str] | None = None,
    reply_tokens: int = DistillOptions.reply_tokens,
    lr: float = DistillOptions.lr,
    baseline: str = DistillOptions.baseline,
    batch_size: int = DistillOptions.batch_size,
    instead: str | None = None,
    plateau: float = DistillOptions.plateau,
) -> SteeringVector:
    """A vector that makes the model without ``system`` behave like the model with it (apply: mode 'all', strength 1).

    ``messages`` are the training messages (default: all of them); ``progress(done, total)`` is
    called after each stage and each optimisation step. ``instead``: the system message the steered
    chat will send in place of ``system`` (e.g. the one line a character keeps as its context); by
    default none. ``direct`` ignores it. ``plateau``: kl stops early once a pass over the training
    batches lowers the mean loss by less than this share of the pass before (0: never). A
    :class:`~..progress.Fitting` as ``progress`` also hears the loss, may carry a time limit the user
    asked for, and learns how the fit ended. Without a time limit the result depends only on the
    model, the prompt and the options, never on the machine's load.
    """
    started = time.perf_counter()
    if not isinstance(system, str) or not system.strip():
        raise ValueError("the system prompt to distil is empty")
    if via not in VIAS:
        raise ValueError(f"unknown distillation method {via!r}; choose one of {', '.join(VIAS)}")
    layers = block_indices(layers, ctx.num_layers)
    if via == "direct":
        vector = build_from_pairs(ctx, [(system, NEUTRAL_SYSTEM)], layers, "mean")
        if progress:
            progress(1, 1)
        return vector
    if steps < 0 or reply_tokens < 1:
        raise ValueError("steps must be 0 or more and reply tokens at least 1")
    messages = list(messages) if messages is not None else training_messages()
    if not messages:
        raise ValueError("give at least one training message")
    total = 2 + (steps if via == "kl" else 1)
    report = progress or (lambda done, total: None)
    with_prompts = [chat_ids(ctx, m, system, baseline) for m in messages]
    without_prompts = [chat_ids(ctx, m, instead or None, baseline) for m in messages]
    replies = greedy_replies(ctx, with_prompts, reply_tokens, batch_size=batch_size)
    report(1, total)
    chunks = [slice(s, s + batch_size) for s in range(0, len(messages), batch_size)]
    with_batches = [Batch(ctx, with_prompts[c], replies[c], reply_tokens) for c in chunks]
    without_batches = [Batch(ctx, without_prompts[c], replies[c], reply_tokens) for c in chunks]
    if via == "contrast":
        sums, norms, count = {}, {i: 0.0 for i in layers}, 0
        for c, wb, nb in zip(chunks, with_batches, without_batches):
            suffixes = [_suffix_length(a, b) for a, b in zip(with_prompts[c], without_prompts[c])]
            directions, chunk_norms = _contrast(ctx, wb, nb, suffixes, layers)
            rows = len(suffixes)
            for i in layers:
                sums[i] = sums.get(i, 0) + directions[i] * rows
                norms[i] += chunk_norms[i] * rows
            count += rows
        report(total, total)
        return SteeringVector({i: sums[i] / count for i in layers}, {i: n / count for i, n in norms.items()})
    fitting = progress if isinstance(progress, Fitting) else Fitting(progress)
    deadline = started + fitting.time_limit if fitting.time_limit is not None else None
    return _fit_kl(ctx, with_batches, without_batches, layers, steps, lr, plateau, fitting, total, deadline)


def _plateaued(losses: list[float], window: int, plateau: float) -> bool:
    """Whether the last ``window`` losses (one pass over the batches) improve on the ``window`` before by less than ``plateau`` of them."""
    if plateau <= 0 or len(losses) < 2 * window:
        return False
    last, before = sum(losses[-window:]), sum(losses[-2 * window : -window])
    return before - last < plateau * before


def _fit_kl(ctx: ModelContext, with_batches: list[Batch], without_batches: list[Batch], layers: list[int], steps: int, lr: float,
            plateau: float, fitting: Fitting, total: int, deadline: float | None) -> SteeringVector:
    """Adam on KL(p_with_S ‖ p_steered) over the reply tokens, one batch per step in turn, until ``steps``,
    a plateau of the loss or the user's ``deadline`` (perf_counter seconds; one step at least)."""
    model = ctx.model
    with torch.no_grad():
        targets = [reply_logprobs(ctx, b) for b in with_batches]
    norms = _residual_norms(ctx, without_batches[0], layers)
    fitting(2, total)  # no randomness below: the directions start at zero and the batches come in order
    trainable = TrainableSteering(ctx, layers)
    optimiser = torch.optim.Adam(list(trainable.params.values()), lr=lr)
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    losses: list[float] = []
    fitting.steps_done, fitting.stopped = 0, None
    try:
        for step in range(steps):
            optimiser.zero_grad()
            k = step % len(without_batches)
            with torch.enable_grad(), trainable.applied(without_batches[k]):
                logprobs = reply_logprobs(ctx, without_batches[k])
                loss = token_kl(targets[k], logprobs, without_batches[k].reply_mask).mean()
                loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            fitting.steps_done = step + 1
            log.debug("distill step %d/%d: KL %.4f", step + 1, steps, losses[-1])
            fitting(3 + step, total)
            fitting.report_loss(step + 1, steps, losses[-1])  # after the count: a page shows the latest report
            fitting.report_directions(step + 1, trainable.params)
            if step + 1 < steps and _plateaued(losses, len(without_batches), plateau):
                fitting.stopped = "plateau"
            elif step + 1 < steps and deadline is not None and time.perf_counter() >= deadline:
                fitting.stopped = "time limit"
            if fitting.stopped:
                fitting(total, total)
                break
    finally:
        for p, flag in zip(model.parameters(), requires):
            p.requires_grad_(flag)
    return trainable.vector(norms)


def stop_note(fitting: Fitting, steps: int) -> str:
    """One line for the user on how a fit ended (why, when before its last step)."""
    done, loss = fitting.steps_done, f"loss {fitting.last_loss:.4f}" if fitting.last_loss is not None else "no loss yet"
    if fitting.stopped == "time limit":
        return (f"CUT SHORT by your time limit ({fitting.time_limit:g} s) after {done} of {steps} steps ({loss}): "
                f"the result depends on how busy the machine was; the preset records steps: {done} and cut_short, "
                f"so it rebuilds to this vector; leave out the time limit for the full, repeatable fit")
    if fitting.stopped == "plateau":
        return f"stopped after {done} of {steps} steps: the loss stopped improving ({loss})"
    return f"fitted in {done} steps ({loss})"


def fitted_options(options: DistillOptions, fitting: Fitting) -> DistillOptions:
    """The options that rebuild the vector a fit saved: when a time limit cut it short, the steps done and a record of the cut."""
    if fitting.stopped != "time limit":
        return options
    return replace(options, steps=fitting.steps_done, cut_short=CutShort(fitting.time_limit, options.steps))


def build_distilled(options: DistillOptions, ctx: ModelContext, layers: Sequence[int], progress: Progress | None = None) -> SteeringVector:
    """The vector a ``method: distill`` recipe describes, fitted on ``options.messages`` training messages."""
    return distill(
        ctx, options.system, layers, via=options.via, steps=options.steps, progress=progress,
        messages=training_messages(options.messages), reply_tokens=options.reply_tokens, lr=float(options.lr),
        baseline=options.baseline, batch_size=options.batch_size, instead=options.instead, plateau=float(options.plateau),
    )
