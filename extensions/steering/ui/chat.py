"""The per-chat steering panel, added to the chat tab's controls (gradio 4.37 API).

A switch and one strength slider per preset that steers the current chat. The choice is stored by
the runtime under the chat's key (mode, character, chat id) — or, with --multi-user, under the
browser session, in memory only. All logic is in SteeringRuntime.chat_view/save_chat_view. The webui's
components (its ``shared.gradio``) and its --multi-user flag come from script.py, the only joint to the webui.

Two rules of gradio 4.37 (the webui's fork, and PyPI's) shape the wiring:
- a ``gr.Request`` parameter is filled only when it is positional (before ``*values``); a keyword-only
  one is never filled and every event fails with a TypeError;
- a Markdown's (or HTML's) ``.change`` fires whenever the page re-renders its layout, which every
  event's progress status does (Render.svelte makes a new ``gradio`` object, Markdown's Index.svelte
  dispatches "change" on it). A handler on such a ``.change`` with outputs therefore re-triggers
  itself for as long as the page is open. The panel listens only to what a user does.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import gradio as gr

from ..runtime import STATE_IS_CHAT, STATE_SESSION, ChatRow
from ..runtime.interface import SteeringService
from ..usecases import shown
from .steering_tab import small_button

log = logging.getLogger("steering")
SLOTS = 6  # presets shown at most
REPLY_BUTTONS = ("Generate", "Regenerate", "Continue")  # a reply is about to use the chat's choice


# At the sidebar's 260 px a slider's number box takes half the width beside its name and info line: a narrow one
# (5em holds "-0.355"), kept at that width so that the info line beside it has the rest.
PANEL_CSS = "#steering-chat-panel input[type=number] { width: 5em; min-width: 0; flex: none; }"
DOSE_LIMIT = 3.0  # a calibrated preset's slider: doses -3 … 3 (1 = its measured strength)
DOSE_STEP = 0.05
NICE = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)


def _nice_above(value: float) -> float:
    """The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × a power of ten that is at least ``value``."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(round(n * power, 12) for n in NICE if n * power >= value * (1 - 1e-9))


def slider_range(row: ChatRow) -> tuple[float, float]:
    """(limit, step) of a preset's slider, -limit … limit: fixed by the preset, never by where the slider
    was left (a drag to the end must not widen it). Doses (calibrated): -3 … 3 in steps of 0.05. Fixed
    strengths: three times the preset's own, rounded up to a round number, in steps of about a hundredth
    of it (mean/PCA strengths are shares of the residual norm, about 0.3; ActAdd strengths are raw, about
    5). Round bounds and steps: the browser's slider then lands on round numbers. A strength set beyond
    the range elsewhere (a file, the API) widens it to show that strength."""
    if row.calibrated:
        limit, step = DOSE_LIMIT, DOSE_STEP
    else:
        limit = _nice_above(max(3 * abs(row.default), 0.1))
        step = 10.0 ** round(math.log10(limit / 150))
    if abs(row.strength) > limit:
        limit = _nice_above(abs(row.strength))
    return limit, step


def slider_info(row: ChatRow, limit: float) -> str:
    """The line under a slider's name (the name alone, so that it fits the sidebar): where its default comes
    from and the default, then the range, -limit … limit as ±limit: "all chats: 1 · ±3" (one line in the sidebar)."""
    return f"{row.source}: {shown(row.default)} · ±{shown(limit)}"


def chat_state(mode, character, unique_id, request: gr.Request | None, multi_user: bool = False) -> dict:
    """The part of a chat request's state that decides its steering."""
    state = {STATE_IS_CHAT: True, "mode": mode, "character_menu": character, "unique_id": unique_id or None}
    if multi_user and request is not None and getattr(request, "session_hash", None):
        state[STATE_SESSION] = request.session_hash
    return state


def _controls_column(components: dict):
    """The column of the chat tab's controls (where 'Count tokens' sits), or None."""
    anchor = components.get("token_display")
    parent = getattr(anchor, "parent", None)
    return parent if isinstance(parent, gr.Column) else None


def _move_near_top(column, panel, components: dict) -> None:
    """Put ``panel`` (the last child of the controls column) right after the column's first row, the
    webui's 'Start reply with': the sidebar is long (tools, MCP, mode, chat style, the chat-instruct
    command) and the panel is then seen without scrolling past all of it. Left last when that row is not
    found (another webui version)."""
    first = components.get("start_with")
    while first is not None and getattr(first, "parent", None) is not column:  # its Row (and gradio's Form)
        first = getattr(first, "parent", None)
    if first is not None and column.children[-1] is panel:
        column.children.insert(column.children.index(first) + 1, column.children.pop())


def enclosing_tab(block):
    """The gr.Tab that holds ``block`` (the webui's Chat tab around its controls), or None."""
    while block is not None and not isinstance(block, gr.Tab):
        block = getattr(block, "parent", None)
    return block


@contextmanager
def _inside(block):
    """Add components to a block built earlier; entering it would otherwise re-parent it."""
    parent = block.parent
    try:
        with block:
            yield
    finally:
        block.parent = parent


def _outputs(view, message: str | None = None) -> list:
    """Updates for [switch, *sliders, names, status] that show ``view`` (and ``message`` above it)."""
    rows = view.rows[:SLOTS]
    sliders = []
    for index in range(SLOTS):
        if index < len(rows):
            row = rows[index]
            limit, step = slider_range(row)
            sliders.append(gr.update(visible=True, minimum=-limit, maximum=limit, step=step, value=float(shown(row.strength)),
                                     label=row.name, info=slider_info(row, limit)))
        else:
            sliders.append(gr.update(visible=False))
    text = view.text()
    if message:
        text = f"{message}  \n{text}"
    return [gr.update(value=view.enabled), *sliders, [row.name for row in rows], text]


def _problem(text: str) -> str:
    gr.Warning(text)
    return f"⚠ **{text}**"


def _unchanged(message: str) -> list:
    return [gr.update(), *(gr.update() for _ in range(SLOTS)), gr.update(), message]


def create_chat_panel(runtime: SteeringService, components: dict, multi_user: bool = False) -> None:
    """The panel, placed among the webui's chat-tab ``components`` (its shared.gradio); ``multi_user``: the
    webui's --multi-user (each browser session keeps its own choice)."""
    column = _controls_column(components)
    place = _inside(column) if column is not None else gr.Column()
    with place, gr.Column(elem_id="steering-chat-panel") as panel_column:
        gr.HTML("<div class='sidebar-vertical-separator'></div>")
        with gr.Row():
            enabled = gr.Checkbox(value=runtime.default_enabled, label="Steering for this chat", elem_id="steering-chat-enabled")
            refresh = small_button("↻", "steering-chat-refresh")
        sliders = [
            gr.Slider(-DOSE_LIMIT, DOSE_LIMIT, step=DOSE_STEP, visible=False, interactive=True, elem_id=f"steering-chat-strength-{index}")
            for index in range(SLOTS)
        ]
        status = gr.Markdown(elem_id="steering-chat-status")
        names = gr.State([])
        # The chat id as the page shows it. The webui's own Radio (fork 4.37.2+custom.20) hands a handler
        # None for a value not among the choices it holds for that session, and on a page (re)load the
        # webui sets the id first and the choices later; so the id is copied here in the browser.
        chat_id = gr.Textbox(value=components["unique_id"].value or "", visible=False, elem_id="steering-chat-id")

        # (mode, character, chat id) when Branch or Rename was clicked: the chat id that follows gets its choice
        renamed_from = gr.State(None)
    if column is not None:
        _move_near_top(column, panel_column, components)

    chat = [components["mode"], components["character_menu"], chat_id]
    panel = [enabled, *sliders, names, status]

    def remember(mode, character, unique_id):
        return [mode, character, unique_id]

    def follow(request: gr.Request, old, mode, character, unique_id):
        """The chat id changed: after Branch or Rename the new id keeps the old one's choice; then show it."""
        if old and old[2] and unique_id and old[2] != unique_id:
            try:
                runtime.follow_chat(chat_state(*old, request, multi_user), chat_state(mode, character, unique_id, request, multi_user))  # type: ignore[call-arg]  # old: what remember() kept
            except Exception:  # the panel still shows the chat; the choice may have to be set again
                log.exception("steering: the chat's choice could not follow it to its new id")
        return [None, *load(request, mode, character, unique_id)]

    def load(request: gr.Request, mode, character, unique_id):
        if mode is None:  # the webui has not set the page's chat yet (it does so right after the page loads,
            return _unchanged(gr.update())  # and that fires the mode's and the chat id's .change)
        try:
            return _outputs(runtime.chat_view(chat_state(mode, character, unique_id, request, multi_user)))
        except Exception as error:  # never a traceback in the page: it goes to the log
            log.exception("steering: the chat panel could not be read")
            return _unchanged(_problem(f"unexpected {type(error).__name__}: {error} (details in the console log)"))

    def save(request: gr.Request, mode, character, unique_id, on, shown_names, *values):
        """Store the switch and strengths; the panel then shows what is stored (after a refusal too)."""
        state = chat_state(mode, character, unique_id, request, multi_user)
        try:
            chosen = {name: float(shown(value)) if isinstance(value, (int, float)) else value  # no float noise stored
                      for name, value in zip(shown_names or [], values)}
            return _outputs(runtime.save_chat_view(state, on, chosen))
        except ValueError as error:
            message = _problem(str(error))
        except Exception as error:
            log.exception("steering: the chat's choice could not be saved")
            message = _problem(f"unexpected {type(error).__name__}: {error} (details in the console log)")
        try:
            return _outputs(runtime.chat_view(state), message)
        except Exception:
            log.exception("steering: the chat panel could not be read")
            return _unchanged(message)

    # Read again when the chat changes, when the user opens the chat tab, sends a message, or asks (↻):
    # never on a component's change that the page's own re-rendering triggers (see the module's note).
    # One queue for all of them, in the order they were sent: on a page load the webui sets the chat id
    # after the page's own load event, whose older view must not land last.
    quiet = dict(show_progress="hidden", concurrency_id="steering-chat-panel", concurrency_limit=1)
    components["unique_id"].change(None, components["unique_id"], chat_id, js="(chat) => chat ?? ''")
    for component in chat[:2]:
        component.change(load, chat, panel, **quiet)
    chat_id.change(follow, [renamed_from, *chat], [renamed_from, *panel], **quiet)
    for key in ("branch_chat", "rename_to-confirm"):
        if key in components:
            components[key].click(remember, chat, renamed_from, **quiet)
    if "rename_to" in components:
        components["rename_to"].submit(remember, chat, renamed_from, **quiet)
    refresh.click(load, chat, panel, **quiet)
    for key in REPLY_BUTTONS:
        if key in components:
            components[key].click(load, chat, panel, **quiet)
    if "textbox" in components:
        components["textbox"].submit(load, chat, panel, **quiet)
    chat_tab = enclosing_tab(column)
    if chat_tab is not None:
        chat_tab.select(load, chat, panel, **quiet)  # e.g. back from the Model tab with a model loaded
    root = gr.context.Context.root_block
    if root is not None:
        root.load(load, chat, panel, **quiet)
    enabled.input(save, [*chat, enabled, names, *sliders], panel, **quiet)
    for slider in sliders:
        slider.release(save, [*chat, enabled, names, *sliders], panel, **quiet)
