"""What the Steering tab does, as plain functions over a runtime: no gradio here. Each parses the form's
fields, calls the use case (usecases/) and returns what the page shows.

The runtime is anything with the interface ``runtime.interface.SteeringService`` (the extension's
SteeringRuntime); ``runtime.current_model()`` gives the loaded model's ModelContext.

Every action checks all of its input before it touches the model or the disk, and reports bad
input by raising ValueError (PresetError and PromptTooShortError are ValueErrors) with a message
written for the page. ``progress`` arguments take ``progress(fraction, description)``.
"""
from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .. import usecases as uc
from ..usecases import DEFAULT_METHOD, METHODS, PROMPT_LAYERS, PROMPT_METHODS, PresetStore, Recipe, Strength, Workspace, interchange, presets, validation
from ..usecases import build as building
from ..usecases.build import Draft
from ..usecases.describe import UNSAVED
from ..usecases.generate import Comparison, Request, steer_for
from ..usecases.generate import compare as compare_steered
from ..usecases.mix import Items, describe_items, mix_items, parse_mix

if TYPE_CHECKING:
    from ..runtime.interface import SteeringService

__all__ = ["Comparison", "DEFAULT_METHOD", "Draft", "Items", "Request", "describe_items", "parse_mix"]
PageProgress = Callable[[float, str], None]  # progress(fraction, description), as gradio shows it
AUTO = uc.AUTO  # a mode left to the recipe: actadd for actadd, all for one direction


def workspace(runtime: SteeringService, hint: str = "tick overwrite") -> Workspace:
    """The use cases' view of the runtime: its store, its model, its lock, its cached vectors."""
    return Workspace(runtime.store, runtime.current_model, runtime.lock, runtime.vector, overwrite_hint=hint,
                     system_hint="write the system prompt to compare it with")


# -- defaults, all taken from the engine ---------------------------------------------------------
def default_strengths() -> str:
    """What an empty strength means, per method: 'actadd 4, mean auto, pca auto'."""
    return ", ".join(f"{method} {AUTO if METHODS[method].calibrated else format(METHODS[method].strength, 'g')}"
                     for method in PROMPT_METHODS)


def default_layer(num_layers: int) -> int:
    return validation.resolve_layer(PROMPT_LAYERS[0], num_layers)


def sweep_layers_around(layer: int, num_layers: int, spread: int = 2) -> str:
    """The sweep's layers field for a vector built at ``layer``: it and its neighbours ``spread`` apart."""
    return ", ".join(str(at) for at in sorted({max(0, layer - spread), layer, min(num_layers - 1, layer + spread)}))


def sweep_strengths_around(strength: float) -> list[float]:
    """The strengths an empty sweep field means: none, half, the vector's own, double."""
    return [0.0, strength / 2, strength, strength * 2]


def default_sampling() -> uc.Sampling:
    return uc.Sampling()


def method_choices() -> list[str]:
    return list(PROMPT_METHODS)


def mode_choices() -> list[str]:
    return [AUTO, *uc.MODES]


# -- checking input ------------------------------------------------------------------------------
def prompt_lines(text: str | None, side: str, required: bool = True) -> list[str]:
    """A field's prompts, one per line; the negative side may be empty (building.negative_side says when)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if required and not lines:
        raise ValueError(f"write at least one {side} prompt (one per line)")
    return lines


def list_items(text: str | None, what: str, hint: str, limit: int) -> list[str]:
    """The comma- or space-separated values of a field, at least one and at most ``limit``."""
    parts = [part for part in re.split(r"[,;\s]+", text or "") if part]
    if not parts:
        raise ValueError(f"{what}: enter at least one {hint}")
    if len(parts) > limit:
        raise ValueError(f"{what}: at most {limit} values, got {len(parts)}")
    return parts


def number_list(text: str | None, what: str, limit: int = 12) -> list[float]:
    parts = list_items(text, what, "number, e.g. 0, 2, 4, 8", limit)
    return [validation.finite(part, f"{what}: {part!r}") for part in parts]


def layer_list(text: str | None, num_layers: int, limit: int = 8) -> list[int]:
    layers = []
    for part in list_items(text, "layers", f"layer between 0 and {num_layers - 1}", limit):
        spec = part if part.endswith("%") else validation.whole(part, f"layer {part!r}", 0, num_layers - 1)
        layers.append(validation.resolve_layer(spec, num_layers))
    return sorted(set(layers))


def require_preset_name(name: str | None, what: str = "preset") -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"choose a {what} first")
    return validation.check_name(name)


def num_layers(runtime: SteeringService) -> int:
    return runtime.current_model().num_layers


# -- building ------------------------------------------------------------------------------------
def make_recipe(positives: str, negatives: str, method: str, layer, strength, mode: str, auto: bool = False,
                dose=1.0, name: str = UNSAVED) -> Recipe:
    """A recipe from the build form. ``auto``: the method's default layers (measured for mean and pca),
    else the layer given. The strength: empty for the method's default, a number, or "auto" at ``dose``."""
    pos, neg = prompt_lines(positives, "positive"), prompt_lines(negatives, "negative", required=False)
    method = method or DEFAULT_METHOD
    return building.BuildRequest(name, pos, neg, method, None if auto else [validation.whole(layer, "layer", 0)],
                                 Strength.from_form(strength, dose, method), None if mode in (None, "", AUTO) else mode).recipe()


def build_draft(runtime: SteeringService, positives: str, negatives: str, method: str, layer, strength, mode: str,
                auto: bool = False, dose=1.0, progress: PageProgress | None = None) -> Draft:
    return _build(runtime, make_recipe(positives, negatives, method, layer, strength, mode, auto, dose), progress)


def check_form(runtime: SteeringService, positives: str, negatives: str) -> uc.Feasibility:
    """Whether a vector from the form's one pair is likely to move the loaded model (engine/feasibility.py)."""
    pos, neg = prompt_lines(positives, "positive"), prompt_lines(negatives, "negative", required=False)
    if len(pos) != 1 or len(neg) > 1:
        raise ValueError(f"the check looks at one pair: write one positive and one negative line (got {len(pos)} and {len(neg)})")
    return building.check(workspace(runtime), pos[0], neg[0] if neg else None)


def _build(runtime: SteeringService, recipe: Recipe, progress: PageProgress | None = None) -> Draft:
    then = building.measuring(recipe)

    def pairs_read(done: int, total: int) -> None:
        if progress is not None:
            progress(done / total, f"{building.first_stage(recipe)} {done}/{total}" + (f"; now {then}" if done >= total and then else ""))

    return building.build(workspace(runtime), recipe, pairs_read)


def current_draft_vector(runtime: SteeringService, draft: Draft) -> uc.SteeringVector:
    """The draft's vector for the model loaded now (rebuilt when the model changed since)."""
    return building.vector_now(workspace(runtime), draft)


# -- trying --------------------------------------------------------------------------------------
def require_draft(draft: Draft | None) -> Draft:
    if draft is None:
        raise ValueError("nothing to try yet: build a vector or load a preset first")
    return draft


def compare(runtime: SteeringService, steers: Sequence[uc.Steer], request: Request) -> Comparison:
    """Steered and unsteered completions of the prompt from the same seed."""
    return compare_steered(workspace(runtime), steers, request)


def try_draft(runtime: SteeringService, draft: Draft | None, prompt: str, seed, max_new_tokens, chat: bool) -> Comparison:
    request = Request.check(prompt, seed, max_new_tokens, chat)
    draft = require_draft(draft)
    request.ids(runtime.current_model())  # a prompt too long is refused before the vector is rebuilt
    steer = dataclasses.replace(draft.steer(), vector=current_draft_vector(runtime, draft))
    return compare(runtime, [steer], request)


# -- presets -------------------------------------------------------------------------------------
def preset_names(store: PresetStore) -> list[str]:
    return presets.names(store)


def preset_text(store: PresetStore, name: str | None) -> str:
    """The recipe as YAML under a line naming its file; a damaged file raises PresetError."""
    shown_ = presets.show(store, require_preset_name(name))
    origin = "shipped, read-only" if shown_.shipped else "user preset"
    return f"# {shown_.name} ({origin}): {shown_.path}\n{shown_.yaml}" + (f"# {shown_.note}\n" if shown_.note else "")


def preset_plain(store: PresetStore, name: str | None) -> str:
    """The preset in plain words (what the Presets view shows first; its file is under Advanced)."""
    name = require_preset_name(name)
    return f"{name}: {uc.plain_recipe(store.recipe(name))}"


def load_preset(runtime: SteeringService, name: str | None) -> Draft:
    return building.loaded(workspace(runtime), require_preset_name(name))


def save_draft(runtime: SteeringService, draft: Draft | None, name: str | None, overwrite: bool) -> str:
    """Save the draft under ``name``; returns the path written."""
    draft = require_draft(draft)
    name = require_preset_name(name, "name for the preset")
    return str(building.save(workspace(runtime), draft, name, bool(overwrite)))


def rename_preset(store: PresetStore, old: str | None, new: str | None) -> str:
    return str(presets.rename(store, require_preset_name(old), require_preset_name(new, "new name")))


def delete_preset(store: PresetStore, name: str | None) -> None:
    presets.delete(store, require_preset_name(name))


def export_gguf(runtime: SteeringService, name: str | None, strength) -> interchange.Exported:
    """The preset as a GGUF control vector for the loaded model, in a new temporary folder (for download)."""
    name = require_preset_name(name)
    scale = None if strength is None or (isinstance(strength, str) and not strength.strip()) else validation.strength(strength)
    runtime.current_model()  # no model: said before a folder is made
    folder = Path(tempfile.mkdtemp(prefix="steering-export-"))
    return interchange.export(workspace(runtime), name, folder / f"{name}.gguf", scale)


def import_gguf(runtime: SteeringService, file_path: str | None, name: str | None, overwrite: bool = False) -> interchange.Imported:
    """A preset from an uploaded GGUF control vector, checked against the loaded model."""
    if not file_path:
        raise ValueError("choose a .gguf control-vector file first")
    name = require_preset_name(name, "name for the imported preset")
    return interchange.import_file(workspace(runtime, "overwrite it"), Path(file_path), name, overwrite=bool(overwrite))


def recipe_form(recipe: Recipe, layer_count: int) -> dict:
    """The build form's values for a recipe, so that building from them gives the recipe again: auto for
    a layer chosen by measurement (else its first layer resolved for the model), strength auto with its
    dose for a calibrated strength (else the number)."""
    return {
        "positives": "\n".join(recipe.positive),
        "negatives": "\n".join(recipe.negative),
        "method": recipe.method if recipe.method in PROMPT_METHODS else DEFAULT_METHOD,
        "layer": default_layer(layer_count) if recipe.auto_layers else recipe.layer_indices(layer_count)[0],
        "strength": AUTO if recipe.calibrated else f"{recipe.strength:g}",
        "mode": recipe.mode,
        "auto": recipe.auto_layers,
        "dose": recipe.strength if recipe.calibrated else 1.0,
    }


# -- the mixer -----------------------------------------------------------------------------------
def add_to_mix(formula: str | None, name: str | None, weight) -> str:
    name = require_preset_name(name)
    weight = validation.finite(weight, "weight")
    if weight == 0:
        raise ValueError("a weight of 0 adds nothing; use a positive or negative weight")
    term = f"{abs(weight):g} × {name}" if abs(weight) != 1 else name
    text = (formula or "").strip()
    parse_mix(text)  # refuse to extend a formula that does not read
    if not text:
        return f"-{term}" if weight < 0 else term
    return f"{text} {'-' if weight < 0 else '+'} {term}"


def try_mix(runtime: SteeringService, formula: str | None, prompt: str, seed, max_new_tokens, chat: bool) -> tuple[Items, Comparison]:
    request = Request.check(prompt, seed, max_new_tokens, chat)
    items = mix_items(runtime.store, formula)
    if not items:
        raise ValueError("the mix is empty: add presets to it first")
    request.ids(runtime.current_model())  # a prompt too long is refused before the vectors are built
    ws = workspace(runtime)
    return items, compare(runtime, [steer_for(ws, name, strength) for name, strength in items], request)


def use_mix_in_chats(runtime: SteeringService, formula: str | None) -> Items:
    items = mix_items(runtime.store, formula)
    runtime.set_active(items)
    return items


def use_preset_in_chats(runtime: SteeringService, name: str | None) -> Items:
    """Add a saved preset, at its own strength, to the presets active for all chats (the others stay)."""
    name = require_preset_name(name, "saved preset to use (its name)")
    strength = float(runtime.store.recipe(name).strength)  # a float once the recipe is made
    items = [(other, value) for other, value in runtime.active if other != name] + [(name, strength)]
    runtime.set_active(items)
    return items


def attach_mix(runtime: SteeringService, character: str | None, formula: str | None) -> Items:
    if not isinstance(character, str) or not character.strip():
        raise ValueError("choose a character")
    items = mix_items(runtime.store, formula)
    runtime.attach(character.strip(), items)
    return list(runtime.attachments(character.strip()))


def status_text(runtime: SteeringService, session: str | None = None) -> str:
    """The runtime's line (model, whether steering can run on it, active presets, what steered the last
    reply of this user's ``session``, last problem)."""
    try:
        return runtime.status_line(session)
    except Exception as error:  # the status line must never break the page
        return f"status unavailable: {error}"
