"""Recording the residual stream entering chosen decoder blocks."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch

from .context import ModelContext
from .hooks import block_input


class StopForward(Exception):
    """Raised by a recording hook once the last needed block input is recorded."""


@contextmanager
def record_block_inputs(
    ctx: ModelContext, indices: list[int], stop_early: bool = False, before_hooks: bool = False
) -> Iterator[dict[int, torch.Tensor]]:
    """While active, ``recorded[i]`` holds the (batch, seq, d) input of block ``i`` from the last forward.

    With ``stop_early`` the forward pass raises StopForward at the last recorded block, skipping the
    blocks (and the LM head) that recording does not need; the caller catches it. Only forwards of the
    calling thread are recorded (or stopped): another thread generating meanwhile is left alone.
    With ``before_hooks`` the input is recorded in front of the block's other hooks: before any steering
    added there.
    """
    recorded: dict[int, torch.Tensor] = {}
    handles = []
    last = max(indices)
    mine = threading.get_ident()

    def make_hook(index: int):
        def hook(module, args, kwargs):
            if threading.get_ident() != mine:
                return
            hidden, _ = block_input(module, args, kwargs)
            recorded[index] = hidden.detach()
            if stop_early and index == last:
                raise StopForward

        return hook

    try:
        for index in indices:
            handles.append(ctx.layers.blocks[index].register_forward_pre_hook(make_hook(index), with_kwargs=True, prepend=before_hooks))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
