"""What the "system prompt to vector" panel does, as plain functions over a runtime: no gradio here.

The runtime is the extension's SteeringRuntime (``store``, ``current_model()`` (a ModelContext),
``lock``, ``characters_dir``, ``vector(name)``, ``attachments(name)``, ``attach(name, items)``).
Bad input raises ValueError with a message written for the page; ``progress`` takes
``progress(fraction, description)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import characters
from ..reports import table_rows
from ..usecases import VIAS, Evaluation, Fitting, validation
from ..usecases.distill import DistillRequest, distill
from ..usecases.evaluate import evaluate_one, held_out_count
from .actions import PageProgress, layer_list, workspace

if TYPE_CHECKING:
    from ..runtime.interface import SteeringService

NO_CHARACTER = ""
MAX_STEPS = 1000
MAX_TIME_LIMIT = 3600


@dataclass
class Distilled:
    """A distilled preset and its measured numbers."""

    name: str
    attached_to: str | None
    result: Evaluation
    fit: str = ""  # how the fit ended: its steps and last loss, or why it stopped early

    def table(self) -> tuple[list[str], list[list[str]]]:
        return table_rows([(self.name, self.result)])

    def summary(self) -> str:
        r = self.result
        text = (
            f"{self.name}: {self.fit + '; ' if self.fit else ''}KL recovery {r.kl_recovery:.2f} on {r.held_out} held-out messages; "
            f"{r.metric} {r.behaviour_steered:.2f} steered vs {r.behaviour_with_system:.2f} with the prompt and "
            f"{r.behaviour_without:.2f} without; {tokens_line(r.tokens_saved)}; "
            f"time to first token ×{r.ttft_ratio:.2f}"
        )
        if self.attached_to:
            kept = r.instead
            text += (f". Attached to {self.attached_to}: set that character's context to {kept!r} to use the vector instead" if kept
                     else f". Attached to {self.attached_to}: empty that character's context to use the vector instead")
        return text


def tokens_line(saved: float) -> str:
    if saved >= 0:
        return f"{saved:.0f} prompt tokens saved per request"
    # e.g. SmolLM2's template puts its own 16-token system prompt into a chat that has none
    return f"{-saved:.0f} prompt tokens more per request (without the prompt, the chat template adds a longer default one)"


def character_names(runtime: SteeringService) -> list[str]:
    """Stems of the webui's character files (what its character menu lists)."""
    return characters.character_names(runtime.characters_dir)


def character_context(runtime: SteeringService, character: str | None) -> str:
    """The context of ``character``, placeholders filled in: the system prompt to distil."""
    if not character:
        return ""
    path = characters.character_file(runtime.characters_dir, character)
    if path is None:
        raise ValueError(f"no character file for {character!r}")
    return characters.read_character(path).context


def suggested_name(character: str | None) -> str:
    base = "".join(ch if ch.isalnum() or ch in " _-." else "-" for ch in (character or "").strip())[:50].strip(" .-")
    return f"{base}-distilled" if base else ""


def _fraction(progress: PageProgress | None, what: str, start: float, share: float):
    def show(done: int, total: int) -> None:
        if progress is not None:
            progress(start + share * done / max(total, 1), f"{what} {done}/{total}")

    return show


def _fitting(progress: PageProgress | None, share: float, time_limit: float | None) -> Fitting:
    """A Fitting showing ``distilling: step 12/48, loss 0.0123`` in the page's progress (the first ``share`` of the bar)."""
    def stage(done: int, total: int) -> None:
        if progress is not None:
            progress(share * done / max(total, 1), f"distilling {done}/{total}")

    def loss(step: int, steps: int, value: float) -> None:
        if progress is not None:
            progress(share * (2 + step) / (2 + steps), f"distilling: step {step}/{steps}, loss {value:.4f}")

    return Fitting(stage, loss, time_limit)


def distill_to_preset(runtime: SteeringService, name: str | None, system: str | None, via: str, steps, layers: str | None,
                      held_out, character: str | None = None, overwrite: bool = False,
                      progress: PageProgress | None = None, instead: str | None = None, time_limit=None) -> Distilled:
    """Distil ``system`` into the preset ``name``, save it, attach it to ``character`` (if any), and measure it.
    ``instead``: the context the chat keeps in place of ``system`` (empty: none); ``time_limit``: seconds
    a kl fit may take (0 or empty, the default: no limit); a fit it cuts short is recorded as such."""
    name = validation.check_name((name or "").strip())
    if not system or not system.strip():
        raise ValueError("write the system prompt (or pick a character) to distil")
    if via not in VIAS:
        raise ValueError(f"choose a method: {', '.join(VIAS)}")
    steps = validation.whole(steps, "steps", 0, MAX_STEPS)
    held = validation.whole(held_out, "held-out messages", 1, held_out_count())
    limit = validation.whole(time_limit or 0, "time limit", 0, MAX_TIME_LIMIT) or None
    ws = workspace(runtime)
    layer_values = layer_list(layers, runtime.current_model().num_layers) if layers and layers.strip() else None
    request = DistillRequest(name, system.strip(), via, layer_values, steps, instead=(instead or "").strip() or None,
                             description=f"distilled from {character}'s context" if character else "distilled system prompt")
    done = distill(ws, request, _fitting(progress, 0.7, limit), overwrite=overwrite)
    attached = None
    if character:
        items = [(n, s) for n, s in runtime.attachments(character) if n != name] + [(name, done.recipe.strength)]
        runtime.attach(character, items)
        attached = character
    result = evaluate_one(ws, done.recipe, done.vector, held_out=held, progress=_fraction(progress, "measuring", 0.7, 0.3))
    return Distilled(name, attached, result, done.fit)


def evaluate_preset(runtime: SteeringService, name: str | None, system: str | None, held_out, progress: PageProgress | None = None) -> Distilled:
    """Measure a saved preset as a stand-in for ``system`` (a distill preset's own prompt when empty)."""
    if not name:
        raise ValueError("choose a preset to measure")
    recipe = runtime.store.recipe(name)
    held = validation.whole(held_out, "held-out messages", 1, held_out_count())
    result = evaluate_one(workspace(runtime), recipe, None, (system or "").strip() or None, held,
                          progress=_fraction(progress, "measuring", 0.0, 1.0))
    return Distilled(name, None, result)
