"""The Steering tab, on gradio's 4.37 API (the webui's): components and wiring only.

The work is done by ``actions``. Every handler shows its result or its problem in the message line
under the status line (and a problem also as a gr.Warning toast); nothing raises into the page.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import gradio as gr

from ..usecases import MEASURED
from . import actions, sweep
from .messages import EXPECTED_ERRORS, markdown_text
from .steering_tab import DOSE_RANGE, STANDALONE_CSS, GenerationInputs, SteeringTab, small_button

if TYPE_CHECKING:  # mypy (.ci/run) checks the tab against the runtime's contract
    from ..runtime.interface import SteeringService


def initial_layers(runtime: SteeringService) -> tuple[int, int]:
    """(slider maximum, default layer) for the model loaded now; a placeholder until one is."""
    try:
        count = actions.num_layers(runtime)
    except EXPECTED_ERRORS:
        return 1, 0
    return count - 1, actions.default_layer(count)


def create_tab(runtime: SteeringService, more: Sequence[tuple[str, Callable[[SteeringService], object]]] = ()) -> SteeringTab:
    """Create the tab's components inside the current gr.Blocks (the webui makes the tab around them).
    ``more``: further sub-tabs as (title, build(runtime)) pairs, e.g. another panel of the extension."""
    tab = SteeringTab(runtime)
    with gr.Row():
        tab.status = gr.Markdown(actions.status_text(runtime), elem_id="steering-status")
        refresh = small_button("⟳ Refresh", "steering-refresh")
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
    """Plain words first (what to lean toward and away from, how strongly); the method's choices and
    terms under "Advanced", closed."""
    runtime = tab.runtime
    maximum, layer = initial_layers(runtime)
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Build a vector\nWhat replies should lean toward, and what away from: a word or a sentence "
                        "each (one per line for several).")
            with gr.Row():
                positives = gr.Textbox("Love", label="Toward", lines=3, elem_id="steering-positives")
                negatives = gr.Textbox("Hate", label="Away from", lines=3, elem_id="steering-negatives")
            dose = gr.Slider(DOSE_RANGE[0], DOSE_RANGE[1], value=1, step=0.05, label="Strength", elem_id="steering-dose",
                             info=f"{DOSE_RANGE[0]:g} … {DOSE_RANGE[1]:g}; 1 = the strength measured for this model, 2 = twice that")
            with gr.Row():
                build = gr.Button("Build", variant="primary", elem_id="steering-build")
                check = gr.Button("Will this work?", elem_id="steering-check")
            checked = gr.Markdown("", elem_id="steering-checked")
            tab.built = gr.Markdown("Nothing built yet.", elem_id="steering-built")
            with gr.Row():
                save_name = gr.Textbox("", label="Save as", placeholder="a name, e.g. happy", elem_id="steering-save-name")
                tab.save = small_button("Save", "steering-save")
                use = small_button("Use in all chats", "steering-use")
            overwrite = gr.Checkbox(False, label="Overwrite a preset of that name", elem_id="steering-overwrite")
            tab.save_form = [save_name, overwrite]
            with gr.Accordion("Advanced", open=False, elem_id="steering-advanced"):
                tab.details = gr.Markdown("", elem_id="steering-built-details")
                with gr.Row():
                    method = gr.Dropdown(actions.method_choices(), value=actions.DEFAULT_METHOD, label="Method",
                                         info="actadd: one pair, added at the prompt's first positions; mean, pca: many pairs, one direction",
                                         elem_id="steering-method")
                    mode = gr.Dropdown(actions.mode_choices(), value=actions.AUTO, label="Mode",
                                       info="auto: actadd for actadd, all for mean and pca", elem_id="steering-mode")
                auto = gr.Checkbox(True, label="Auto layer", elem_id="steering-auto",
                                   info="measure the best layer for this model (mean, pca); off: the Layer slider below")
                tab.layer = gr.Slider(0, maximum, value=layer, step=1, label="Layer", elem_id="steering-layer", interactive=False,
                                      info="the layer built last (measured when Auto layer is on; yours when it is off)")
                strength = gr.Textbox("", label="Fixed strength (instead of the measured one)", placeholder="a number",
                                      info=f"empty: the method's default ({actions.default_strengths()}); auto: calibrated × Strength",
                                      elem_id="steering-strength")
                gr.Markdown("One pair such as *weddings* / *politics*, or one sentence a side, is told to the model in chat "
                            "framings over generic replies (expanded): a bare word read once as text barely moves a topic.",
                            elem_id="steering-expand-why")
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
        return ("built: " + draft.plain(), *tab.shown(draft), *tab.follow_layer(draft))

    def check_pair(positives, negatives, progress=gr.Progress()):
        progress(0, desc="telling the model the positive side")
        found = actions.check_form(runtime, positives, negatives)
        return "checked the pair", markdown_text(found.line) + "  \n<small>" + markdown_text(found.details()) + "</small>"

    def try_vector(draft, prompt, seed, max_new_tokens, chat, progress=gr.Progress()):
        progress(0, desc="generating steered and unsteered completions")
        result = actions.try_draft(runtime, draft, prompt, seed, max_new_tokens, chat)
        return f"tried seed {result.seed}", result.steered, result.unsteered

    def use_in_chats(name):
        items = actions.use_preset_in_chats(runtime, name)
        return (f"all chats now steered by: {actions.describe_items(items)} (each chat's panel can change or switch it off)",)

    def wire() -> None:
        tab.wire(use.click, use_in_chats, [save_name], [])
        # a user's tick only (never a re-render): the layer is read when auto is off
        auto.input(lambda on: gr.update(interactive=not on), auto, tab.layer, show_progress="hidden")
        tab.wire(build.click, build_vector, tab.build_form, [tab.draft, tab.built, tab.details, tab.layer, tab.sweep_layers])
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
        strengths = gr.Textbox("", label="Strengths", placeholder="empty: 0, ½, 1, 2 × its own",
                               info=f"as Build's Strength ({MEASURED})",
                               elem_id="steering-sweep-strengths")
        tab.sweep_layers = layers = gr.Textbox(
            str(layer), label="Layers", elem_id="steering-sweep-layers",
            info="the vector's layer and its neighbours once one is built; indices or shares such as 40%")
        samples = gr.Number(1, label="Samples per cell", elem_id="steering-sweep-samples")
    with gr.Row():
        metrics = sweep.sweep_metric_choices()
        metric = gr.Radio(metrics, value=metrics[0], label="Measured effect", elem_id="steering-metric")
        topic = gr.Textbox("", label="Topic words (for the topic words metric)", placeholder="love, kind, happy",
                           elem_id="steering-topic")
    run = gr.Button("Sweep", variant="primary", elem_id="steering-sweep")
    plot = gr.Plot(label="Effect by strength", elem_id="steering-plot")
    grid = gr.Dataframe(label="Completions: [effect] text", wrap=True, interactive=False, elem_id="steering-grid")

    def run_sweep(draft, prompt, seed, max_new_tokens, chat, strengths, layers, samples, metric, topic, progress=gr.Progress()):
        progress(0, desc="sweeping")
        result = sweep.sweep(runtime, draft, prompt, strengths, layers, metric, topic, seed, samples, max_new_tokens,
                               chat, progress=progress)
        headers, rows = result.table()
        return f"swept {len(result.cells)} cell(s)", result.figure(), {"headers": headers, "data": rows}

    return lambda: tab.wire(run.click, run_sweep, [tab.draft, *inputs.components(), strengths, layers, samples, metric, topic],
                            [plot, grid])


# -- presets -----------------------------------------------------------------------------------------
def presets_section(tab: SteeringTab) -> Callable[[], None]:
    runtime, store = tab.runtime, tab.runtime.store
    gr.Markdown("### Presets\nA preset is a saved vector: what it leans toward and away from, its layer and strength "
                "(built again for another model).")
    with gr.Row():
        chosen = tab.preset_menu("Preset", "steering-preset")
        load = small_button("Load into Build", "steering-load")
        delete = small_button("Delete", "steering-delete", variant="stop")
    plain = gr.Markdown("", elem_id="steering-preset-plain")
    with gr.Accordion("Advanced: the preset's file", open=False, elem_id="steering-recipe-fold"):
        recipe = gr.Code("", language="yaml", label="Recipe", interactive=False, elem_id="steering-recipe")
    with gr.Row():
        new_name = gr.Textbox("", label="Rename to", elem_id="steering-rename-to")
        rename = small_button("Rename", "steering-rename")
    with gr.Accordion("GGUF control vectors (llama.cpp, ik_llama.cpp, repeng)", open=False, elem_id="steering-gguf"):
        gr.Markdown("Export writes the chosen preset for the loaded model; llama.cpp's scale 1 is the strength given. "
                    "Import checks the file against the loaded model.")
        with gr.Row():
            export_strength = gr.Textbox("", label="Strength baked in", placeholder="empty: the preset's",
                                         elem_id="steering-export-strength")
            export = small_button("Export the chosen preset", "steering-export")
        exported = gr.File(label="Control vector", interactive=False, elem_id="steering-exported")
        upload = gr.File(label="A .gguf control vector", file_types=[".gguf"], type="filepath", elem_id="steering-import-file")
        with gr.Row():
            import_name = gr.Textbox("", label="Name for the preset", elem_id="steering-import-name")
            import_ = small_button("Import", "steering-import")

    def view(name) -> list[str]:
        """The preset in plain words, and its file."""
        return [markdown_text(actions.preset_plain(store, name)), actions.preset_text(store, name)] if name else ["", ""]

    def show(name):
        return ("showing " + name if name else "no preset chosen"), *view(name)

    def load_into_build(name, progress=gr.Progress()):
        progress(0, desc=f"loading {name}")
        draft = actions.load_preset(runtime, name)
        form = actions.recipe_form(draft.recipe, actions.num_layers(runtime))
        values = [form[key] for key in ("positives", "negatives", "method")]
        layer, around = tab.follow_layer(draft)  # the layer it steers at (measured or written), not the form's default
        return (f"loaded {name} into Build", *tab.shown(draft), *values, {**layer, "interactive": not form["auto"]},
                form["strength"], form["mode"], form["auto"], form["dose"], around)

    def save_draft(draft, name, overwrite):
        path = actions.save_draft(runtime, draft, name, overwrite)
        return (f"saved {name} to {path}", *tab.menus_update(name), *view(name))

    def rename_preset(old, new):
        path = actions.rename_preset(store, old, new)
        return (f"renamed {old} to {new} ({path})", *tab.menus_update(new), *view(new))

    def delete_preset(name):
        actions.delete_preset(store, name)
        return (f"deleted {name}", *tab.menus_update(), *view(None))

    def export_preset(name, strength, progress=gr.Progress()):
        progress(0, desc=f"exporting {name}")
        done = actions.export_gguf(runtime, name, strength)
        return done.summary(), str(done.path)

    def import_preset(path, name):
        done = actions.import_gguf(runtime, path, name)
        return (done.summary(), *tab.menus_update(done.recipe.name), *view(done.recipe.name))

    def wire() -> None:
        tab.wire(chosen.input, show, [chosen], [plain, recipe], on_error=["", ""], announce=False)
        # choosing the preset the menu holds already (set by Save or Rename) is no input: opening the menu clears
        # an earlier action's message ("all chats now steered by …") in the browser, without a request
        chosen.focus(None, None, [tab.message], js="() => ''")
        tab.wire(load.click, load_into_build, [chosen], [tab.draft, tab.built, tab.details, *tab.build_form, tab.sweep_layers])
        tab.wire(tab.save.click, save_draft, [tab.draft, *tab.save_form], [*tab.preset_menus, plain, recipe])
        tab.wire(rename.click, rename_preset, [chosen, new_name], [*tab.preset_menus, plain, recipe])
        tab.wire(delete.click, delete_preset, [chosen], [*tab.preset_menus, plain, recipe])
        tab.wire(export.click, export_preset, [chosen, export_strength], [exported])
        tab.wire(import_.click, import_preset, [upload, import_name], [*tab.preset_menus, plain, recipe])

    return wire


# -- mixer -------------------------------------------------------------------------------------------
def mixer_section(tab: SteeringTab) -> Callable[[], None]:
    runtime, store = tab.runtime, tab.runtime.store
    gr.Markdown("### Mixer\nCombine presets, each weight times the preset's own strength: `Love - Hate + 0.5 × dogs` "
                "(spaces around + and −; quote names that start with a number).")
    formula = gr.Textbox("", label="Mix", placeholder="Love - Hate + 0.5 × dogs", elem_id="steering-mix")
    with gr.Row():
        to_add = tab.preset_menu("Preset to add", "steering-mix-preset")
        weight = gr.Textbox("1", label="Weight", scale=0, min_width=90, elem_id="steering-mix-weight")
        add = small_button("Add to mix", "steering-mix-add")
    mix_view = gr.Markdown("", elem_id="steering-mix-view")
    inputs = GenerationInputs.create("mix")
    with gr.Row():
        run = small_button("Try the mix", "steering-mix-try", variant="primary")
        use = small_button("Use for all chats", "steering-mix-use")
        off = small_button("Steering off for all chats", "steering-mix-off")
    with gr.Row():
        steered = gr.Textbox(label="Steered by the mix", lines=6, interactive=False, elem_id="steering-mix-steered")
        unsteered = gr.Textbox(label="Unsteered", lines=6, interactive=False, elem_id="steering-mix-unsteered")
    gr.Markdown("#### Attach the mix to a character\nIts chats are then steered by it (an empty mix detaches).")
    with gr.Row():
        tab.characters = character = gr.Dropdown(runtime.character_names(), value=None, label="Character",
                                                 elem_classes=["slim-dropdown"], elem_id="steering-character")
        attach = small_button("Attach", "steering-attach")
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
        return f"attached to {text}", markdown_text(text), gr.update(choices=runtime.character_names())

    def wire() -> None:
        tab.wire(add.click, add_term, [formula, to_add, weight], [formula, mix_view])
        tab.wire(run.click, try_mix, [formula, *inputs.components()], [mix_view, steered, unsteered])
        tab.wire(use.click, use_mix, [formula], [mix_view])
        tab.wire(off.click, steering_off, [], [])
        tab.wire(attach.click, attach_mix, [character, formula], [attached, character])

    return wire


def extension_panels() -> list[tuple[str, Callable[[SteeringService], object]]]:
    """The extension's further panels, shown as sub-tabs of the Steering tab."""
    from .distill_panel import create_distill_panel

    return [("System prompt → vector", create_distill_panel)]


def create_app(runtime: SteeringService, title: str = "Steering") -> gr.Blocks:
    """The tab on its own page (the standalone ``ui`` command and the browser tests)."""
    with gr.Blocks(title=title, analytics_enabled=False, css=STANDALONE_CSS) as app:
        with gr.Tab("Steering", elem_id="steering-tab"):
            tab = create_tab(runtime, more=extension_panels())
        tab.refresh_on(app.load)
    return app
