"""A prompt as the model's token ids: after the shared sink token (as vectors are read), or in its chat template."""
from __future__ import annotations

from typing import Sequence

import torch

from .context import ModelContext


def encode(ctx: ModelContext, text: str) -> list[int]:
    """Token ids of ``text`` after the shared sink token."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("prompts must be non-empty text")
    return [ctx.sink_id, *ctx.tokens(text)]


def prompt_ids(ctx: ModelContext, prompt: str, chat: bool = False, system: str | None = None) -> list[int]:
    """Token ids of the prompt: after the shared sink token, or wrapped in the model's chat template."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty")
    if not chat:
        if system:
            raise ValueError("a system message needs the chat template: turn the chat template on")
        return encode(ctx, prompt)  # the sink token first, as vectors were read
    if not getattr(ctx.tokenizer, "chat_template", None):
        raise ValueError("this model's tokenizer has no chat template: turn the chat template off")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    text = ctx.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return ctx.tokens(text)


def left_pad(rows: Sequence[Sequence[int]], pad: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token rows, left-padded to the longest (as batched generation wants)."""
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask
