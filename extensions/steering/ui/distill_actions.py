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
from ..engine import distill as d
from ..engine.distill.recipes import distill_recipe
from ..engine.methods import build_vector
from ..engine.progress import Fitting
from ..engine.validation import PresetError, check_name, whole
from ..reports import table_rows
from .actions import PageProgress, layer_list

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
    result: d.Evaluation
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
    name = check_name((name or "").strip())
    if not system or not system.strip():
        raise ValueError("write the system prompt (or pick a character) to distil")
    if via not in d.VIAS:
        raise ValueError(f"choose a method: {', '.join(d.VIAS)}")
    steps = whole(steps, "steps", 0, MAX_STEPS)
    held = whole(held_out, "held-out messages", 1, len(d.held_out_messages()))
    limit = whole(time_limit or 0, "time limit", 0, MAX_TIME_LIMIT) or None
    store = runtime.store
    if store.is_shipped(name) or (store.exists(name) and not overwrite):
        raise PresetError(f"a preset named {name!r} exists; choose another name" + ("" if store.is_shipped(name) else " or tick overwrite"))
    ctx = runtime.current_model()
    layer_values = layer_list(layers, ctx.num_layers) if layers and layers.strip() else None
    instead = (instead or "").strip() or None
    recipe = distill_recipe(name, system.strip(), layer_values, via=via, steps=steps, instead=instead,
                           description=f"distilled from {character}'s context" if character else "distilled system prompt")
    fitting = _fitting(progress, 0.7, limit)
    with runtime.lock:
        vector = build_vector(recipe, ctx, progress=fitting).vector
    recipe.options = d.fitted_options(recipe.options, fitting)  # cut short: the recipe says so and rebuilds to the same vector
    fit = d.stop_note(fitting, steps) if fitting.steps_done is not None else ""
    store.save(recipe, vector, ctx, overwrite=overwrite)
    attached = None
    if character:
        items = [(n, s) for n, s in runtime.attachments(character) if n != name] + [(name, recipe.strength)]
        runtime.attach(character, items)
        attached = character
    with runtime.lock:
        result = d.evaluate(ctx, recipe.options.system, vector, recipe.strength, recipe.mode,
                            d.held_out_messages(held), ttft_rounds=1, progress=_fraction(progress, "measuring", 0.7, 0.3),
                            instead=instead)
    return Distilled(name, attached, result, fit)


def evaluate_preset(runtime: SteeringService, name: str | None, system: str | None, held_out, progress: PageProgress | None = None) -> Distilled:
    """Measure a saved preset as a stand-in for ``system`` (a distill preset's own prompt when empty)."""
    if not name:
        raise ValueError("choose a preset to measure")
    recipe = runtime.store.recipe(name)
    target = recipe.target()
    system = (system or "").strip() or target.system
    if not system:
        raise ValueError(f"{name} names no system prompt it stands in for: write the system prompt to compare it with")
    held = whole(held_out, "held-out messages", 1, len(d.held_out_messages()))
    ctx = runtime.current_model()
    with runtime.lock:
        vector = runtime.vector(name)
        result = d.evaluate(ctx, system, vector, recipe.strength, recipe.mode, d.held_out_messages(held),
                            target.metric, ttft_rounds=1, progress=_fraction(progress, "measuring", 0.0, 1.0),
                            instead=target.instead)
    return Distilled(name, None, result)
