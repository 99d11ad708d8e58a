"""Applying steering vectors to a model: hooks that add them to block inputs, by position.

Modes (positions are counted per sequence over real tokens, so left padding is never steered, and
position 0, the attention sink, is never steered):
- ``actadd``: row i of the vector goes to prompt position i + 1; generated tokens feel it only
  through the cache. A prompt shorter than the vector raises PromptTooShortError.
- ``all``: the direction goes to every position, prompt and generated.
- ``generated``: the direction goes only to positions after the prompt.

Every forward of the block-owning module first records where its tokens sit (past length, padding,
prompt length); the block hooks then add the summed strength-scaled vectors.

A handle acts only on forwards its ``gate`` lets through: by default those run by the thread that
made it, so another thread using the same model (an unsteered request, a second chat) is never
steered by it. ``on_thread(ident)`` gates on another thread; ``everywhere`` on none.
"""
from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from .context import ModelContext
from .hooks import block_input
from .validation import block_in_range, hidden_size_problem
from .validation import strength as checked_strength
from .vector import SteeringVector

Gate = Callable[[], bool]  # True: steer the forward running now

Mode = Literal["actadd", "all", "generated"]
MODES: tuple[str, ...] = ("actadd", "all", "generated")


class PromptTooShortError(ValueError):
    """An ``actadd`` vector has more rows than the prompt has positions after the sink."""


def on_thread(ident: int | None = None) -> Gate:
    """A gate that lets through forwards run by thread ``ident`` (default: the calling thread)."""
    ident = threading.get_ident() if ident is None else ident
    return lambda: threading.get_ident() == ident


def everywhere() -> bool:
    """A gate that lets every forward through, whatever thread runs it."""
    return True


@dataclass(frozen=True)
class Steer:
    """One vector applied with a strength and a mode."""

    vector: SteeringVector
    strength: float = 1.0
    mode: Mode = "all"


def _past_length(named: dict) -> int:
    cache = named.get("past_key_values")
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    try:  # legacy tuple of (key, value) per layer
        return int(cache[0][0].shape[-2])
    except (IndexError, TypeError, AttributeError):
        return 0


class _Plan:
    """The summed additions for one layer, cached per dtype and device."""

    def __init__(self, hidden_size: int):
        self.hidden_size = hidden_size
        self.all: torch.Tensor | None = None
        self.generated: torch.Tensor | None = None
        self.actadd: torch.Tensor | None = None
        self._cast: dict[tuple, tuple] = {}

    def add(self, mode: str, rows: torch.Tensor) -> None:
        if mode == "actadd":
            if self.actadd is not None and self.actadd.shape[0] != rows.shape[0]:
                k = max(self.actadd.shape[0], rows.shape[0])
                pad = lambda t: torch.cat([t, t.new_zeros(k - t.shape[0], t.shape[1])])
                self.actadd, rows = pad(self.actadd), pad(rows)
            self.actadd = rows if self.actadd is None else self.actadd + rows
        else:
            current = getattr(self, mode)
            setattr(self, mode, rows[0] if current is None else current + rows[0])

    def cast(self, like: torch.Tensor) -> tuple:
        key = (like.dtype, like.device)
        if key not in self._cast:
            self._cast[key] = tuple(
                None if t is None else t.to(like.device, like.dtype) for t in (self.all, self.generated, self.actadd)
            )
        return self._cast[key]


class SteeringHandle:
    """Hooks that steer ``model`` until ``remove()`` (or the end of a ``with`` block)."""

    def __init__(
        self,
        ctx: ModelContext,
        steers: Sequence[Steer],
        steer_first_position: bool = False,
        gate: Gate | None = None,
    ):
        if not isinstance(ctx, ModelContext):
            raise TypeError(f"steering needs a ModelContext (ModelContext.of(model, tokenizer)), got {type(ctx).__name__}")
        self.ctx = ctx
        self.model = model = ctx.model
        self.layers = ctx.layers
        self.gate: Gate = gate or on_thread()
        self.first = 0 if steer_first_position else 1
        self._plans = self._plan(steers)
        self._needs_prompt = any(p.generated is not None for p in self._plans.values())
        self._max_rows = max((p.actadd.shape[0] for p in self._plans.values() if p.actadd is not None), default=0)
        self._param_names = list(inspect.signature(self.layers.owner.forward).parameters)
        self._ctx: dict = {}
        self._last_ids: torch.Tensor | None = None  # tokens of the last forward without a cache
        self._prompt_len: torch.Tensor | None = None
        self._handles = [self.layers.owner.register_forward_pre_hook(self._on_forward, with_kwargs=True)]
        # A wrapper (Gemma 3 multimodal, PEFT) may hand the block list's owner a mask mapping instead of the
        # 2-D padding mask; it is read where the model is called, for the owner's forward that follows.
        self._outer_mask: torch.Tensor | None = None
        if self.layers.owner is not model:
            self._outer_names = list(inspect.signature(model.forward).parameters)
            self._handles.append(model.register_forward_pre_hook(self._on_outer_forward, with_kwargs=True))
        try:
            for index in self._plans:
                block = self.layers.blocks[index]
                self._handles.append(block.register_forward_pre_hook(self._block_hook(index), with_kwargs=True))
        except BaseException:
            self.remove()
            raise

    # -- set-up ----------------------------------------------------------------------------
    def _plan(self, steers: Sequence[Steer]) -> dict[int, _Plan]:
        if not steers:
            raise ValueError("nothing to apply: give at least one vector")
        hidden = self.ctx.hidden_size
        plans: dict[int, _Plan] = {}
        for steer in steers:
            vector, strength, mode = steer.vector, steer.strength, steer.mode
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
            strength = checked_strength(strength)
            problem = hidden_size_problem(vector.hidden_size, hidden)
            if problem:
                raise ValueError(f"the vector cannot steer this model: {problem}")
            if mode != "actadd" and vector.per_position:
                raise ValueError(
                    f"mode {mode!r} adds one direction, but this vector has {vector.positions} per-position rows "
                    "(built by actadd); use mode 'actadd' or vector.mean_direction()"
                )
            for layer, rows in vector.directions.items():
                block_in_range(layer, len(self.layers))
                plans.setdefault(layer, _Plan(vector.hidden_size)).add(mode, rows * float(strength))
        return plans

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._ctx = {}
        self._last_ids = self._prompt_len = None

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> SteeringHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- per forward -----------------------------------------------------------------------
    def _on_outer_forward(self, module, args, kwargs):
        if not self.gate():
            return
        named = dict(zip(self._outer_names, args))
        named.update(kwargs)
        mask = named.get("attention_mask")
        self._outer_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    def _on_forward(self, module, args, kwargs):
        if not self.gate():
            return
        named = dict(zip(self._param_names, args))
        named.update(kwargs)
        tokens = named.get("input_ids")
        if tokens is None:
            tokens = named.get("inputs_embeds")
        if tokens is None:
            raise TypeError(f"{type(module).__name__} was called without input_ids or inputs_embeds")
        batch, length = tokens.shape[0], tokens.shape[1]
        mask = named.get("attention_mask")
        if not (isinstance(mask, torch.Tensor) and mask.dim() == 2):
            mask = self._outer_mask
        self._outer_mask = None
        if not (isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[1] >= length):
            mask = None
        past = mask.shape[1] - length if mask is not None else _past_length(named)
        padded = mask is not None and not bool(mask.all())
        if padded:
            positions = (mask.long().cumsum(-1) - 1)[:, -length:]
            real = mask[:, -length:].bool()
            lengths = mask.long().sum(-1)
        else:
            positions = torch.arange(past, past + length, device=tokens.device).expand(batch, length)
            real = None
            lengths = torch.full((batch,), past + length, device=tokens.device)
        is_prompt = past == 0 and not self._continues_prompt(tokens)
        if self._needs_prompt:
            # ids, or embeddings where a wrapper (Gemma 3 multimodal) hands the owner only those
            self._last_ids = tokens.detach().clone() if past == 0 else None
        if is_prompt:
            if self._needs_prompt:
                self._prompt_len = lengths
            if self._max_rows:
                self._check_prompt_length(lengths)
        self._ctx = {"positions": positions, "real": real, "past": past, "padded": padded, "masks": {}}

    def _continues_prompt(self, ids: torch.Tensor | None) -> bool:
        """A cache-less generate step re-reads the previous forward's tokens plus one: same prompt, not a new one.

        Anything else without a cache (a follow-up prompt that repeats the last one and adds a reply and
        more) is a new prompt.
        """
        if not self._needs_prompt or ids is None or self._last_ids is None:
            return False
        known = self._last_ids
        return (
            ids.dim() == known.dim()
            and ids.shape[0] == known.shape[0]
            and ids.shape[2:] == known.shape[2:]
            and ids.shape[1] == known.shape[1] + 1
            and torch.equal(ids[:, : known.shape[1]], known)
        )

    def _check_prompt_length(self, lengths: torch.Tensor) -> None:
        shortest = int(lengths.min())
        if shortest < self._max_rows + self.first:
            raise PromptTooShortError(
                f"this actadd vector steers prompt positions {self.first}-{self.first + self._max_rows - 1}, "
                f"but a prompt has only {shortest} token(s); use a longer prompt (a chat template is long enough) "
                "or mode 'all'"
            )

    def _mask(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """(batch, seq, 1) 0/1 weights of the positions a mode steers in this forward, made once per forward."""
        masks = self._ctx["masks"]
        if name not in masks:
            positions, real = self._ctx["positions"], self._ctx["real"]
            if name == "all":
                keep = positions >= self.first
            else:
                keep = positions >= self._prompt_len[:, None].to(positions.device)
            if real is not None:
                keep = keep & real
            masks[name] = keep.unsqueeze(-1).to(like.dtype)
        return masks[name]

    def _actadd_rows(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        key = ("actadd", rows.shape[0])
        masks = self._ctx["masks"]
        if key not in masks:
            index = self._ctx["positions"] - self.first
            keep = (index >= 0) & (index < rows.shape[0])
            if self._ctx["real"] is not None:
                keep = keep & self._ctx["real"]
            masks[key] = None if not bool(keep.any()) else (index.clamp(0, rows.shape[0] - 1), keep.unsqueeze(-1).to(like.dtype))
        found = masks[key]
        if found is None:
            return None
        index, weight = found
        return rows[index] * weight

    def _block_hook(self, index: int):
        plan = self._plans[index]

        def hook(module, args, kwargs):
            if not self._ctx or not self.gate():
                return None  # outside the owner's forward (nothing known about positions), or not ours to steer
            hidden, replace = block_input(module, args, kwargs)
            problem = hidden_size_problem(plan.hidden_size, hidden.shape[-1])
            if problem:  # the config said one size, the block gets another
                raise ValueError(f"the vector cannot steer layer {index}: {problem}")
            all_rows, generated, actadd = plan.cast(hidden)
            delta = None
            if all_rows is not None:
                simple = not self._ctx["padded"] and self._ctx["past"] >= self.first
                delta = all_rows if simple else all_rows * self._mask("all", hidden)
            if generated is not None:
                part = generated * self._mask("generated", hidden)
                delta = part if delta is None else delta + part
            if actadd is not None:
                part = self._actadd_rows(actadd, hidden)
                if part is not None:
                    delta = part if delta is None else delta + part
            return None if delta is None else replace(hidden + delta)

        return hook


def steer(
    ctx: ModelContext,
    steers: Sequence[Steer | tuple],
    steer_first_position: bool = False,
    gate: Gate | None = None,
) -> SteeringHandle:
    """Apply several vectors at once; each item is a Steer or a (vector, strength[, mode]) tuple.
    Forwards of the calling thread only, unless ``gate`` says otherwise."""
    items = [s if isinstance(s, Steer) else Steer(*s) for s in steers]
    return SteeringHandle(ctx, items, steer_first_position, gate)
