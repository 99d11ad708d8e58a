"""Measuring a stand-in for a system prompt S (a steering vector applied without S) on held-out messages.

- KL recovery = 1 − mean KL(p_with_S ‖ p_steered) / mean KL(p_with_S ‖ p_without_S), the KLs
  averaged over the first ``reply_tokens`` tokens of greedy with-S replies (teacher-forced) and then
  over the messages: 1 is the system prompt's full effect, 0 none, below 0 worse than none.
- Behaviour: the mean metric score of greedy replies with S, without S and steered without S, and
  the share of readable replies.
- Cost: prompt tokens per request with and without S, and the median time to first token.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from ..apply import Steer
from ..context import ModelContext
from ..metrics import Metric, infer_metric, mean, readable
from ..metrics import metric as registered_metric
from ..progress import Progress
from ..vector import SteeringVector
from .chats import Batch, chat_ids, greedy_replies, reply_logprobs, steered, token_kl
from .messages import held_out_messages
from .options import DistillOptions

EVAL_REPLY_TOKENS = 24  # KL recovery is measured over the first 24 tokens of the with-S replies


@dataclass(frozen=True)
class Example:
    """One held-out message and the replies to it with S, without S and steered."""

    message: str
    with_system: str
    without: str
    steered: str


@dataclass(frozen=True)
class Evaluation:
    """How well one stand-in replaces S on ``held_out`` messages (see the module's description).

    ``tokens_saved``: prompt tokens per request with S minus without S (``system_tokens`` is |S|);
    ``ttft_ratio`` = steered / with S; ``instead``: the system message the chat without S sends.
    """

    held_out: int
    metric: str
    instead: str | None
    system_tokens: int
    prompt_tokens_with_system: float
    prompt_tokens_without: float
    tokens_saved: float
    ttft_with_system_ms: float
    kl_without: float
    kl_steered: float
    kl_recovery: float
    behaviour_with_system: float
    behaviour_without: float
    behaviour_steered: float
    readable_with_system: float
    readable_without: float
    readable_steered: float
    ttft_steered_ms: float
    ttft_ratio: float
    examples: tuple[Example, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def time_to_first_token(ctx: ModelContext, ids: Sequence[int], steers: Sequence[Steer] = ()) -> float:
    """Seconds from the request to the first token: prefill and one greedy token (steering armed inside)."""
    input_ids = torch.tensor([list(ids)], device=ctx.device)
    start = time.perf_counter()
    with steered(ctx, steers):
        ctx.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False, max_new_tokens=1,
                           pad_token_id=ctx.pad_id, top_p=None, top_k=None, temperature=None)
    return time.perf_counter() - start


def kl_divergences(ctx: ModelContext, with_prompts: Sequence[Sequence[int]], without_prompts: Sequence[Sequence[int]],
                   steers: Sequence[Steer], reply_tokens: int = EVAL_REPLY_TOKENS, batch_size: int = 16) -> tuple[list[float], list[float]]:
    """Per message: KL(p_with_S ‖ p_without_S) and KL(p_with_S ‖ p_steered), mean over the reply tokens of greedy with-S replies."""
    kl_without, (kl_steered,) = kl_divergences_many(ctx, with_prompts, without_prompts, [steers], reply_tokens, batch_size)
    return kl_without, kl_steered


def kl_divergences_many(ctx: ModelContext, with_prompts: Sequence[Sequence[int]], without_prompts: Sequence[Sequence[int]],
                        candidates: Sequence[Sequence[Steer]], reply_tokens: int = EVAL_REPLY_TOKENS,
                        batch_size: int = 16, replies: Sequence[Sequence[int]] | None = None) -> tuple[list[float], list[list[float]]]:
    """:func:`kl_divergences` for several steerings: KL without S once, and KL steered for each (no steers: without S).
    ``replies``: the greedy with-S replies when the caller has them already."""
    if replies is None:
        replies = greedy_replies(ctx, with_prompts, reply_tokens, batch_size=batch_size)
    kl_without: list[float] = []
    kl_steered: list[list[float]] = [[] for _ in candidates]
    with torch.inference_mode():
        for s in range(0, len(with_prompts), batch_size):
            c = slice(s, s + batch_size)
            target = reply_logprobs(ctx, Batch(ctx, with_prompts[c], replies[c], reply_tokens))
            plain = Batch(ctx, without_prompts[c], replies[c], reply_tokens)
            without = token_kl(target, reply_logprobs(ctx, plain), plain.reply_mask).tolist()
            kl_without += without
            for found, steers in zip(kl_steered, candidates):
                if not steers:
                    found += without
                    continue
                with steered(ctx, steers):
                    found += token_kl(target, reply_logprobs(ctx, plain), plain.reply_mask).tolist()
    return kl_without, kl_steered


def recovery(kl_without: Sequence[float], kl_steered: Sequence[float]) -> float:
    """1 − mean KL steered / mean KL without S (nan when S changes nothing)."""
    base = sum(kl_without) / len(kl_without)
    return 1 - (sum(kl_steered) / len(kl_steered)) / base if base > 0 else float("nan")


def evaluate(
    ctx: ModelContext,
    system: str,
    vector: SteeringVector | None,
    strength: float = 1.0,
    mode: str = "all",
    messages: Sequence[str] | None = None,
    metric: str | Metric | None = None,
    **options,
) -> Evaluation:
    """How well ``vector`` (applied without ``system``) stands in for ``system``, on held-out messages.

    ``vector=None`` measures no steering (recovery 0 by definition). ``options``: those of
    :func:`evaluate_many` (``instead``: the system message the chat without S sends in its place,
    e.g. a character's one-line context; default none).
    """
    steers = [Steer(vector, strength, mode)] if vector is not None else []
    return evaluate_many(ctx, system, [("steered", steers)], messages, metric, **options)[0][1]


def evaluate_many(
    ctx: ModelContext,
    system: str,
    candidates: Sequence[tuple[str, Sequence[Steer]]],
    messages: Sequence[str] | None = None,
    metric: str | Metric | None = None,
    reply_tokens: int = EVAL_REPLY_TOKENS,
    behaviour_tokens: int = 48,
    ttft_rounds: int = 2,
    baseline: str = DistillOptions.baseline,
    batch_size: int = 16,
    progress: Progress | None = None,
    instead: str | None = None,
) -> list[tuple[str, Evaluation]]:
    """:func:`evaluate` for several stand-ins for one ``system`` (name, steers), the with-S and
    without-S replies computed once and the times to first token taken in one alternating run.
    ``behaviour_tokens``: the length of the scored replies; ``ttft_rounds``: timed requests per
    message and condition, the median kept; ``metric``: a registered name or a Metric, default guessed from ``system``."""
    messages = list(messages) if messages is not None else held_out_messages()
    if not messages:
        raise ValueError("give at least one held-out message")
    scored = metric if isinstance(metric, Metric) else registered_metric(metric or infer_metric(system))
    score = scored.score

    total, done = 3 + len(candidates), 0
    report = progress or (lambda done, total: None)
    with_prompts = [chat_ids(ctx, m, system, baseline) for m in messages]
    without_prompts = [chat_ids(ctx, m, instead or None, baseline) for m in messages]

    def decoded(ids: list[list[int]]) -> list[str]:
        return [ctx.tokenizer.decode(r[:behaviour_tokens], skip_special_tokens=True) for r in ids]

    def replies(prompts, steers) -> list[str]:
        return decoded(greedy_replies(ctx, prompts, behaviour_tokens, steers, batch_size))

    # the with-S greedy replies, once: their first tokens are the KL's teacher-forced targets, all of them its behaviour
    with_ids = greedy_replies(ctx, with_prompts, max(reply_tokens, behaviour_tokens), batch_size=batch_size)
    kl_without, kls = kl_divergences_many(ctx, with_prompts, without_prompts, [s for _, s in candidates], reply_tokens,
                                          batch_size, replies=[r[:reply_tokens] for r in with_ids])
    with_texts, without_texts = decoded(with_ids), replies(without_prompts, ())
    done += 2
    report(done, total)
    steered_texts = []
    for _, steers in candidates:
        steered_texts.append(replies(without_prompts, steers) if steers else without_texts)
        done += 1
        report(done, total)

    # prompt tokens and time to first token, every condition in turn, the order rotating per request
    conditions = [("with_system", with_prompts, ())] + [(i, without_prompts, steers) for i, (_, steers) in enumerate(candidates)]
    timings: dict = {key: [] for key, _, _ in conditions}
    time_to_first_token(ctx, with_prompts[0])  # warm-up
    for round_ in range(ttft_rounds):
        for i in range(len(messages)):
            shift = (round_ + i) % len(conditions)
            for key, prompts, steers in conditions[shift:] + conditions[:shift]:
                timings[key].append(time_to_first_token(ctx, prompts[i], steers))
    report(total, total)

    ttft_with = statistics.median(timings["with_system"])
    shared = dict(
        held_out=len(messages),
        metric=scored.name,
        instead=instead or None,
        system_tokens=len(ctx.tokens(system)),
        prompt_tokens_with_system=mean([len(p) for p in with_prompts]),
        prompt_tokens_without=mean([len(p) for p in without_prompts]),
        tokens_saved=mean([len(a) - len(b) for a, b in zip(with_prompts, without_prompts)]),
        ttft_with_system_ms=1000 * ttft_with,
        kl_without=mean(kl_without),
        behaviour_with_system=mean([score(t) for t in with_texts]),
        behaviour_without=mean([score(t) for t in without_texts]),
        readable_with_system=mean([readable(t) for t in with_texts]),
        readable_without=mean([readable(t) for t in without_texts]),
    )
    results = []
    for index, ((name, _), kl_steered, steered_replies) in enumerate(zip(candidates, kls, steered_texts)):
        ttft_steered = statistics.median(timings[index])
        results.append((name, Evaluation(
            **shared,
            kl_steered=mean(kl_steered),
            kl_recovery=recovery(kl_without, kl_steered),
            behaviour_steered=mean([score(t) for t in steered_replies]),
            readable_steered=mean([readable(t) for t in steered_replies]),
            ttft_steered_ms=1000 * ttft_steered,
            ttft_ratio=ttft_steered / ttft_with,
            examples=tuple(Example(messages[i], with_texts[i], without_texts[i], steered_replies[i]) for i in range(min(2, len(messages)))),
        )))
    return results
