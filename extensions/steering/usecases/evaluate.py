"""Evaluate presets as stand-ins for a system prompt on held-out messages: KL recovery, behaviour, time to
first token (engine/distill/evaluation.py). Presets standing in for one prompt share its measured baseline."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..engine import distill as d
from ..engine.apply import Steer
from ..engine.distill import EVAL_REPLY_TOKENS
from ..engine.progress import Progress
from ..engine.recipe import Recipe
from ..engine.vector import SteeringVector
from .workspace import Workspace

__all__ = ["EVAL_REPLY_TOKENS", "Candidate", "EvaluateRequest", "Measured", "evaluate", "evaluate_one", "held_out_count"]


def held_out_count() -> int:
    return len(d.held_out_messages())


@dataclass(frozen=True)
class Candidate:
    label: str  # how the user named it, e.g. ``kind:0.2``
    recipe: Recipe
    strength: float | None = None  # None: the recipe's own


@dataclass(frozen=True)
class EvaluateRequest:
    """``system``, ``metric``, ``instead``: None takes each recipe's own (``stands_in_for``, a distilled prompt)."""

    candidates: Sequence[Candidate]
    system: str | None = None
    metric: str | None = None
    instead: str | None = None
    held_out: int | None = None  # messages (None: all)
    behaviour_tokens: int = 48
    ttft_rounds: int = 2

    def target(self, candidate: Candidate, hint: str) -> tuple[str, str | None, str | None]:
        """The (system prompt, metric, instead) ``candidate`` is measured against."""
        own = candidate.recipe.target()
        system = self.system or own.system
        if not system:
            raise ValueError(f"{candidate.label}: the recipe names no system prompt it stands in for (stands_in_for.system); {hint}")
        return system, self.metric or own.metric, self.instead if self.instead is not None else own.instead


@dataclass(frozen=True)
class Measured:
    candidate: Candidate
    strength: float
    system: str
    result: d.Evaluation


def evaluate(ws: Workspace, request: EvaluateRequest, progress: Callable[[str], Progress | None] = lambda what: None,
             built: Callable[[Recipe, float, float], None] = lambda recipe, wall, cpu: None) -> list[Measured]:
    """Every candidate measured, in order. ``progress(what)`` gives the progress of building or measuring
    ``what``; ``built(recipe, wall seconds, CPU seconds)`` is told of each vector that had to be built first."""
    groups: dict[tuple[str, str | None, str | None], list[int]] = {}
    for index, candidate in enumerate(request.candidates):  # every target checked before the model loads
        groups.setdefault(request.target(candidate, ws.system_hint), []).append(index)
    ctx = ws.model()
    messages = d.held_out_messages(request.held_out)
    measured: dict[int, Measured] = {}
    for (system, metric, instead), members in groups.items():
        steers = []
        for index in members:
            candidate = request.candidates[index]
            vector = ws.store.cached_vector(candidate.recipe, ctx)
            if vector is None:
                wall, cpu = time.perf_counter(), time.process_time()
                vector = ws.store.vector(candidate.recipe, ctx, progress=progress(f"building {candidate.recipe.name}"))
                built(candidate.recipe, time.perf_counter() - wall, time.process_time() - cpu)
            strength = candidate.recipe.strength if candidate.strength is None else candidate.strength
            steers.append((candidate.label, [Steer(vector, strength, candidate.recipe.mode)]))
        with ws.lock:
            results = d.evaluate_many(ctx, system, steers, messages, metric, behaviour_tokens=request.behaviour_tokens,
                                      ttft_rounds=request.ttft_rounds, instead=instead,
                                      progress=progress(f"evaluating {', '.join(label for label, _ in steers)}"))
        for index, (_, result), (_, (steer,)) in zip(members, results, steers):
            measured[index] = Measured(request.candidates[index], steer.strength, system, result)
    return [measured[index] for index in range(len(request.candidates))]


def evaluate_one(ws: Workspace, recipe: Recipe, vector: SteeringVector | None = None, system: str | None = None, held_out: int | None = None,
                 ttft_rounds: int = 1, progress: Progress | None = None) -> d.Evaluation:
    """One preset's ``vector`` (default: the saved preset's) measured as a stand-in for ``system`` (default:
    the prompt it names, refused before any vector is built when it names none)."""
    system, metric, instead = EvaluateRequest([], system).target(Candidate(recipe.name, recipe), ws.system_hint)
    ctx = ws.model()
    if vector is None:
        vector = ws.vector(recipe.name)
    with ws.lock:
        return d.evaluate(ctx, system, vector, recipe.strength, recipe.mode, d.held_out_messages(held_out), metric=metric,
                          ttft_rounds=ttft_rounds, progress=progress, instead=instead)
