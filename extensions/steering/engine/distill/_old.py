"""Distilling a system prompt (a character's context) into a steering vector, and measuring it.

The model *with* a system prompt S is the teacher; the same model *without* S, steered, is the
student. Methods:

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

"Without S" is the chat with no system message (``baseline="none"``: the chat template may insert
its own default, as the webui does for an empty context) or with an empty one (``"empty"``).

Messages come from ``data/distill_messages.txt``: message i is held out when i % 3 == 2. Building
only ever reads the training messages; ``evaluate`` reads the held-out ones.
"""
from __future__ import annotations

import logging
import statistics
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .apply import Steer, steer
from .build import build
from .hooks import block_input
from .layers import find_layers, hidden_size
from .presets import RECIPE_BUILDERS, Recipe
from .record import record_block_inputs
from .vector import SteeringVector

log = logging.getLogger("steering")
MESSAGES_FILE = Path(__file__).resolve().parents[1] / "data" / "distill_messages.txt"
HELD_OUT_EVERY = 3  # message i is held out when i % 3 == 2
DISTILL_METHODS: tuple[str, ...] = ("kl", "contrast", "direct")
BASELINES: tuple[str, ...] = ("none", "empty")
NEUTRAL_SYSTEM = "You are a helpful assistant."
DEFAULTS = {"via": "kl", "steps": 24, "lr": 0.05, "reply_tokens": 16, "messages": 32, "baseline": "none", "batch_size": 8}
EVAL_REPLY_TOKENS = 24  # KL recovery is measured over the first 24 tokens of the with-S replies
PIRATE_WORDS = ("arr", "arrr", "arrr!", "matey", "mateys", "ahoy", "ye", "aye", "yer", "treasure", "ship", "sea",
                "captain", "hearties", "landlubber", "landlubbers", "yo", "ho", "plunder", "sail", "sailor", "scallywag")
Progress = Callable[[int, int], None]


# -- messages ------------------------------------------------------------------------------------
def load_messages(path: Path = MESSAGES_FILE) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def split_messages(messages: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training, held-out): message i is held out when i % 3 == 2 (deterministic, order-based)."""
    train = [m for i, m in enumerate(messages) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    held = [m for i, m in enumerate(messages) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return train, held


def training_messages(limit: int | None = None) -> list[str]:
    train = split_messages(load_messages())[0]
    return train[:limit] if limit else train


def held_out_messages(limit: int | None = None) -> list[str]:
    held = split_messages(load_messages())[1]
    return held[:limit] if limit else held


# -- prompts and batches -----------------------------------------------------------------------------
def chat_ids(tokenizer, message: str, system: str | None, baseline: str = "none") -> list[int]:
    """The chat prompt (ending with the assistant header) for one user message, with or without S."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("distilling a system prompt needs a chat model: this tokenizer has no chat template")
    if system is None and baseline == "empty":
        system = ""
    user = {"role": "user", "content": message}
    try:
        text = _render(tokenizer, [user] if system is None else [{"role": "system", "content": system}, user])
    except Exception as error:  # a template without a system role (Gemma 1/2, early Mistral) raises from Jinja
        if system is None:
            raise ValueError(f"this model's chat template cannot render a user message: {error}") from None
        # what chat front ends do for such models: the system prompt opens the first user message
        text = _render(tokenizer, [{"role": "user", "content": f"{system}\n\n{message}" if system else message}])
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _render(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _pad_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if token_id is not None:
            return int(token_id)
    return 0


def _stop_ids(model: nn.Module, tokenizer) -> set[int]:
    found = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    found.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {int(i) for i in found if i is not None}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class Batch:
    """Prompts left-padded to one width, each followed by its reply right-padded to ``reply_tokens``.

    Reply token t of every row sits at column ``width - reply_tokens + t``, so the logits that
    predict the replies are the last ``reply_tokens + 1`` columns but the last.
    """

    def __init__(self, prompts: Sequence[Sequence[int]], replies: Sequence[Sequence[int]], pad_id: int, reply_tokens: int, device):
        width = max(len(p) for p in prompts)
        rows, mask = [], []
        for prompt, reply in zip(prompts, replies):
            reply = list(reply)[:reply_tokens]
            left, right = width - len(prompt), reply_tokens - len(reply)
            rows.append([pad_id] * left + list(prompt) + reply + [pad_id] * right)
            mask.append([0] * left + [1] * (len(prompt) + len(reply)) + [0] * right)
        self.input_ids = torch.tensor(rows, device=device)
        self.attention_mask = torch.tensor(mask, device=device)
        self.position_ids = (self.attention_mask.cumsum(-1) - 1).clamp_min(0)
        self.reply_tokens = reply_tokens
        self.reply_mask = torch.tensor(
            [[1.0] * min(len(r), reply_tokens) + [0.0] * (reply_tokens - min(len(r), reply_tokens)) for r in replies], device=device
        )

    def inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids, "use_cache": False}


def reply_logprobs(model: nn.Module, batch: Batch) -> torch.Tensor:
    """(rows, reply_tokens, vocab) log-probabilities of the next token at each reply position."""
    keep = batch.reply_tokens + 1
    try:
        logits = model(**batch.inputs(), logits_to_keep=keep).logits
    except TypeError:  # models without logits_to_keep
        logits = model(**batch.inputs()).logits
    return torch.log_softmax(logits[:, -keep:-1].float(), dim=-1)


def token_kl(target: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(rows,) mean over each row's reply tokens of KL(target || model), both given as log-probabilities."""
    per_token = (target.exp() * (target - logprobs)).sum(-1)
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1)


@torch.inference_mode()
def greedy_replies(model: nn.Module, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   steers: Sequence[Steer] = (), batch_size: int = 16) -> list[list[int]]:
    """Greedy replies (token ids, cut after the first end-of-turn token) to left-padded prompt batches."""
    pad, stops, device = _pad_id(tokenizer), _stop_ids(model, tokenizer), _device(model)
    replies: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with _maybe_steer(model, steers):
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, top_p=None, top_k=None, temperature=None)
        for row in out[:, width:].tolist():
            reply = []
            for token in row:
                reply.append(token)
                if token in stops:
                    break
            replies.append(reply)
    return replies


def _maybe_steer(model: nn.Module, steers: Sequence[Steer]):
    return steer(model, steers) if steers else nullcontext()


# -- training: a trainable direction per layer, applied like the engine's mode 'all' --------------------
class TrainableSteering:
    """Adds ``params[layer]`` (d,) to the input of each block at the real positions after the sink.

    For whole-sequence, cache-less forwards of a :class:`Batch` only; it is the engine's mode
    ``all`` (``apply.SteeringHandle``) with gradients, which the engine's inference path never needs.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], hidden: int, layers_path: str | None = None):
        self.found = find_layers(model, layers_path)
        device = _device(model)
        self.params = {i: torch.zeros(hidden, device=device, requires_grad=True) for i in layers}
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
        self.weight = ((batch.position_ids >= 1) & batch.attention_mask.bool()).unsqueeze(-1).float()
        self._handles = [self.found.blocks[i].register_forward_pre_hook(self._hook(i), with_kwargs=True) for i in self.params]
        try:
            yield
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles, self.weight = [], None

    def vector(self, residual_norms: dict[int, float]) -> SteeringVector:
        return SteeringVector({i: p.detach().cpu() for i, p in self.params.items()}, residual_norms)


def _residual_norms(model: nn.Module, batch: Batch, layers: Sequence[int], layers_path: str | None) -> dict[int, float]:
    found = find_layers(model, layers_path)
    weight = ((batch.position_ids >= 1) & batch.attention_mask.bool()).float()
    with torch.inference_mode(), record_block_inputs(found, list(layers)) as recorded:
        model(**batch.inputs())
    return {i: float((recorded[i].float().norm(dim=-1) * weight).sum() / weight.sum().clamp_min(1)) for i in layers}


def _suffix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Tokens the two prompts share at their ends, never reaching either's first position (the sink)."""
    n, limit = 0, min(len(a), len(b)) - 1
    while n < limit and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _contrast(model, with_batch: Batch, without_batch: Batch, suffixes: list[int], layers: list[int], layers_path) -> tuple[dict, dict]:
    """Mean (with S − without S) block input over the shared suffix (user turn, header, reply)."""
    found = find_layers(model, layers_path)
    readings = {}
    for name, batch in (("with", with_batch), ("without", without_batch)):
        with torch.inference_mode(), record_block_inputs(found, layers) as recorded:
            model(**batch.inputs())
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
    model: nn.Module,
    tokenizer,
    system: str,
    layers: Sequence[int],
    method: str = DEFAULTS["via"],
    steps: int = DEFAULTS["steps"],
    progress: Progress | None = None,
    messages: Sequence[str] | None = None,
    reply_tokens: int = DEFAULTS["reply_tokens"],
    lr: float = DEFAULTS["lr"],
    baseline: str = DEFAULTS["baseline"],
    batch_size: int = DEFAULTS["batch_size"],
    layers_path: str | None = None,
    instead: str | None = None,
) -> SteeringVector:
    """A vector that makes the model without ``system`` behave like the model with it (apply: mode 'all', strength 1).

    ``messages`` are the training messages (default: all of them); ``progress(done, total)`` is
    called after each stage and each optimisation step. ``instead``: the system message the steered
    chat will send in place of ``system`` (e.g. the one line a character keeps as its context); by
    default none. ``direct`` ignores it.
    """
    if not isinstance(system, str) or not system.strip():
        raise ValueError("the system prompt to distil is empty")
    if method not in DISTILL_METHODS:
        raise ValueError(f"unknown distillation method {method!r}; choose one of {', '.join(DISTILL_METHODS)}")
    found = find_layers(model, layers_path)
    layers = sorted({int(i) for i in layers})
    if not layers or not all(0 <= i < len(found) for i in layers):
        raise ValueError(f"choose layers between 0 and {len(found) - 1}")
    if method == "direct":
        vector = build(model, tokenizer, [system], [NEUTRAL_SYSTEM], layers, "mean", layers_path=layers_path)
        if progress:
            progress(1, 1)
        return vector
    if steps < 0 or reply_tokens < 1:
        raise ValueError("steps must be 0 or more and reply tokens at least 1")
    messages = list(messages) if messages is not None else training_messages()
    if not messages:
        raise ValueError("give at least one training message")
    total = 2 + (steps if method == "kl" else 1)
    report = progress or (lambda done, total: None)
    with_prompts = [chat_ids(tokenizer, m, system, baseline) for m in messages]
    without_prompts = [chat_ids(tokenizer, m, instead or None, baseline) for m in messages]
    replies = greedy_replies(model, tokenizer, with_prompts, reply_tokens, batch_size=batch_size)
    report(1, total)
    pad, device = _pad_id(tokenizer), _device(model)
    chunks = [slice(s, s + batch_size) for s in range(0, len(messages), batch_size)]
    with_batches = [Batch(with_prompts[c], replies[c], pad, reply_tokens, device) for c in chunks]
    without_batches = [Batch(without_prompts[c], replies[c], pad, reply_tokens, device) for c in chunks]
    if method == "contrast":
        sums, norms, count = {}, {i: 0.0 for i in layers}, 0
        for c, wb, nb in zip(chunks, with_batches, without_batches):
            suffixes = [_suffix_length(a, b) for a, b in zip(with_prompts[c], without_prompts[c])]
            directions, chunk_norms = _contrast(model, wb, nb, suffixes, layers, layers_path)
            rows = len(suffixes)
            for i in layers:
                sums[i] = sums.get(i, 0) + directions[i] * rows
                norms[i] += chunk_norms[i] * rows
            count += rows
        report(total, total)
        return SteeringVector({i: sums[i] / count for i in layers}, {i: n / count for i, n in norms.items()})
    return _fit_kl(model, with_batches, without_batches, layers, steps, lr, layers_path, report, total)


def _fit_kl(model: nn.Module, with_batches: list[Batch], without_batches: list[Batch], layers: list[int], steps: int, lr: float,
            layers_path: str | None, report: Progress, total: int) -> SteeringVector:
    """Adam on KL(p_with_S ‖ p_steered) over the reply tokens, one batch per step in turn."""
    with torch.no_grad():
        targets = [reply_logprobs(model, b) for b in with_batches]
    norms = _residual_norms(model, without_batches[0], layers, layers_path)
    report(2, total)  # no randomness below: the directions start at zero and the batches come in order
    trainable = TrainableSteering(model, layers, _hidden(model), layers_path)
    optimiser = torch.optim.Adam(list(trainable.params.values()), lr=lr)
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for step in range(steps):
            optimiser.zero_grad()
            k = step % len(without_batches)
            with torch.enable_grad(), trainable.applied(without_batches[k]):
                logprobs = reply_logprobs(model, without_batches[k])
                loss = token_kl(targets[k], logprobs, without_batches[k].reply_mask).mean()
                loss.backward()
            optimiser.step()
            log.debug("distill step %d/%d: KL %.4f", step + 1, steps, float(loss.detach()))
            report(3 + step, total)
    finally:
        for p, flag in zip(model.parameters(), requires):
            p.requires_grad_(flag)
    return trainable.vector(norms)


def _hidden(model: nn.Module) -> int:
    size = hidden_size(model)
    if size is None:
        raise ValueError("cannot tell this model's hidden size")
    return int(size)


# -- measuring ----------------------------------------------------------------------------------------
def infer_metric(system: str) -> str:
    """The behaviour score a user would recognise this system prompt by."""
    lower = system.lower()
    if "json" in lower:
        return "json"
    if "pirate" in lower:
        return "pirate"
    return "sentiment"


def metric_function(name: str) -> Callable[[str], float]:
    from . import metrics

    if name == "pirate":
        return metrics.topic_share(PIRATE_WORDS)
    if name not in metrics.METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of pirate, {', '.join(metrics.METRICS)}")
    return metrics.METRICS[name]


@torch.inference_mode()
def time_to_first_token(model: nn.Module, ids: Sequence[int], steers: Sequence[Steer] = (), pad_id: int = 0) -> float:
    """Seconds from the request to the first token: prefill and one greedy token (steering armed inside)."""
    input_ids = torch.tensor([list(ids)], device=_device(model))
    start = time.perf_counter()
    with _maybe_steer(model, steers):
        model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False, max_new_tokens=1,
                       pad_token_id=pad_id, top_p=None, top_k=None, temperature=None)
    return time.perf_counter() - start


def kl_divergences(model: nn.Module, tokenizer, with_prompts: Sequence[Sequence[int]], without_prompts: Sequence[Sequence[int]],
                   steers: Sequence[Steer], reply_tokens: int = EVAL_REPLY_TOKENS, batch_size: int = 16) -> tuple[list[float], list[float]]:
    """Per message: KL(p_with_S ‖ p_without_S) and KL(p_with_S ‖ p_steered), mean over the reply tokens of greedy with-S replies."""
    kl_without, (kl_steered,) = kl_divergences_many(model, tokenizer, with_prompts, without_prompts, [steers], reply_tokens, batch_size)
    return kl_without, kl_steered


def kl_divergences_many(model: nn.Module, tokenizer, with_prompts: Sequence[Sequence[int]], without_prompts: Sequence[Sequence[int]],
                        candidates: Sequence[Sequence[Steer]], reply_tokens: int = EVAL_REPLY_TOKENS,
                        batch_size: int = 16, replies: Sequence[Sequence[int]] | None = None) -> tuple[list[float], list[list[float]]]:
    """:func:`kl_divergences` for several steerings: KL without S once, and KL steered for each (no steers: without S).
    ``replies``: the greedy with-S replies when the caller has them already."""
    pad, device = _pad_id(tokenizer), _device(model)
    if replies is None:
        replies = greedy_replies(model, tokenizer, with_prompts, reply_tokens, batch_size=batch_size)
    kl_without: list[float] = []
    kl_steered: list[list[float]] = [[] for _ in candidates]
    with torch.inference_mode():
        for s in range(0, len(with_prompts), batch_size):
            c = slice(s, s + batch_size)
            target = reply_logprobs(model, Batch(with_prompts[c], replies[c], pad, reply_tokens, device))
            plain = Batch(without_prompts[c], replies[c], pad, reply_tokens, device)
            without = token_kl(target, reply_logprobs(model, plain), plain.reply_mask).tolist()
            kl_without += without
            for found, steers in zip(kl_steered, candidates):
                if not steers:
                    found += without
                    continue
                with steer(model, steers):
                    found += token_kl(target, reply_logprobs(model, plain), plain.reply_mask).tolist()
    return kl_without, kl_steered


def recovery(kl_without: Sequence[float], kl_steered: Sequence[float]) -> float:
    """1 − mean KL steered / mean KL without S (nan when S changes nothing)."""
    base = sum(kl_without) / len(kl_without)
    return 1 - (sum(kl_steered) / len(kl_steered)) / base if base > 0 else float("nan")


def evaluate(
    model: nn.Module,
    tokenizer,
    system: str,
    vector: SteeringVector | None,
    strength: float = 1.0,
    mode: str = "all",
    messages: Sequence[str] | None = None,
    metric: str | None = None,
    **options,
) -> dict:
    """How well ``vector`` (applied without ``system``) stands in for ``system``, on held-out messages.

    - ``kl_recovery`` = 1 − mean KL(p_with_S ‖ p_steered) / mean KL(p_with_S ‖ p_without_S), the KLs
      averaged over the first ``reply_tokens`` tokens of greedy with-S replies (teacher-forced) and
      then over the messages: 1 is the system prompt's full effect, 0 none, below 0 worse than none.
    - ``behaviour_*``: the mean ``metric`` score of greedy replies (``behaviour_tokens`` long) with S,
      without S and steered without S; ``readable_*`` the share of readable replies.
    - ``tokens_saved``: prompt tokens per request with S minus without S (``system_tokens`` is |S|).
    - ``ttft_*``: median time to first token with S and steered without S, timed alternately
      (``ttft_rounds`` per message) in this process; ``ttft_ratio`` = steered / with S.
    ``vector=None`` measures no steering (recovery 0 by definition). ``instead``: the system message
    the chat without S sends in its place (e.g. a character's one-line context); default none.
    ``options``: those of :func:`evaluate_many`.
    """
    steers = [Steer(vector, strength, mode)] if vector is not None else []
    return evaluate_many(model, tokenizer, system, [("steered", steers)], messages, metric, **options)[0][1]


def evaluate_many(
    model: nn.Module,
    tokenizer,
    system: str,
    candidates: Sequence[tuple[str, Sequence[Steer]]],
    messages: Sequence[str] | None = None,
    metric: str | None = None,
    reply_tokens: int = EVAL_REPLY_TOKENS,
    behaviour_tokens: int = 48,
    ttft_rounds: int = 2,
    baseline: str = DEFAULTS["baseline"],
    batch_size: int = 16,
    progress: Progress | None = None,
    instead: str | None = None,
) -> list[tuple[str, dict]]:
    """:func:`evaluate` for several stand-ins for one ``system`` (name, steers), the with-S and
    without-S replies computed once and the times to first token taken in one alternating run."""
    messages = list(messages) if messages is not None else held_out_messages()
    if not messages:
        raise ValueError("give at least one held-out message")
    metric = metric or infer_metric(system)
    score = metric_function(metric)
    from .metrics import mean, readable

    total, done = 3 + len(candidates), 0
    report = progress or (lambda done, total: None)
    pad = _pad_id(tokenizer)
    with_prompts = [chat_ids(tokenizer, m, system, baseline) for m in messages]
    without_prompts = [chat_ids(tokenizer, m, instead or None, baseline) for m in messages]

    def decoded(ids: list[list[int]]) -> list[str]:
        return [tokenizer.decode(r[:behaviour_tokens], skip_special_tokens=True) for r in ids]

    def replies(prompts, steers) -> list[str]:
        return decoded(greedy_replies(model, tokenizer, prompts, behaviour_tokens, steers, batch_size))

    # the with-S greedy replies, once: their first tokens are the KL's teacher-forced targets, all of them its behaviour
    with_ids = greedy_replies(model, tokenizer, with_prompts, max(reply_tokens, behaviour_tokens), batch_size=batch_size)
    kl_without, kls = kl_divergences_many(model, tokenizer, with_prompts, without_prompts, [s for _, s in candidates], reply_tokens,
                                          batch_size, replies=[r[:reply_tokens] for r in with_ids])
    texts = {"with_system": decoded(with_ids), "without": replies(without_prompts, ())}
    done += 2
    report(done, total)
    steered_texts = []
    for _, steers in candidates:
        steered_texts.append(replies(without_prompts, steers) if steers else texts["without"])
        done += 1
        report(done, total)

    # prompt tokens and time to first token, every condition in turn, the order rotating per request
    conditions = [("with_system", with_prompts, ())] + [(i, without_prompts, steers) for i, (_, steers) in enumerate(candidates)]
    timings: dict = {key: [] for key, _, _ in conditions}
    time_to_first_token(model, with_prompts[0], (), pad)  # warm-up
    for round_ in range(ttft_rounds):
        for i in range(len(messages)):
            shift = (round_ + i) % len(conditions)
            for key, prompts, steers in conditions[shift:] + conditions[:shift]:
                timings[key].append(time_to_first_token(model, prompts[i], steers, pad))
    report(total, total)

    ttft_with = statistics.median(timings["with_system"])
    shared = {
        "held_out": len(messages),
        "metric": metric,
        "instead": instead or None,
        "system_tokens": len(tokenizer(system, add_special_tokens=False)["input_ids"]),
        "prompt_tokens_with_system": mean([len(p) for p in with_prompts]),
        "prompt_tokens_without": mean([len(p) for p in without_prompts]),
        "tokens_saved": mean([len(a) - len(b) for a, b in zip(with_prompts, without_prompts)]),
        "ttft_with_system_ms": 1000 * ttft_with,
    }
    results = []
    for index, ((name, _), kl_steered, steered) in enumerate(zip(candidates, kls, steered_texts)):
        all_texts = {**texts, "steered": steered}
        ttft_steered = statistics.median(timings[index])
        results.append((name, {
            **shared,
            "kl_without": mean(kl_without),
            "kl_steered": mean(kl_steered),
            "kl_recovery": recovery(kl_without, kl_steered),
            **{f"behaviour_{k}": mean([score(t) for t in v]) for k, v in all_texts.items()},
            **{f"readable_{k}": mean([readable(t) for t in v]) for k, v in all_texts.items()},
            "ttft_steered_ms": 1000 * ttft_steered,
            "ttft_ratio": ttft_steered / ttft_with,
            "examples": [{"message": messages[i], **{k: v[i] for k, v in all_texts.items()}} for i in range(min(2, len(messages)))],
        }))
    return results


# -- recipes, characters and tables ----------------------------------------------------------------------
RECIPE_OPTIONS = {"system", "instead", "via", "steps", "lr", "reply_tokens", "messages", "baseline", "batch_size", "metric"}
# kl fits every layer jointly; contrast and direct add a measured difference, which a later layer
# would count again (it already carries what the earlier one added), so they take one layer
DEFAULT_LAYERS: dict[str, list[int | str]] = {"kl": ["10%", "20%", "30%", "40%", "50%"], "contrast": ["20%"], "direct": ["20%"]}
# S read on its own differs from a neutral prompt far more than a chat with S differs from one without:
# direct is a prompt-pair mean direction at a gentle share of the residual norm (the kind preset's)
DIRECT_STRENGTH = 0.15


def recipe_options(recipe: Recipe) -> dict:
    """The distillation settings of a ``method: distill`` recipe (its ``extra``), defaults filled in and checked."""
    from .presets import PresetError

    extra = dict(recipe.extra or {})
    unknown = set(extra) - RECIPE_OPTIONS
    if unknown:
        raise PresetError(f"recipe {recipe.name!r}: unknown distill option(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(RECIPE_OPTIONS))})")
    system = extra.get("system")
    if not isinstance(system, str) or not system.strip():
        raise PresetError(f"recipe {recipe.name!r}: a distill recipe needs extra.system, the system prompt it stands in for")
    options = {**DEFAULTS, **extra}
    if options["via"] not in DISTILL_METHODS:
        raise PresetError(f"recipe {recipe.name!r}: unknown extra.via {options['via']!r}; choose one of {', '.join(DISTILL_METHODS)}")
    if options["baseline"] not in BASELINES:
        raise PresetError(f"recipe {recipe.name!r}: unknown extra.baseline {options['baseline']!r}; choose one of {', '.join(BASELINES)}")
    for key in ("steps", "reply_tokens", "messages", "batch_size"):
        if not isinstance(options[key], int) or isinstance(options[key], bool) or options[key] < (0 if key == "steps" else 1):
            raise PresetError(f"recipe {recipe.name!r}: extra.{key} must be a whole number, got {options[key]!r}")
    if not isinstance(options["lr"], (int, float)) or not options["lr"] > 0:
        raise PresetError(f"recipe {recipe.name!r}: extra.lr must be a positive number, got {options['lr']!r}")
    if options.get("instead") is not None and not isinstance(options["instead"], str):
        raise PresetError(f"recipe {recipe.name!r}: extra.instead must be text (the system message sent in place of S), got {options['instead']!r}")
    return options


def stands_in_for(recipe: Recipe) -> tuple[str | None, str | None]:
    """(system prompt, behaviour metric) that a preset stands in for: a distill recipe's own prompt,
    else the optional ``extra.system`` / ``extra.metric`` of any recipe (what ``evaluate`` compares it with)."""
    from .presets import PresetError

    extra = recipe.extra or {}
    if recipe.method == "distill":
        options = recipe_options(recipe)
        return options["system"], options.get("metric")
    system, metric = extra.get("system"), extra.get("metric")
    for key, value in (("system", system), ("metric", metric)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise PresetError(f"recipe {recipe.name!r}: extra.{key} must be text, got {value!r}")
    return system, metric


def build_distilled(recipe: Recipe, model: nn.Module, tokenizer, layers: Sequence[int], progress: Progress | None = None) -> SteeringVector:
    """RECIPE_BUILDERS['distill']: rebuild a distilled vector for any chat model from its recipe."""
    options = recipe_options(recipe)
    return distill(
        model, tokenizer, options["system"], layers, method=options["via"], steps=options["steps"], progress=progress,
        messages=training_messages(options["messages"]), reply_tokens=options["reply_tokens"], lr=float(options["lr"]),
        baseline=options["baseline"], batch_size=options["batch_size"], instead=options.get("instead"),
    )


RECIPE_BUILDERS["distill"] = build_distilled


def distill_recipe(name: str, system: str, layers: Sequence[int | str] | None = None, via: str = DEFAULTS["via"],
                   description: str = "", strength: float | None = None, **options) -> Recipe:
    """A ``method: distill`` recipe; ``options`` go to ``extra`` (steps, lr, messages, metric, ...).

    The layers default to the method's (``DEFAULT_LAYERS``); the strength to 1 (the vector as fitted
    or measured), or for ``via="direct"`` to ``DIRECT_STRENGTH`` of the residual norm.
    """
    if strength is None:
        strength = DIRECT_STRENGTH if via == "direct" else 1.0
    extra = {"system": system, "via": via, **{k: v for k, v in options.items() if v is not None}}
    recipe = Recipe(name=name, description=description, method="distill", layers=list(layers or DEFAULT_LAYERS.get(via, DEFAULT_LAYERS["kl"])),
                    strength=strength, mode="all", extra=extra)
    recipe_options(recipe)
    return recipe


def read_character(path: str | Path) -> tuple[str, str]:
    """(name, context) of a webui character file (.yaml/.yml/.json), {{char}} and {{user}} filled in."""
    import json

    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the character: {error}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a character file (expected a mapping with a context)")
    name = str(data.get("name") or data.get("char_name") or path.stem)
    context = data.get("context") or data.get("char_persona") or ""
    if not isinstance(context, str) or not context.strip():
        raise ValueError(f"{path}: the character has no context to distil")
    context = context.replace("{{char}}", name).replace("<BOT>", name).replace("{{user}}", "You").replace("<USER>", "You")
    return name, context.strip()


TABLE_COLUMNS = (
    ("preset", None), ("held-out", "held_out"), ("KL recovery", "kl_recovery"), ("KL without S", "kl_without"),
    ("KL steered", "kl_steered"), ("metric", "metric"), ("with S", "behaviour_with_system"), ("without S", "behaviour_without"),
    ("steered", "behaviour_steered"), ("readable steered", "readable_steered"), ("S tokens", "system_tokens"),
    ("tokens saved", "tokens_saved"), ("TTFT with S ms", "ttft_with_system_ms"), ("TTFT steered ms", "ttft_steered_ms"),
    ("TTFT ratio", "ttft_ratio"),
)


def table_rows(results: Sequence[tuple[str, dict]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the evaluation table, numbers formatted for reading."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "nan" if value != value else f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"
        return str(value)

    header = [title for title, _ in TABLE_COLUMNS]
    rows = [[name] + [cell(result.get(key, "")) for _, key in TABLE_COLUMNS[1:]] for name, result in results]
    return header, rows


def markdown_table(results: Sequence[tuple[str, dict]]) -> str:
    header, rows = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
