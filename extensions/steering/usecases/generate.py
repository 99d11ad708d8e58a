"""Generate and compare: completions of a prompt from given seeds, steered by presets (and read along
others), and the same seed unsteered beside them."""
from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

from ..engine.apply import Steer
from ..engine.context import ModelContext
from ..engine.generation import Completion, Sampling, check_room, completions
from ..engine.monitor import Monitor
from ..engine.recipe import Recipe
from ..engine.tokens import prompt_ids
from ..engine.validation import seed as checked_seed
from .workspace import Workspace

__all__ = ["Comparison", "Request", "Sampling", "compare", "generate", "steer_for"]


@dataclass(frozen=True)
class Request:
    """A checked prompt, its first seed, sampling and chat template (with an optional system message)."""

    prompt: str
    seed: int = 0
    sampling: Sampling = field(default_factory=Sampling)
    chat: bool = False
    system: str | None = None
    n: int = 1  # completions, from seed on

    @classmethod
    def check(cls, prompt: str | None, seed, max_new_tokens, chat) -> Request:
        """The tab's fields; every value refused with its own message."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty")
        return cls(prompt, checked_seed(seed), dataclasses.replace(Sampling(), max_new_tokens=max_new_tokens), bool(chat))

    @property
    def seeds(self) -> range:
        return range(self.seed, self.seed + self.n)

    def ids(self, ctx: ModelContext) -> list[int]:
        """The prompt's token ids; a prompt that leaves the reply no room in the model's context is refused."""
        ids = prompt_ids(ctx, self.prompt, self.chat, self.system)
        check_room(ctx, ids, self.sampling)
        return ids


def steer_for(ws: Workspace, preset: str | Recipe, strength: float | None = None) -> Steer:
    """A preset (by name, or a recipe) applied at ``strength`` (default its own): a dose for a calibrated one."""
    recipe = ws.store.recipe(preset) if isinstance(preset, str) else preset
    return Steer(ws.vector(preset), recipe.strength if strength is None else strength, recipe.mode)


def generate(ws: Workspace, request: Request, steering: Sequence[tuple[Recipe, float | None]] = (),
             read: Mapping[str, Recipe] | None = None, compare: bool = False) -> Iterator[Completion]:
    """Completions of the request (steered and, with ``compare``, unsteered from each seed), each read along
    ``read``'s presets, as they are made. A prompt too long is refused before any vector is built."""
    ctx = ws.model()
    ids = request.ids(ctx)
    steers = [steer_for(ws, recipe, strength) for recipe, strength in steering]
    monitor = Monitor.of(ctx, {name: ws.vector(recipe) for name, recipe in read.items()},
                         ws.store.folder / "baselines") if read else None
    return _holding(ws.lock, completions(ctx, ids, steers, request.seeds, request.sampling, compare=compare, monitor=monitor))


def _holding(lock: AbstractContextManager, items: Iterable[Completion]) -> Iterator[Completion]:
    with lock:
        yield from items


@dataclass(frozen=True)
class Comparison:
    steered: str
    unsteered: str
    seed: int


def compare(ws: Workspace, steers: Sequence[Steer], request: Request) -> Comparison:
    """Steered and unsteered completions of the prompt from the request's seed."""
    ctx = ws.model()
    ids = request.ids(ctx)
    with ws.lock:
        found = completions(ctx, ids, steers, [request.seed], request.sampling, compare=True)
    results = {c.steered: c.text for c in found}
    return Comparison(results[True], results[False], request.seed)
