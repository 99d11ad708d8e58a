"""What the Steering tab does, as plain functions over a runtime: no gradio here.

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
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..engine import effects, metrics
from ..engine.apply import MODES, Steer
from ..engine.calibration import Calibration
from ..engine.context import ModelContext
from ..engine.effects import SweepCell
from ..engine.feasibility import Feasibility, check_pair
from ..engine.generation import Sampling, check_room, completions, prompt_ids
from ..engine.interchange import Exported, Imported, export_preset, import_control_vector
from ..engine.methods import DEFAULT as DEFAULT_METHOD
from ..engine.methods import METHODS, PROMPT_LAYERS, PROMPT_METHODS, default_expand, make, measuring
from ..engine.metrics import topic_share
from ..engine.presets import PresetStore
from ..engine.recipe import Recipe
from ..engine.validation import check_name, finite, resolve_layer, whole
from ..engine.validation import dose as checked_dose
from ..engine.validation import seed as checked_seed
from ..engine.validation import strength as checked_strength
from ..engine.vector import SteeringVector
from ..engine.wording import plain_summary, shown

if TYPE_CHECKING:
    from ..runtime.interface import SteeringService

PageProgress = Callable[[float, str], None]  # progress(fraction, description), as gradio shows it
AUTO = "auto"  # a mode left to the recipe: actadd for actadd, all for one direction
UNSAVED = "unsaved"  # the recipe name of a vector built but not saved yet
MAX_SWEEP_GENERATIONS = 96
METRIC_SENTIMENT = "sentiment (VADER)"
METRIC_TOPIC = "topic words"
SWEEP_METRICS = (METRIC_SENTIMENT, METRIC_TOPIC)
Items = list[tuple[str, float]]


# -- defaults, all taken from the engine ---------------------------------------------------------
def default_strengths() -> str:
    """What an empty strength means, per method: 'actadd 4, mean auto, pca auto'."""
    return ", ".join(f"{method} {AUTO if METHODS[method].calibrated else format(METHODS[method].strength, 'g')}"
                     for method in PROMPT_METHODS)


def default_layer(num_layers: int) -> int:
    return resolve_layer(PROMPT_LAYERS[0], num_layers)


def sweep_layers_around(layer: int, num_layers: int, spread: int = 2) -> str:
    """The sweep's layers field for a vector built at ``layer``: it and its neighbours ``spread`` apart."""
    return ", ".join(str(at) for at in sorted({max(0, layer - spread), layer, min(num_layers - 1, layer + spread)}))


def sweep_strengths_around(strength: float) -> list[float]:
    """The strengths an empty sweep field means: none, half, the vector's own, double."""
    return [0.0, strength / 2, strength, strength * 2]


def default_sampling() -> Sampling:
    return Sampling()


def method_choices() -> list[str]:
    return list(PROMPT_METHODS)


def mode_choices() -> list[str]:
    return [AUTO, *MODES]


# -- checking input ------------------------------------------------------------------------------
def prompt_lines(text: str | None, side: str) -> list[str]:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
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
    return [finite(part, f"{what}: {part!r}") for part in parts]


def layer_list(text: str | None, num_layers: int, limit: int = 8) -> list[int]:
    layers = []
    for part in list_items(text, "layers", f"layer between 0 and {num_layers - 1}", limit):
        spec = part if part.endswith("%") else whole(part, f"layer {part!r}", 0, num_layers - 1)
        layers.append(resolve_layer(spec, num_layers))
    return sorted(set(layers))


def sampling(max_new_tokens) -> Sampling:
    return dataclasses.replace(default_sampling(), max_new_tokens=max_new_tokens)


# -- the model -----------------------------------------------------------------------------------
def num_layers(runtime: SteeringService) -> int:
    return runtime.current_model().num_layers


# -- building ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Draft:
    """A vector built in the tab (or loaded from a preset), with the recipe that made it."""

    recipe: Recipe
    vector: SteeringVector
    model: weakref.ref  # the model it was built for
    calibration: Calibration | None = None  # what calibration found when the tab built it

    def built_for(self, ctx: ModelContext) -> bool:
        return self.model() is ctx.model

    def steer(self) -> Steer:
        return Steer(self.vector, self.recipe.strength, self.recipe.mode)

    @property
    def measured_layer(self) -> bool:
        return self.recipe.auto_layers

    def plain(self) -> str:
        """What a newcomer reads first: where it steers, how strongly, at which layer."""
        source = "built, not saved yet" if self.recipe.name == UNSAVED else f"preset {self.recipe.name}"
        return f"{source}: {plain_summary(self.recipe, self.vector.layers, self.measured_layer)}"

    def summary(self) -> str:
        """The method's details (under Advanced)."""
        r, v, found = self.recipe, self.vector, self.calibration
        source = "built, not saved" if r.name == UNSAVED else f"preset {r.name}"
        norms = []
        for layer in v.layers:
            relative = v.relative_norm(layer)
            norms.append(f"layer {layer}: norm {v.norm(layer):.1f}" + (f" ({relative:.2f}× the residual)" if relative else ""))
        rows = f"{v.positions} row(s)" if v.per_position else "one direction"
        strength = f"dose {shown(r.strength)} (calibrated)" if r.calibrated else f"strength {shown(r.strength)}"
        parts = [source, r.method, strength, f"mode {r.mode}", rows, "; ".join(norms)]
        if r.expand:
            parts.insert(2, f"expanded {r.expand}")
        if found is not None and r.auto_layers:
            parts.append(f"layer {found.layers[0]} chosen by measurement")
        if found is not None and r.calibrated:
            parts.append(f"calibrated to {found.kl:.2f} nats/token of KL ({found.seconds:.0f} s)")
        return " · ".join(parts)


def make_recipe(positives: str, negatives: str, method: str, layer, strength, mode: str, auto: bool = False,
                dose=1.0, name: str = UNSAVED) -> Recipe:
    """A recipe from the build form. ``auto``: the method's default layers (measured for mean and pca),
    else the layer given. The strength given: empty for the method's default (calibrated for mean and
    pca), a number, or "auto" (calibrated), a calibrated one at ``dose``. One short pair is expanded as
    the command line does."""
    pos, neg = prompt_lines(positives, "positive"), prompt_lines(negatives, "negative")
    method = method or DEFAULT_METHOD
    text = strength.strip().lower() if isinstance(strength, str) else strength
    layers = None if auto else [whole(layer, "layer", 0)]
    calibrated = None
    if text == AUTO or (text in (None, "") and METHODS[method].calibrated):
        value, calibrated = checked_dose(dose), True
    else:
        value = None if text in (None, "") else checked_strength(text)
    return Recipe(name=name, positive=pos, negative=neg, method=method, layers=layers, strength=value, calibrated=calibrated,
                  mode=None if mode in (None, "", AUTO) else mode, expand=default_expand(method, pos, neg))


def build_draft(runtime: SteeringService, positives: str, negatives: str, method: str, layer, strength, mode: str,
                auto: bool = False, dose=1.0, progress: PageProgress | None = None) -> Draft:
    recipe = make_recipe(positives, negatives, method, layer, strength, mode, auto, dose)
    ctx = runtime.current_model()
    if not recipe.auto_layers:
        ctx.layer_indices(recipe.layers)
    return _build(runtime, recipe, ctx, progress)


def check_form(runtime: SteeringService, positives: str, negatives: str) -> Feasibility:
    """Whether a vector from the form's one pair is likely to move the loaded model (engine/feasibility.py)."""
    pos, neg = prompt_lines(positives, "positive"), prompt_lines(negatives, "negative")
    if len(pos) != 1 or len(neg) != 1:
        raise ValueError(f"the check looks at one pair: write one positive and one negative line (got {len(pos)} and {len(neg)})")
    ctx = runtime.current_model()
    with runtime.lock:
        return check_pair(ctx, pos[0], neg[0])


def _build(runtime: SteeringService, recipe: Recipe, ctx: ModelContext, progress: PageProgress | None) -> Draft:
    then = measuring(recipe)

    def pairs_read(done: int, total: int) -> None:
        if progress is not None:
            progress(done / total, f"reading prompt pairs {done}/{total}" + (f"; now {then}" if done >= total and then else ""))

    with runtime.lock:
        made = make(recipe, ctx, progress=pairs_read)
    return Draft(recipe, made.vector, weakref.ref(ctx.model), made.calibration)


def current_draft_vector(runtime: SteeringService, draft: Draft) -> SteeringVector:
    """The draft's vector for the model loaded now (rebuilt when the model changed since)."""
    ctx = runtime.current_model()
    if draft.built_for(ctx):
        return draft.vector
    return _build(runtime, draft.recipe, ctx, None).vector


# -- trying --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    steered: str
    unsteered: str
    seed: int


def require_draft(draft: Draft | None) -> Draft:
    if draft is None:
        raise ValueError("nothing to try yet: build a vector or load a preset first")
    return draft


@dataclass(frozen=True)
class Request:
    """A checked prompt, seed, sampling and chat-template choice."""

    prompt: str
    seed: int
    sampling: Sampling
    chat: bool

    @classmethod
    def check(cls, prompt: str | None, seed, max_new_tokens, chat) -> Request:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty")
        return cls(prompt, checked_seed(seed), sampling(max_new_tokens), bool(chat))

    def ids(self, ctx: ModelContext) -> list[int]:
        """The prompt's token ids; a prompt that leaves the reply no room in the model's context is refused."""
        ids = prompt_ids(ctx, self.prompt, self.chat)
        check_room(ctx, ids, self.sampling)
        return ids


def compare(runtime: SteeringService, steers: Sequence[Steer], request: Request) -> Comparison:
    """Steered and unsteered completions of the prompt from the same seed."""
    ctx = runtime.current_model()
    ids = request.ids(ctx)
    with runtime.lock:
        found = completions(ctx, ids, steers, [request.seed], request.sampling, compare=True)
        results = {c.steered: c.text for c in found}
    return Comparison(results[True], results[False], request.seed)


def try_draft(runtime: SteeringService, draft: Draft | None, prompt: str, seed, max_new_tokens, chat: bool) -> Comparison:
    request = Request.check(prompt, seed, max_new_tokens, chat)
    draft = require_draft(draft)
    request.ids(runtime.current_model())  # a prompt too long is refused before the vector is rebuilt
    steer = dataclasses.replace(draft.steer(), vector=current_draft_vector(runtime, draft))
    return compare(runtime, [steer], request)


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
    unit: str = "strength"  # "dose" for a calibrated recipe: multiples of its calibrated strength

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
        headers = [self.unit, *(f"layer {layer}" for layer in self.layers)]
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
        axes.set_xlabel(self.unit + (" (1 = calibrated)" if self.unit == "dose" else ""))
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
    unit = "dose" if draft.recipe.calibrated else "strength"
    total = len(layer_values) * len(strength_values) * samples
    if total > MAX_SWEEP_GENERATIONS:
        raise ValueError(f"this sweep needs {total} completions; keep it to {MAX_SWEEP_GENERATIONS} (fewer strengths, layers or samples)")

    def shown_progress(done: int, total: int, layer: int, strength: float) -> None:
        if progress is not None:
            progress(done / total, f"layer {layer}, {unit} {shown(strength)}: completion {done + 1} of {total}")

    cells = effects.sweep(ctx, lambda layer: _vector_at(runtime, draft, layer, ctx), draft.recipe.mode, request.ids(ctx), layer_values,
                          strength_values, range(request.seed, request.seed + samples), request.sampling, score, shown_progress,
                          lambda: runtime.lock)
    return Sweep(prompt, metric_label, tuple(cells), unit)


def _vector_at(runtime: SteeringService, draft: Draft, layer: int, ctx: ModelContext) -> SteeringVector:
    if draft.built_for(ctx) and draft.vector.layers == [layer]:
        return draft.vector
    recipe = dataclasses.replace(draft.recipe, layers=[layer])
    return _build(runtime, recipe, ctx, None).vector


# -- presets -------------------------------------------------------------------------------------
def preset_names(store: PresetStore) -> list[str]:
    return [info.name for info in store.list()]


def preset_text(store: PresetStore, name: str | None) -> str:
    """The recipe as YAML under a line naming its file; a damaged file raises PresetError."""
    name = require_preset_name(name)
    path = store.path(name)
    recipe = store.recipe(name)
    origin = "shipped, read-only" if store.is_shipped(name) else "user preset"
    note = recipe.distill.note() if recipe.distill else None
    return f"# {name} ({origin}): {path}\n{recipe.to_yaml()}" + (f"# {note}\n" if note else "")


def require_preset_name(name: str | None, what: str = "preset") -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"choose a {what} first")
    return check_name(name)


def load_preset(runtime: SteeringService, name: str | None) -> Draft:
    name = require_preset_name(name)
    recipe = runtime.store.recipe(name)
    ctx = runtime.current_model()
    vector = runtime.vector(name)
    return Draft(recipe, vector, weakref.ref(ctx.model))


def save_draft(runtime: SteeringService, draft: Draft | None, name: str | None, overwrite: bool) -> str:
    """Save the draft under ``name``; returns the path written."""
    draft = require_draft(draft)
    name = require_preset_name(name, "name for the preset")
    recipe = dataclasses.replace(draft.recipe, name=name)
    ctx = runtime.current_model()
    vector = draft.vector if draft.built_for(ctx) else None
    calibration = draft.calibration if vector is not None else None
    return str(runtime.store.save(recipe, vector, ctx if vector is not None else None, overwrite=bool(overwrite),
                                  calibration=calibration))


def rename_preset(store: PresetStore, old: str | None, new: str | None) -> str:
    old = require_preset_name(old)
    new = require_preset_name(new, "new name")
    return str(store.rename(old, new))


def delete_preset(store: PresetStore, name: str | None) -> None:
    store.delete(require_preset_name(name))


def export_gguf(runtime: SteeringService, name: str | None, strength) -> Exported:
    """The preset as a GGUF control vector for the loaded model, in a new temporary folder (for download)."""
    name = require_preset_name(name)
    scale = None if strength is None or (isinstance(strength, str) and not strength.strip()) else checked_strength(strength)
    ctx = runtime.current_model()
    folder = Path(tempfile.mkdtemp(prefix="steering-export-"))
    with runtime.lock:
        return export_preset(runtime.store, name, ctx, folder / f"{name}.gguf", scale)


def import_gguf(runtime: SteeringService, file_path: str | None, name: str | None, overwrite: bool = False) -> Imported:
    """A preset from an uploaded GGUF control vector, checked against the loaded model."""
    if not file_path:
        raise ValueError("choose a .gguf control-vector file first")
    name = require_preset_name(name, "name for the imported preset")
    return import_control_vector(runtime.store, Path(file_path), name, runtime.current_model(), overwrite=bool(overwrite))


def recipe_form(recipe: Recipe, layer_count: int) -> dict:
    """The build form's values for a recipe, so that building from them gives the recipe again: auto for
    a layer chosen by measurement (else its first layer resolved for the model), strength auto with its
    dose for a calibrated strength (else the number)."""
    auto = recipe.auto_layers
    return {
        "positives": "\n".join(recipe.positive),
        "negatives": "\n".join(recipe.negative),
        "method": recipe.method if recipe.method in PROMPT_METHODS else DEFAULT_METHOD,
        "layer": default_layer(layer_count) if recipe.auto_layers else recipe.layer_indices(layer_count)[0],
        "strength": AUTO if recipe.calibrated else f"{recipe.strength:g}",
        "mode": recipe.mode,
        "auto": auto,
        "dose": recipe.strength if recipe.calibrated else 1.0,
    }


# -- the mixer -----------------------------------------------------------------------------------
_OPERATOR = re.compile(r"\s+([+\-−])\s*")
_TERM = re.compile(
    r"^(?:(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|[+-]?nan|[+-]?inf(?:inity)?)\s*[*×]\s*)?"
    r"(?P<name>\"[^\"]*\"|'[^']*'|.+?)\s*$",
    re.IGNORECASE,
)


def parse_mix(formula: str | None) -> list[tuple[str, float]]:
    """``Love - Hate + 0.5 × dogs`` → [("Love", 1), ("Hate", -1), ("dogs", 0.5)] (weights, not strengths).

    Put spaces around + and − (names may contain '-'); quote names that start with a number."""
    text = (formula or "").strip()
    if not text:
        return []
    sign = 1.0
    if text[0] in "+-−":
        sign, text = (-1.0 if text[0] != "+" else 1.0), text[1:].strip()
    pieces = _OPERATOR.split(text)
    terms = [(sign, pieces[0])]
    for operator, term in zip(pieces[1::2], pieces[2::2]):
        terms.append((1.0 if operator == "+" else -1.0, term))
    return [_parse_term(term, sign) for sign, term in terms]


def _parse_term(term: str, sign: float) -> tuple[str, float]:
    match = _TERM.match(term.strip())
    if not term.strip() or not match:
        raise ValueError(f"mix: cannot read the term {term!r}; write e.g. Love - Hate + 0.5 × dogs")
    weight = finite(match["weight"], f"mix: the weight of {match['name']!r}") if match["weight"] else 1.0
    name = match["name"].strip("\"'")
    return check_name(name), sign * weight


def mix_items(store: PresetStore, formula: str | None) -> Items:
    """The mix as (preset, strength) items: each weight times the preset's saved strength (a preset
    named twice gets the sum)."""
    strengths: dict[str, float] = {}
    for name, weight in parse_mix(formula):
        strengths[name] = strengths.get(name, 0.0) + weight * store.recipe(name).strength
    return list(strengths.items())


def add_to_mix(formula: str | None, name: str | None, weight) -> str:
    name = require_preset_name(name)
    weight = finite(weight, "weight")
    if weight == 0:
        raise ValueError("a weight of 0 adds nothing; use a positive or negative weight")
    term = f"{abs(weight):g} × {name}" if abs(weight) != 1 else name
    text = (formula or "").strip()
    parse_mix(text)  # refuse to extend a formula that does not read
    if not text:
        return f"-{term}" if weight < 0 else term
    return f"{text} {'-' if weight < 0 else '+'} {term}"


def describe_items(items: Items) -> str:
    if not items:
        return "nothing"
    return ", ".join(f"{name} × {shown(strength)}" for name, strength in items)


def mix_steers(runtime: SteeringService, items: Items) -> list[Steer]:
    return [Steer(runtime.vector(name), strength, runtime.store.recipe(name).mode) for name, strength in items]


def try_mix(runtime: SteeringService, formula: str | None, prompt: str, seed, max_new_tokens, chat: bool) -> tuple[Items, Comparison]:
    request = Request.check(prompt, seed, max_new_tokens, chat)
    items = mix_items(runtime.store, formula)
    if not items:
        raise ValueError("the mix is empty: add presets to it first")
    request.ids(runtime.current_model())  # a prompt too long is refused before the vectors are built
    return items, compare(runtime, mix_steers(runtime, items), request)


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


def require_character(character: str | None) -> str:
    if not isinstance(character, str) or not character.strip():
        raise ValueError("choose a character")
    return character.strip()


def attach_mix(runtime: SteeringService, character: str | None, formula: str | None) -> Items:
    character = require_character(character)
    items = mix_items(runtime.store, formula)
    runtime.attach(character, items)
    return list(runtime.attachments(character))


# -- status --------------------------------------------------------------------------------------
def status_text(runtime: SteeringService, session: str | None = None) -> str:
    """The runtime's line (model, whether steering can run on it, active presets, what steered the last
    reply of this user's ``session``, last problem)."""
    try:
        return runtime.status_line(session)
    except Exception as error:  # the status line must never break the page
        return f"status unavailable: {error}"
