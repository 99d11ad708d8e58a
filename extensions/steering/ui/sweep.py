"""The tab's sweep: completions of one prompt for every strength × layer of a draft's recipe, with a measured
effect (engine/effects.py measures it), as a grid and a plot."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..usecases import ModelContext, SteeringVector, SweepCell, effects, metrics, shown, strength_name, validation
from ..usecases.generate import Request
from .actions import Draft, PageProgress, _build, layer_list, number_list, require_draft, sweep_strengths_around

if TYPE_CHECKING:
    from ..runtime.interface import SteeringService

MAX_SWEEP_GENERATIONS = 96
METRIC_SENTIMENT = "sentiment (VADER)"
METRIC_TOPIC = "topic words"
SWEEP_METRICS = (METRIC_SENTIMENT, METRIC_TOPIC)
topic_share = metrics.topic_share
whole, checked_seed = validation.whole, validation.seed


# -- sweeping ------------------------------------------------------------------------------------
def sweep_metric_choices() -> list[str]:
    """The sweep's metrics this Python can compute: sentiment needs vaderSentiment (install.py --requirements)."""
    return list(SWEEP_METRICS) if metrics.metric("sentiment").available else [METRIC_TOPIC]


def topic_scorer(topic_words: str | None) -> Callable[[str], float]:
    topics = [word.lower() for word in re.findall(r"[\w']+", topic_words or "")]
    if not topics:
        raise ValueError(f"the {METRIC_TOPIC} metric needs some words to count, e.g. love, kind, happy")
    return topic_share(topics)


def effect_scorer(chosen: str, topic_words: str | None) -> tuple[Callable[[str], float], str]:
    if chosen == METRIC_SENTIMENT:
        sentiment = metrics.metric("sentiment")
        try:
            sentiment.check_available()
        except ValueError as missing:
            raise ValueError(f"{missing}; choose {METRIC_TOPIC} instead") from None
        return sentiment.score, sentiment.measures
    if chosen == METRIC_TOPIC:
        return topic_scorer(topic_words), f"share on topic ({topic_words.strip()})"
    raise ValueError(f"unknown metric {chosen!r}; choose one of {', '.join(SWEEP_METRICS)}")


@dataclass(frozen=True)
class Sweep:
    prompt: str
    metric: str
    cells: tuple[SweepCell, ...]
    calibrated: bool = False  # strengths are multiples of the recipe's measured strength

    @property
    def layers(self) -> list[int]:
        return sorted({c.layer for c in self.cells})

    @property
    def strengths(self) -> list[float]:
        return list(dict.fromkeys(c.strength for c in self.cells))

    def cell(self, layer: int, strength: float) -> SweepCell:
        return next(c for c in self.cells if c.layer == layer and c.strength == strength)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Headers and rows of the completion grid: a row per strength, a column per layer."""
        headers = ["strength", *(f"layer {layer}" for layer in self.layers)]
        rows = []
        for strength in self.strengths:
            row = [shown(strength)]
            for layer in self.layers:
                cell = self.cell(layer, strength)
                row.append(f"[{cell.effect:+.2f}] {cell.texts[0].strip()}")
            rows.append(row)
        return headers, rows

    def figure(self):
        """Measured effect against strength, one line per layer (a matplotlib Figure, no pyplot state)."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6.4, 3.6), dpi=100)
        axes = figure.add_subplot()
        for layer in self.layers:
            points = [(s, self.cell(layer, s).effect) for s in self.strengths]
            axes.plot(*zip(*points), marker="o", label=f"layer {layer}")
        axes.set_xlabel(strength_name(self.calibrated))
        axes.set_ylabel(self.metric)
        axes.set_title(_short(self.prompt, 60), fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        return figure


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def sweep(runtime: SteeringService, draft: Draft | None, prompt: str, strengths: str, layers: str, metric: str, topic_words: str,
          seed, samples, max_new_tokens, chat: bool, progress: PageProgress | None = None) -> Sweep:
    """Completions of ``prompt`` for every strength × layer of the draft's recipe, with a measured effect.
    Empty strengths mean ``sweep_strengths_around`` the draft's own strength. A calibrated recipe sweeps
    doses (each layer calibrated on its own, so dose 1 spends the same KL budget at every layer)."""
    request = Request.check(prompt, seed, max_new_tokens, chat)
    draft = require_draft(draft)
    strength_values = number_list(strengths, "strengths") if (strengths or "").strip() else sweep_strengths_around(draft.recipe.strength)
    samples = whole(samples, "samples", 1, 16)
    checked_seed(request.seed + samples - 1, "the last seed (seed + samples - 1)")
    score, metric_label = effect_scorer(metric, topic_words)
    ctx = runtime.current_model()
    layer_values = layer_list(layers, ctx.num_layers)
    total = len(layer_values) * len(strength_values) * samples
    if total > MAX_SWEEP_GENERATIONS:
        raise ValueError(f"this sweep needs {total} completions; keep it to {MAX_SWEEP_GENERATIONS} (fewer strengths, layers or samples)")

    def shown_progress(done: int, total: int, layer: int, strength: float) -> None:
        if progress is not None:
            progress(done / total, f"layer {layer}, strength {shown(strength)}: completion {done + 1} of {total}")

    cells = effects.sweep(ctx, lambda layer: _vector_at(runtime, draft, layer, ctx), draft.recipe.mode, request.ids(ctx), layer_values,
                          strength_values, range(request.seed, request.seed + samples), request.sampling, score, shown_progress,
                          lambda: runtime.lock)
    return Sweep(prompt, metric_label, tuple(cells), draft.recipe.calibrated)


def _vector_at(runtime: SteeringService, draft: Draft, layer: int, ctx: ModelContext) -> SteeringVector:
    if draft.built_for(ctx) and draft.vector.layers == [layer]:
        return draft.vector
    recipe = dataclasses.replace(draft.recipe, layers=[layer])
    return _build(runtime, recipe).vector
