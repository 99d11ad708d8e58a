"""The per-chat steering panel, added to the chat tab's controls (gradio 4.37 API).

A switch and one strength slider per preset that steers the current chat. The choice is stored by
the runtime under the chat's key (mode, character, chat id) — or, with --multi-user, under the
browser session, in memory only. All logic is in SteeringRuntime.chat_view/save_chat_view.
"""
from __future__ import annotations

from contextlib import contextmanager

import gradio as gr
from modules import shared

from ..runtime import STATE_IS_CHAT, STATE_SESSION, SteeringRuntime

SLOTS = 6  # presets shown at most


def slider_range(*strengths: float) -> tuple[float, float]:
    """(limit, step): -limit..limit covers three times the largest strength (mean/PCA strengths are
    shares of the residual norm, about 0.3; ActAdd strengths are raw, about 5)."""
    limit = max([1.0, *(3 * abs(s) for s in strengths)])
    return limit, limit / 200


def chat_state(mode, character, unique_id, request: gr.Request | None) -> dict:
    """The part of a chat request's state that decides its steering."""
    state = {STATE_IS_CHAT: True, "mode": mode, "character_menu": character, "unique_id": unique_id}
    if shared.args.multi_user and request is not None and getattr(request, "session_hash", None):
        state[STATE_SESSION] = request.session_hash
    return state


def _controls_column():
    """The column of the chat tab's controls (where 'Count tokens' sits), or None."""
    anchor = shared.gradio.get("token_display")
    parent = getattr(anchor, "parent", None)
    return parent if isinstance(parent, gr.Column) else None


@contextmanager
def _inside(block):
    """Add components to a block built earlier; entering it would otherwise re-parent it."""
    parent = block.parent
    try:
        with block:
            yield
    finally:
        block.parent = parent


def _outputs(view, enabled_only=False):
    rows = view.rows[:SLOTS]
    sliders = []
    for index in range(SLOTS):
        if index < len(rows):
            row = rows[index]
            limit, step = slider_range(row.default, row.strength)
            sliders.append(gr.update(
                visible=True, minimum=-limit, maximum=limit, step=step, value=row.strength,
                label=f"{row.name} (from {row.source}, {row.default:g})",
            ))
        else:
            sliders.append(gr.update(visible=False))
    return [gr.update(value=view.enabled), *sliders, [row.name for row in rows], view.text()]


def create_chat_panel(runtime: SteeringRuntime) -> None:
    column = _controls_column()
    place = _inside(column) if column is not None else gr.Column()
    with place:
        gr.HTML("<div class='sidebar-vertical-separator'></div>")
        enabled = gr.Checkbox(value=runtime.default_enabled, label="Steering for this chat", elem_id="steering-chat-enabled")
        sliders = [
            gr.Slider(-1.0, 1.0, step=0.005, visible=False, interactive=True, elem_id=f"steering-chat-strength-{index}")
            for index in range(SLOTS)
        ]
        with gr.Row():
            status = gr.Markdown(elem_id="steering-chat-status")
            refresh = gr.Button("↻", elem_classes=["refresh-button"], elem_id="steering-chat-refresh")
        names = gr.State([])

    chat = [shared.gradio[key] for key in ("mode", "character_menu", "unique_id")]
    panel = [enabled, *sliders, names, status]

    def load(mode, character, unique_id, request: gr.Request):
        return _outputs(runtime.chat_view(chat_state(mode, character, unique_id, request)))

    def save(mode, character, unique_id, on, shown, *values, request: gr.Request):
        state = chat_state(mode, character, unique_id, request)
        try:
            view = runtime.save_chat_view(state, on, dict(zip(shown, values)))
        except ValueError as error:
            return f"⚠ {error}"
        return view.text()

    for key in ("mode", "character_menu", "unique_id"):
        shared.gradio[key].change(load, chat, panel, show_progress=False)
    refresh.click(load, chat, panel, show_progress=False)
    for key in ("Generate", "Regenerate", "Continue", "model_status"):
        if key in shared.gradio:
            event = shared.gradio[key].change if key == "model_status" else shared.gradio[key].click
            event(load, chat, panel, show_progress=False)
    if "textbox" in shared.gradio:
        shared.gradio["textbox"].submit(load, chat, panel, show_progress=False)
    enabled.input(save, [*chat, enabled, names, *sliders], status, show_progress=False)
    for slider in sliders:
        slider.release(save, [*chat, enabled, names, *sliders], status, show_progress=False)
    root = gr.context.Context.root_block
    if root is not None:
        root.load(load, chat, panel, show_progress=False)
