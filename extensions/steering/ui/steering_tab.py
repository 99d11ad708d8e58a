"""The tab's frame that every section shares: ``SteeringTab`` (its components and the one way a handler is
wired: a problem becomes a visible warning, never a traceback), the small buttons, the generation inputs."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import gradio as gr

from . import actions
from .messages import EXPECTED_ERRORS, browser_session, done_message, markdown_text, problem_message, problem_text

if TYPE_CHECKING:  # mypy (.ci/run) checks the tab against the runtime's contract
    from ..runtime.interface import SteeringService

EXAMPLE_PROMPT = "I hate you because"  # the seed's example
WORKING = "⏳ working…"
DOSE_RANGE = (0.05, 3.0)  # the Build form's strength: multiples of the strength measured for the model
SMALL_BUTTON = ["refresh-button"]  # the webui's class for the small buttons beside a menu (css/main.css)
# The standalone page has no webui CSS: the same small buttons, beside the field they act on.
STANDALONE_CSS = ".refresh-button { flex: none !important; align-self: end; min-width: 2.2em !important; }"


def small_button(text: str, elem_id: str, **kwargs) -> gr.Button:
    """A button sized as the webui's beside a menu or a field, not a box the width of the row."""
    return gr.Button(text, elem_classes=SMALL_BUTTON, scale=0, min_width=0, elem_id=elem_id, **kwargs)


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
            chat = gr.Checkbox(False, label="Send it as a chat message", elem_id=f"steering-{prefix}-chat")
        return cls(prompt, seed, tokens, chat)

    def components(self) -> list:
        return [self.prompt, self.seed, self.max_new_tokens, self.chat]


@dataclass
class SteeringTab:
    """The tab's components; ``refresh_on(event)`` re-reads the model and presets when ``event`` fires
    (e.g. the webui's tab being opened, or a standalone app's load)."""

    runtime: SteeringService
    status: gr.Markdown = None
    message: gr.Markdown = None
    draft: gr.State = None
    layer: gr.Slider = None
    built: gr.Markdown = None  # the vector built or loaded last, in plain words
    details: gr.Markdown = None  # and its method's details (under Advanced)
    sweep_layers: gr.Textbox = None
    save_form: list = field(default_factory=list)  # name, overwrite (in Build: a newcomer saves where they built)
    save: gr.Button = None
    characters: gr.Dropdown = None
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
                return [done_message(message), self.status_text(), *values]
            except Exception as error:  # noqa: BLE001 - never a traceback in the page
                text = problem_text(error, f"the Steering tab's {handler.__name__}")
            gr.Warning(text)
            kept = on_error if on_error is not None else [gr.update() for _ in outputs]
            return [problem_message(text), self.status_text(), *kept]

        targets = [self.message, self.status, *outputs]
        if announce:
            trigger(working, None, [self.message], show_progress="hidden").then(run, inputs, targets)
        else:
            trigger(run, inputs, targets)

    def status_text(self) -> str:
        """The status line for the user of the request being handled (multi-user: their own last reply)."""
        return actions.status_text(self.runtime, browser_session())

    def refresh(self):
        """Status, layer slider bounds, preset and character lists, read again."""
        names = actions.preset_names(self.runtime.store)
        return [self.status_text(), self.layer_update(), gr.update(choices=self.runtime.character_names()),
                *(gr.update(choices=names) for _ in self.preset_menus)]

    def refresh_outputs(self) -> list:
        return [self.status, self.layer, self.characters, *self.preset_menus]

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

    def follow_layer(self, draft: actions.Draft) -> list:
        """The layer slider and the sweep's layers, set to the layer ``draft`` was built at (measured or chosen)."""
        layer = draft.vector.layers[0]
        try:
            around = actions.sweep_layers_around(layer, actions.num_layers(self.runtime))
        except EXPECTED_ERRORS:
            around = str(layer)
        return [self.layer_update(layer), around]

    def shown(self, draft: actions.Draft) -> list:
        """The draft, its plain line and its details."""
        return [draft, markdown_text(draft.plain()), markdown_text(draft.summary())]

    def preset_menu(self, label: str, elem_id: str) -> gr.Dropdown:
        menu = gr.Dropdown(actions.preset_names(self.runtime.store), value=None, label=label, elem_id=elem_id,
                           elem_classes=["slim-dropdown"])
        self.preset_menus.append(menu)
        return menu

    def menus_update(self, selected=None) -> list:
        names = actions.preset_names(self.runtime.store)
        return [gr.update(choices=names, value=selected if selected in names else None) for _ in self.preset_menus]
