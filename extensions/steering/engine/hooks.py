"""Reading and replacing the hidden state a decoder block receives, whatever its call style."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


def block_input(module: nn.Module, args: Args, kwargs: Kwargs) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple[Args, Kwargs]]]:
    """The residual stream entering a block, and a function that returns new (args, kwargs) with it replaced.

    Blocks receive it as the first positional argument (every transformers model we know) or as
    ``hidden_states=``.
    """
    if args and isinstance(args[0], torch.Tensor):
        return args[0], lambda new: ((new, *args[1:]), kwargs)
    hidden = kwargs.get("hidden_states")
    if isinstance(hidden, torch.Tensor):
        return hidden, lambda new: (args, {**kwargs, "hidden_states": new})
    raise TypeError(f"{type(module).__name__} was called without a hidden-state tensor to steer")
