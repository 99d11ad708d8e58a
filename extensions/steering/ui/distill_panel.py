"""The "system prompt to vector" panel, on gradio's 4.37 API: components and wiring only.

``create_distill_panel(runtime)`` builds it inside the current gr.Blocks (the Steering tab puts it
in a sub-tab). The work is done by ``distill_actions``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr

from ..engine import distill as d
from ..reports import table_rows
from . import distill_actions as actions
from .actions import preset_names
from .messages import EXPECTED_ERRORS, done_message, problem_message, problem_text

if TYPE_CHECKING:  # mypy (.ci/run) checks the panel against the runtime's contract
    from ..runtime.interface import SteeringService


@dataclass
class DistillPanel:
    runtime: SteeringService
    character: gr.Dropdown
    system: gr.Textbox
    name: gr.Textbox
    build: gr.Button
    measure: gr.Button
    results: gr.Dataframe
    message: gr.Markdown

    def refresh(self):
        """The character menu, read again (wire it to the webui's character or model events)."""
        return gr.update(choices=[actions.NO_CHARACTER, *actions.character_names(self.runtime)])


def pick_character(runtime: SteeringService, chosen):
    """(context, suggested preset name, message) when a character is picked."""
    try:
        return actions.character_context(runtime, chosen), actions.suggested_name(chosen), ""
    except EXPECTED_ERRORS as error:
        return gr.update(), gr.update(), problem_message(str(error))


def run_distill(runtime: SteeringService, chosen, system_text, preset_name, method, step_count, layer_text, held, replace, progress, kept=None,
                seconds=None):
    """(message, results table update): distil (the progress shows the step and the loss), save, attach, measure;
    a problem becomes the message."""
    progress(0, desc="distilling")
    return _shown(lambda: actions.distill_to_preset(runtime, preset_name, system_text, method, step_count, layer_text, held,
                                                    chosen or None, replace, progress=lambda f, text: progress(f, desc=text),
                                                    instead=kept, time_limit=seconds))


def run_measure(runtime: SteeringService, preset_name, system_text, held, progress):
    """(message, results table update): measure a saved preset against ``system_text`` (empty: the preset's own)."""
    progress(0, desc="measuring")
    return _shown(lambda: actions.evaluate_preset(runtime, preset_name, system_text, held,
                                                  progress=lambda f, text: progress(f, desc=text)))


def _shown(work):
    try:
        done = work()
    except Exception as error:  # noqa: BLE001 - never a traceback in the page
        text = problem_text(error, "the distill panel")
        if isinstance(error, EXPECTED_ERRORS):
            gr.Warning(text)
        return problem_message(text), gr.update()
    head, rows = done.table()
    return done_message(done.summary()), gr.update(value=rows, headers=head)


def create_distill_panel(runtime: SteeringService) -> DistillPanel:
    gr.Markdown(
        "### Make a system prompt (or a character's context) a vector\n"
        "The model *with* the prompt teaches the model *without* it, steered, on generic chat messages; "
        "then the vector is measured on held-out messages: how much of the prompt's effect it recovers "
        "(KL recovery: 1 = all, 0 = none), the behaviour score with the prompt, without it and steered, "
        "the prompt tokens saved per request and the time to first token."
    )
    with gr.Row():
        character = gr.Dropdown([actions.NO_CHARACTER, *actions.character_names(runtime)], value=actions.NO_CHARACTER,
                                label="Character", info="its context fills the prompt below; the preset is attached to it",
                                elem_id="steering-distill-character")
        name = gr.Textbox("", label="Preset name", placeholder="e.g. kind-distilled", elem_id="steering-distill-name")
    system = gr.Textbox("", label="System prompt / context to distil", lines=4, elem_id="steering-distill-system")
    kept = gr.Textbox("", label="Context the chat keeps instead (optional)", lines=1, elem_id="steering-distill-kept",
                      placeholder="e.g. Kind Assistant is an AI assistant talking with You. Empty: no system message")
    with gr.Row():
        via = gr.Dropdown(list(d.VIAS), value=d.DistillOptions.via, label="Method",
                          info="kl: fit to the prompt's next-token distributions; contrast: activation difference; direct: prompt pair",
                          elem_id="steering-distill-method")
        steps = gr.Number(d.DistillOptions.steps, label="Steps (kl)", precision=0, elem_id="steering-distill-steps")
        seconds = gr.Number(0, label="Time limit, s (kl)", precision=0,
                            info="0: none, the same vector on any machine; a fit it cuts short is saved as such",
                            elem_id="steering-distill-seconds")
        layers = gr.Textbox("", label="Layers", placeholder="empty: the method's (" + "; ".join(f"{via} {', '.join(map(str, layers))}" for via, layers in d.DEFAULT_LAYERS.items()) + ")",
                            elem_id="steering-distill-layers")
        held_out = gr.Slider(1, len(d.held_out_messages()), value=len(d.held_out_messages()), step=1,
                             label="Held-out messages to measure on", elem_id="steering-distill-held-out")
        overwrite = gr.Checkbox(False, label="Overwrite", elem_id="steering-distill-overwrite")
    build = gr.Button("Make this context a vector", variant="primary", elem_id="steering-distill-build")
    with gr.Row():
        preset = gr.Dropdown(preset_names(runtime.store), value=None, label="Or measure a saved preset",
                             info="against the prompt above; empty prompt: the one the preset names (every shipped preset names one)",
                             elem_id="steering-distill-preset")
        measure = gr.Button("Measure", scale=0, min_width=140, elem_id="steering-distill-measure")
    message = gr.Markdown("", elem_id="steering-distill-message")
    header, _ = table_rows([])
    results = gr.Dataframe(headers=header, value=[["" for _ in header]], interactive=False, wrap=True,
                           elem_id="steering-distill-results")
    panel = DistillPanel(runtime, character, system, name, build, measure, results, message)

    def run(chosen, system_text, preset_name, method, step_count, layer_text, held, replace, kept_text, budget, progress=gr.Progress()):
        return run_distill(runtime, chosen, system_text, preset_name, method, step_count, layer_text, held, replace, progress,
                           kept_text, budget)

    def measure_preset(chosen, system_text, held, progress=gr.Progress()):
        return run_measure(runtime, chosen, system_text, held, progress)

    character.change(functools.partial(pick_character, runtime), [character], [system, name, message])
    build.click(run, [character, system, name, via, steps, layers, held_out, overwrite, kept, seconds], [message, results])
    preset.focus(lambda: gr.update(choices=preset_names(runtime.store)), None, [preset])
    measure.click(measure_preset, [preset, system, held_out], [message, results])
    return panel
