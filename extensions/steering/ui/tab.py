"""The Steering tab, on gradio's 4.37 API (the webui's): components and wiring only.

The work is done by ``actions``. Every handler shows its result or its problem in the message line
under the status line (and a problem also as a gr.Warning toast); nothing raises into the page.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import gradio as gr

from . import actions
from .messages import EXPECTED_ERRORS, done_message, markdown_text, problem_message, problem_text

EXAMPLE_PROMPT = "I hate you because"  # the seed's example
WORKING = "⏳ working…"


def working() -> str:
    return WORKING


@dataclass
class GenerationInputs:
    """Prompt, seed, length and chat template of one section."""

    prompt: gr.Textbox
    seed: gr.Number
    max_new_tokens: gr.Number
    chat: gr.Checkbox

    @classmethod
    def create(cls, prefix: str) -> GenerationInputs:
        prompt = gr.Textbox(EXAMPLE_PROMPT, label="Prompt", lines=2, elem_id=f"steering-{prefix}-prompt")
        with gr.Row():
            seed = gr.Number(0, label="Seed", elem_id=f"steering-{prefix}-seed")
            tokens = gr.Number(actions.default_sampling().max_new_tokens, label="Max new tokens",
                               elem_id=f"steering-{prefix}-tokens")
            chat = gr.Checkbox(False, label="Wrap in the chat template", elem_id=f"steering-{prefix}-chat")
        return cls(prompt, seed, tokens, chat)

    def components(self) -> list:
        return [self.prompt, self.seed, self.max_new_tokens, self.chat]


@dataclass
class SteeringTab:
    """The tab's components; ``refresh_on(event)`` re-reads the model and presets when ``event`` fires
    (e.g. the webui's tab being opened, or a standalone app's load)."""

    runtime: object
    status: gr.Markdown = None
    message: gr.Markdown = None
    draft: gr.State = None
    layer: gr.Slider = None
    built: gr.Markdown = None
    build_form: list = field(default_factory=list)  # positives, negatives, method, layer, strength, mode, auto, dose
    preset_menus: list = field(default_factory=list)

    # -- wiring ------------------------------------------------------------------------------
    def wire(self, trigger: Callable, handler: Callable, inputs: list, outputs: list, on_error: list | None = None,
             announce: bool = True) -> None:
        """``handler(*inputs)`` returns (message, *outputs); a problem becomes a visible warning and
        leaves the outputs as they were (or sets them to ``on_error``). With ``announce`` the message
        line first says "working", so that even a repeated result is seen as new."""

        @functools.wraps(handler)  # keeps the signature, so gradio still finds progress=gr.Progress()
        def run(*args, **kwargs):
            try:
                message, *values = handler(*args, **kwargs)
                return [done_message(message), actions.status_text(self.runtime), *values]
            except Exception as error:  # noqa: BLE001 - never a traceback in the page
                text = problem_text(error, f"the Steering tab's {handler.__name__}")
            gr.Warning(text)
            kept = on_error if on_error is not None else [gr.update() for _ in outputs]
            return [problem_message(text), actions.status_text(self.runtime), *kept]

        targets = [self.message, self.status, *outputs]
        if announce:
            trigger(working, None, [self.message], show_progress="hidden").then(run, inputs, targets)
        else:
            trigger(run, inputs, targets)

    def refresh(self):
        """Status, layer slider bounds and preset lists, read again."""
        names = actions.preset_names(self.runtime.store)
        return [actions.status_text(self.runtime), self.layer_update(), *(gr.update(choices=names) for _ in self.preset_menus)]

    def refresh_outputs(self) -> list:
        return [self.status, self.layer, *self.preset_menus]

    def refresh_on(self, event: Callable) -> None:
        """Wire ``event`` (a user's action or a page load) to a refresh, without spinners over the
        outputs. Never a Markdown's ``.change``: in gradio 4.37 it fires at every re-render, which this
        refresh itself causes, so it would loop for as long as a page is open."""
        event(self.refresh, None, self.refresh_outputs(), show_progress="hidden")

    def layer_update(self, value=None):
        try:
            count = actions.num_layers(self.runtime)
        except EXPECTED_ERRORS:
            return gr.update()
        return gr.update(maximum=count - 1, value=value) if value is not None else gr.update(maximum=count - 1)

    def preset_menu(self, label: str, elem_id: str) -> gr.Dropdown:
        menu = gr.Dropdown(actions.preset_names(self.runtime.store), value=None, label=label, elem_id=elem_id)
        self.preset_menus.append(menu)
        return menu

    def menus_update(self, selected=None) -> list:
        names = actions.preset_names(self.runtime.store)
        return [gr.update(choices=names, value=selected if selected in names else None) for _ in self.preset_menus]


def initial_layers(runtime) -> tuple[int, int]:
    """(slider maximum, default layer) for the model loaded now; a placeholder until one is."""
    try:
        count = actions.num_layers(runtime)
    except EXPECTED_ERRORS:
        return 1, 0
    return count - 1, actions.default_layer(count)


def create_tab(runtime, more: Sequence[tuple[str, Callable[[object], object]]] = ()) -> SteeringTab:
    """Create the tab's components inside the current gr.Blocks (the webui makes the tab around them).
    ``more``: further sub-tabs as (title, build(runtime)) pairs, e.g. another panel of the extension."""
    tab = SteeringTab(runtime)
    with gr.Row():
        tab.status = gr.Markdown(actions.status_text(runtime), elem_id="steering-status")
        refresh = gr.Button("⟳ Refresh", size="sm", scale=0, elem_id="steering-refresh")
    tab.message = gr.Markdown("", elem_id="steering-message")
    tab.draft = gr.State(None)
    wirings = []  # wired once every section exists, so that each sees all preset menus
    for title, section in (("Build & try", build_section), ("Sweep", sweep_section), ("Presets", presets_section),
                           ("Mixer", mixer_section)):
        with gr.Tab(title, elem_id=f"steering-{section.__name__.split('_')[0]}-tab"):
            wirings.append(section(tab))
    for title, build in more:
        with gr.Tab(title):
            build(runtime)
    for wire in wirings:
        wire()
    refresh.click(tab.refresh, None, tab.refresh_outputs())
    return tab


# -- build & try -------------------------------------------------------------------------------------
def build_section(tab: SteeringTab) -> Callable[[], None]:
    runtime = tab.runtime
    maximum, layer = initial_layers(runtime)
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Build a vector\nOne prompt per line; many lines make many pairs (line *i* with line *i*).")
            with gr.Row():
                positives = gr.Textbox("Love", label="Positive prompts", lines=3, elem_id="steering-positives")
                negatives = gr.Textbox("Hate", label="Negative prompts", lines=3, elem_id="steering-negatives")
            with gr.Row():
                method = gr.Dropdown(actions.method_choices(), value=actions.DEFAULT_METHOD, label="Method",
                                     info="actadd: one pair, added at the prompt's first positions; mean, pca: many pairs, one direction",
                                     elem_id="steering-method")
                mode = gr.Dropdown(actions.mode_choices(), value=actions.AUTO, label="Mode",
                                   info="auto: actadd for actadd, all for mean and pca", elem_id="steering-mode")
            auto = gr.Checkbox(True, label="Auto layer", elem_id="steering-auto",
                               info="measure the best layer for this model (mean, pca); off: the Layer slider below")
            dose = gr.Slider(0.05, 3, value=1, step=0.05, label="Dose (1 = calibrated)", elem_id="steering-dose",
                             info="a multiple of the calibrated strength (strength empty or auto)")
            gr.Markdown("One pair such as *weddings* / *politics*, or one sentence a side, is told to the model in chat "
                        "framings over generic replies (expanded): a bare word read once as text barely moves a topic.",
                        elem_id="steering-expand-why")
            tab.layer = gr.Slider(0, maximum, value=layer, step=1, label="Layer (when auto is off)", elem_id="steering-layer",
                                  interactive=False)
            strength = gr.Textbox("", label="Strength",
                                  placeholder=f"empty: the method's default ({actions.default_strengths()}); auto: calibrated × dose; or a number",
                                  elem_id="steering-strength")
            with gr.Row():
                build = gr.Button("Build", variant="primary", elem_id="steering-build")
                check = gr.Button("Will this work?", elem_id="steering-check")
            checked = gr.Markdown("", elem_id="steering-checked")
            tab.built = gr.Markdown("Nothing built yet.", elem_id="steering-built")
        with gr.Column():
            gr.Markdown("### Try it\nThe same prompt and seed, with and without the vector.")
            inputs = GenerationInputs.create("try")
            run = gr.Button("Try", variant="primary", elem_id="steering-try")
            with gr.Row():
                steered = gr.Textbox(label="Steered", lines=6, interactive=False, elem_id="steering-steered")
                unsteered = gr.Textbox(label="Unsteered", lines=6, interactive=False, elem_id="steering-unsteered")

    def build_vector(positives, negatives, method, layer, strength, mode, auto, dose, progress=gr.Progress()):
        progress(0, desc="building")
        draft = actions.build_draft(runtime, positives, negatives, method, layer, strength, mode, auto, dose, progress=progress)
        return "built: " + draft.summary(), draft, markdown_text(draft.summary()), tab.layer_update()

    def check_pair(positives, negatives, progress=gr.Progress()):
        progress(0, desc="telling the model the positive side")
        found = actions.check_form(runtime, positives, negatives)
        return "checked the pair", markdown_text(found.line) + "  \n<small>" + markdown_text(found.details()) + "</small>"

    def try_vector(draft, prompt, seed, max_new_tokens, chat, progress=gr.Progress()):
        progress(0, desc="generating steered and unsteered completions")
        result = actions.try_draft(runtime, draft, prompt, seed, max_new_tokens, chat)
        return f"tried seed {result.seed}", result.steered, result.unsteered

    def wire() -> None:
        # a user's tick only (never a re-render): the layer is read when auto is off
        auto.input(lambda on: gr.update(interactive=not on), auto, tab.layer, show_progress="hidden")
        tab.wire(build.click, build_vector, tab.build_form, [tab.draft, tab.built, tab.layer])
        tab.wire(check.click, check_pair, [positives, negatives], [checked])
        tab.wire(run.click, try_vector, [tab.draft, *inputs.components()], [steered, unsteered])

    tab.build_form = [positives, negatives, method, tab.layer, strength, mode, auto, dose]
    return wire


# -- sweep -------------------------------------------------------------------------------------------
def sweep_section(tab: SteeringTab) -> Callable[[], None]:
    runtime = tab.runtime
    _, layer = initial_layers(runtime)
    gr.Markdown("### Sweep\nThe vector built (or loaded) last, at every strength × layer; pick settings by looking.")
    inputs = GenerationInputs.create("sweep")
    with gr.Row():
        strengths = gr.Textbox("", label="Strengths or doses", placeholder="empty: 0, ½, 1 and 2 × the vector's strength (doses for a calibrated vector)",
                               elem_id="steering-sweep-strengths")
        layers = gr.Textbox(str(layer), label="Layers (indices or shares such as 40%)", elem_id="steering-sweep-layers")
        samples = gr.Number(1, label="Samples per cell", elem_id="steering-sweep-samples")
    with gr.Row():
        metrics = actions.sweep_metric_choices()
        metric = gr.Radio(metrics, value=metrics[0], label="Measured effect", elem_id="steering-metric")
        topic = gr.Textbox("", label="Topic words (for the topic words metric)", placeholder="love, kind, happy",
                           elem_id="steering-topic")
    run = gr.Button("Sweep", variant="primary", elem_id="steering-sweep")
    plot = gr.Plot(label="Effect by strength or dose", elem_id="steering-plot")
    grid = gr.Dataframe(label="Completions: [effect] text", wrap=True, interactive=False, elem_id="steering-grid")

    def run_sweep(draft, prompt, seed, max_new_tokens, chat, strengths, layers, samples, metric, topic, progress=gr.Progress()):
        progress(0, desc="sweeping")
        result = actions.sweep(runtime, draft, prompt, strengths, layers, metric, topic, seed, samples, max_new_tokens,
                               chat, progress=progress)
        headers, rows = result.table()
        return f"swept {len(result.cells)} cell(s)", result.figure(), {"headers": headers, "data": rows}

    return lambda: tab.wire(run.click, run_sweep, [tab.draft, *inputs.components(), strengths, layers, samples, metric, topic],
                            [plot, grid])


# -- presets -----------------------------------------------------------------------------------------
def presets_section(tab: SteeringTab) -> Callable[[], None]:
    runtime, store = tab.runtime, tab.runtime.store
    gr.Markdown("### Presets\nA preset is a recipe (prompts, layer, strength, mode); its vectors are cached per model.")
    with gr.Row():
        chosen = tab.preset_menu("Preset", "steering-preset")
        load = gr.Button("Load into Build", elem_id="steering-load")
        delete = gr.Button("Delete", variant="stop", elem_id="steering-delete")
    recipe = gr.Code("", language="yaml", label="Recipe", interactive=False, elem_id="steering-recipe")
    with gr.Row():
        new_name = gr.Textbox("", label="Rename to", elem_id="steering-rename-to")
        rename = gr.Button("Rename", elem_id="steering-rename")
    gr.Markdown("#### Save the vector built last")
    with gr.Row():
        save_name = gr.Textbox("", label="Name", elem_id="steering-save-name")
        overwrite = gr.Checkbox(False, label="Overwrite a user preset of that name", elem_id="steering-overwrite")
        save = gr.Button("Save", variant="primary", elem_id="steering-save")
    gr.Markdown("#### GGUF control vectors (llama.cpp, ik_llama.cpp, repeng)\nExport writes the chosen preset for the "
                "loaded model; llama.cpp's scale 1 is the strength given. Import checks the file against the loaded model.")
    with gr.Row():
        export_strength = gr.Textbox("", label="Strength baked in (empty: the preset's)", elem_id="steering-export-strength")
        export = gr.Button("Export the chosen preset as .gguf", elem_id="steering-export")
        exported = gr.File(label="Control vector", interactive=False, elem_id="steering-exported")
    with gr.Row():
        upload = gr.File(label="A .gguf control vector", file_types=[".gguf"], type="filepath", elem_id="steering-import-file")
        import_name = gr.Textbox("", label="Name for the preset", elem_id="steering-import-name")
        import_ = gr.Button("Import", elem_id="steering-import")

    def show(name):
        if not name:
            return "no preset chosen", ""
        return f"showing {name}", actions.preset_text(store, name)

    def load_into_build(name, progress=gr.Progress()):
        progress(0, desc=f"loading {name}")
        draft = actions.load_preset(runtime, name)
        form = actions.recipe_form(draft.recipe, actions.num_layers(runtime))
        values = [form[key] for key in ("positives", "negatives", "method")]
        return (f"loaded {name} into Build", draft, markdown_text(draft.summary()), *values,
                {**tab.layer_update(form["layer"]), "interactive": not form["auto"]},
                form["strength"], form["mode"], form["auto"], form["dose"])

    def save_draft(draft, name, overwrite):
        path = actions.save_draft(runtime, draft, name, overwrite)
        return (f"saved {name} to {path}", *tab.menus_update(name), actions.preset_text(store, name))

    def rename_preset(old, new):
        path = actions.rename_preset(store, old, new)
        return (f"renamed {old} to {new} ({path})", *tab.menus_update(new), actions.preset_text(store, new))

    def delete_preset(name):
        actions.delete_preset(store, name)
        return (f"deleted {name}", *tab.menus_update(), "")

    def export_preset(name, strength, progress=gr.Progress()):
        progress(0, desc=f"exporting {name}")
        done = actions.export_gguf(runtime, name, strength)
        return done.summary(), str(done.path)

    def import_preset(path, name):
        done = actions.import_gguf(runtime, path, name)
        return (done.summary(), *tab.menus_update(done.recipe.name), actions.preset_text(store, done.recipe.name))

    def wire() -> None:
        tab.wire(chosen.input, show, [chosen], [recipe], on_error=[""], announce=False)
        tab.wire(load.click, load_into_build, [chosen], [tab.draft, tab.built, *tab.build_form])
        tab.wire(save.click, save_draft, [tab.draft, save_name, overwrite], [*tab.preset_menus, recipe])
        tab.wire(rename.click, rename_preset, [chosen, new_name], [*tab.preset_menus, recipe])
        tab.wire(delete.click, delete_preset, [chosen], [*tab.preset_menus, recipe])
        tab.wire(export.click, export_preset, [chosen, export_strength], [exported])
        tab.wire(import_.click, import_preset, [upload, import_name], [*tab.preset_menus, recipe])

    return wire


# -- mixer -------------------------------------------------------------------------------------------
def mixer_section(tab: SteeringTab) -> Callable[[], None]:
    runtime, store = tab.runtime, tab.runtime.store
    gr.Markdown("### Mixer\nCombine presets, each weight times the preset's own strength: `Love - Hate + 0.5 × dogs` "
                "(spaces around + and −; quote names that start with a number).")
    formula = gr.Textbox("", label="Mix", placeholder="Love - Hate + 0.5 × dogs", elem_id="steering-mix")
    with gr.Row():
        to_add = tab.preset_menu("Preset to add", "steering-mix-preset")
        weight = gr.Textbox("1", label="Weight", elem_id="steering-mix-weight")
        add = gr.Button("Add to mix", elem_id="steering-mix-add")
    mix_view = gr.Markdown("", elem_id="steering-mix-view")
    inputs = GenerationInputs.create("mix")
    with gr.Row():
        run = gr.Button("Try the mix", variant="primary", elem_id="steering-mix-try")
        use = gr.Button("Use for all chats", elem_id="steering-mix-use")
        off = gr.Button("Steering off for all chats", elem_id="steering-mix-off")
    with gr.Row():
        steered = gr.Textbox(label="Steered by the mix", lines=6, interactive=False, elem_id="steering-mix-steered")
        unsteered = gr.Textbox(label="Unsteered", lines=6, interactive=False, elem_id="steering-mix-unsteered")
    gr.Markdown("#### Attach the mix to a character\nIts chats are then steered by it (an empty mix detaches).")
    with gr.Row():
        character = gr.Textbox("", label="Character", placeholder="Assistant", elem_id="steering-character")
        attach = gr.Button("Attach", elem_id="steering-attach")
    attached = gr.Markdown("", elem_id="steering-attached")

    def describe(items) -> str:
        return markdown_text(actions.describe_items(items))

    def add_term(formula, name, weight):
        text = actions.add_to_mix(formula, name, weight)
        return f"added {name}", text, describe(actions.mix_items(store, text))

    def try_mix(formula, prompt, seed, max_new_tokens, chat, progress=gr.Progress()):
        progress(0, desc="generating with the mix")
        items, result = actions.try_mix(runtime, formula, prompt, seed, max_new_tokens, chat)
        return f"tried the mix on seed {result.seed}", describe(items), result.steered, result.unsteered

    def use_mix(formula):
        items = actions.use_mix_in_chats(runtime, formula)
        return f"all chats now steered by: {actions.describe_items(items)}", describe(items)

    def steering_off():
        actions.use_mix_in_chats(runtime, "")
        return ("steering off for all chats (attached presets still apply to their characters)",)

    def attach_mix(character, formula):
        items = actions.attach_mix(runtime, character, formula)
        text = f"{character.strip()}: {actions.describe_items(items)}"
        return f"attached to {text}", markdown_text(text)

    def wire() -> None:
        tab.wire(add.click, add_term, [formula, to_add, weight], [formula, mix_view])
        tab.wire(run.click, try_mix, [formula, *inputs.components()], [mix_view, steered, unsteered])
        tab.wire(use.click, use_mix, [formula], [mix_view])
        tab.wire(off.click, steering_off, [], [])
        tab.wire(attach.click, attach_mix, [character, formula], [attached])

    return wire


def extension_panels() -> list[tuple[str, Callable[[object], object]]]:
    """The extension's further panels, shown as sub-tabs of the Steering tab."""
    from .distill_panel import create_distill_panel

    return [("System prompt → vector", create_distill_panel)]


def create_app(runtime, title: str = "Steering") -> gr.Blocks:
    """The tab on its own page (the standalone ``ui`` command and the browser tests)."""
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        with gr.Tab("Steering", elem_id="steering-tab"):
            tab = create_tab(runtime, more=extension_panels())
        tab.refresh_on(app.load)
    return app
