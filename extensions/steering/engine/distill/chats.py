"""Chats with and without a system prompt S, as token ids, teacher-forced batches and greedy replies.

"Without S" is the chat with no system message (``baseline="none"``: the chat template may insert
its own default, as the webui does for an empty context) or with an empty one (``"empty"``).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch

from ..apply import Steer, steer
from ..context import ModelContext
from ..metrics import next_token_logprobs
from ..tokens import left_pad
from .options import BASELINES


def chat_ids(ctx: ModelContext, message: str, system: str | None, baseline: str = "none") -> list[int]:
    """The chat prompt (ending with the assistant header) for one user message, with or without S."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    if not getattr(ctx.tokenizer, "chat_template", None):
        raise ValueError("distilling a system prompt needs a chat model: this tokenizer has no chat template")
    if system is None and baseline == "empty":
        system = ""
    user = {"role": "user", "content": message}
    try:
        text = _render(ctx, [user] if system is None else [{"role": "system", "content": system}, user])
    except Exception as error:  # a template without a system role (Gemma 1/2, early Mistral) raises from Jinja
        if system is None:
            raise ValueError(f"this model's chat template cannot render a user message: {error}") from None
        # what chat front ends do for such models: the system prompt opens the first user message
        text = _render(ctx, [{"role": "user", "content": f"{system}\n\n{message}" if system else message}])
    return ctx.tokens(text)


def _render(ctx: ModelContext, messages: list[dict]) -> str:
    return ctx.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class Batch:
    """Prompts left-padded to one width, each followed by its reply right-padded to ``reply_tokens``.

    Reply token t of every row sits at column ``width - reply_tokens + t``, so the logits that
    predict the replies are the last ``reply_tokens + 1`` columns but the last.
    """

    def __init__(self, ctx: ModelContext, prompts: Sequence[Sequence[int]], replies: Sequence[Sequence[int]], reply_tokens: int):
        pad, device = ctx.pad_id, ctx.device
        width = max(len(p) for p in prompts)
        rows, mask = [], []
        for prompt, reply in zip(prompts, replies):
            reply = list(reply)[:reply_tokens]
            left, right = width - len(prompt), reply_tokens - len(reply)
            rows.append([pad] * left + list(prompt) + reply + [pad] * right)
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

    def steered_positions(self) -> torch.Tensor:
        """(rows, width) 1 at the real positions after each row's sink: where the engine's mode ``all`` adds."""
        return ((self.position_ids >= 1) & self.attention_mask.bool()).float()


def reply_logprobs(ctx: ModelContext, batch: Batch) -> torch.Tensor:
    """(rows, reply_tokens, vocab) log-probabilities of the next token at each reply position."""
    return next_token_logprobs(ctx, batch.input_ids, batch.attention_mask, batch.reply_tokens)


def token_kl(target: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(rows,) mean over each row's reply tokens of KL(target || model), both given as log-probabilities."""
    per_token = (target.exp() * (target - logprobs)).sum(-1)
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def steered(ctx: ModelContext, steers: Sequence[Steer]):
    """A context applying ``steers`` (none: the model as it is)."""
    return steer(ctx, steers) if steers else nullcontext()


def _stop_ids(ctx: ModelContext) -> set[int]:
    found = {ctx.tokenizer.eos_token_id}
    configured = getattr(getattr(ctx.model, "generation_config", None), "eos_token_id", None)
    found.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {int(i) for i in found if i is not None}


@torch.inference_mode()
def greedy_replies(ctx: ModelContext, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   steers: Sequence[Steer] = (), batch_size: int = 16) -> list[list[int]]:
    """Greedy replies (token ids, cut after the first end-of-turn token) to left-padded prompt batches."""
    pad, stops = ctx.pad_id, _stop_ids(ctx)
    replies: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        ids, mask = left_pad(chunk, pad, ctx.device)
        with steered(ctx, steers):
            out = ctx.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                     pad_token_id=pad, top_p=None, top_k=None, temperature=None)
        for row in out[:, ids.shape[1]:].tolist():
            reply = []
            for token in row:
                reply.append(token)
                if token in stops:
                    break
            replies.append(reply)
    return replies
