"""The per-chat panel (ui/chat.py) built inside a copy of the webui's chat-tab layout, gradio 4.37 API.

Runs where gradio is installed (the UI environment, requirements-ui.txt); skipped elsewhere.
"""
from __future__ import annotations

import sys
import types

import pytest

gr = pytest.importorskip("gradio")

from extensions.steering.engine.presets import PresetStore, Recipe  # noqa: E402


@pytest.fixture
def webui_blocks(tmp_path, monkeypatch):
    """modules.shared with the chat tab's components, laid out as ui_chat.py does."""
    shared = types.ModuleType("modules.shared")
    shared.gradio, shared.args = {}, types.SimpleNamespace(multi_user=False)
    package = types.ModuleType("modules")
    package.__path__, package.shared = [], shared
    monkeypatch.setitem(sys.modules, "modules", package)
    monkeypatch.setitem(sys.modules, "modules.shared", shared)
    # script is imported again with this shared, and afterwards forgotten, so that a later test in this
    # process (tests/ui/test_chat_browser.py) does not get a module bound to this fake
    monkeypatch.setitem(sys.modules, "extensions.steering.script", None)
    del sys.modules["extensions.steering.script"]
    blocks = gr.Blocks()
    with blocks:
        with gr.Tab("Chat"):
            shared.gradio["Generate"] = gr.Button("Send")
            with gr.Row(elem_id="chat-controls"):
                with gr.Column() as column:
                    with gr.Row():
                        shared.gradio["start_with"] = gr.Textbox(label="Start reply with")
                    with gr.Row():
                        shared.gradio["mode"] = gr.Radio(choices=["instruct", "chat-instruct", "chat"], value="chat")
                    shared.gradio["token_display"] = gr.HTML("")
        with gr.Tab("Character"):
            shared.gradio["character_menu"] = gr.Dropdown(choices=["Alice"], value="Alice")
            shared.gradio["unique_id"] = gr.Radio(choices=["20260101-10-00-00"], value="20260101-10-00-00")
        with gr.Tab("Model"):
            shared.gradio["model_status"] = gr.Markdown("No model is loaded")
        with gr.Tab("Steering") as tab:
            yield blocks, shared, column, tab, tmp_path


def make_runtime(tmp_path):
    from extensions.steering.runtime import SteeringRuntime

    store = PresetStore(tmp_path / "presets", shipped=None)
    store.save(Recipe("up", positive=["Love"], negative=["Hate"], method="mean", mode="all", layers=["50%"], strength=0.4))
    runtime = SteeringRuntime(store, tmp_path / "data", lambda: None)
    runtime.set_active([("up", 0.4)])
    return runtime


def handler(blocks, name):
    return next(f.fn for f in blocks.fns.values() if getattr(f.fn, "__name__", "") == name) if isinstance(blocks.fns, dict) \
        else next(f.fn for f in blocks.fns if getattr(f.fn, "__name__", "") == name)


def test_panel_sits_in_the_chat_controls_and_remembers_the_chat(webui_blocks):
    blocks, shared, column, tab, tmp_path = webui_blocks
    from extensions.steering.ui import chat

    runtime = make_runtime(tmp_path)
    before = len(column.children)
    chat.create_chat_panel(runtime, shared.gradio)
    assert len(column.children) > before and column.parent is not tab  # added there, layout kept
    assert column.children[1].elem_id == "steering-chat-panel"  # right after 'Start reply with', not below everything
    assert not tab.children  # nothing leaked into the Steering tab
    request = types.SimpleNamespace(session_hash="s1")
    out = handler(blocks, "load")(request, "chat", "Alice", "20260101-10-00-00")
    enabled, first, names, status = out[0], out[1], out[-2], out[-1]
    assert enabled["value"] is True and first["visible"] and first["value"] == 0.4 and names == ["up"]
    assert "No model is loaded" in status and "up" not in status.split("⚠")[0]
    out = handler(blocks, "save")(request, "chat", "Alice", "20260101-10-00-00", False, ["up"], 0.2, *[0] * (chat.SLOTS - 1))
    assert "switched off" in out[-1] and out[0]["value"] is False and out[1]["value"] == 0.2
    assert runtime.chat_choice("chat/Alice/20260101-10-00-00").enabled is False
    assert runtime.chat_choice("chat/Alice/20260101-10-00-00").strengths == {"up": 0.2}
    assert handler(blocks, "load")(request, "chat", "Alice", "20260101-10-00-01")[0]["value"] is True  # another chat


def test_handlers_get_the_request_from_gradio(webui_blocks):
    """gradio 4.37 fills a gr.Request parameter only when it is positional (helpers.special_args);
    a keyword-only one after *values was never filled: every save failed with a TypeError."""
    from gradio.helpers import special_args

    blocks, shared, column, tab, tmp_path = webui_blocks
    from extensions.steering.ui import chat

    chat.create_chat_panel(make_runtime(tmp_path), shared.gradio)
    request = types.SimpleNamespace(session_hash="s1")
    for name, inputs in (("load", ["chat", "Alice", "20260101-10-00-00"]),
                         ("save", ["chat", "Alice", "20260101-10-00-00", False, ["up"], *[0.1] * chat.SLOTS])):
        fn = handler(blocks, name)
        filled, _, _ = special_args(fn, list(inputs), request)
        assert filled[0] is request
        out = fn(*filled)
        assert len(out) == chat.SLOTS + 3 and "No model is loaded" in out[-1] and "unexpected" not in out[-1]


def test_bad_input_is_a_visible_warning_and_the_panel_shows_what_is_stored(webui_blocks):
    blocks, shared, column, tab, tmp_path = webui_blocks
    from extensions.steering.ui import chat

    runtime = make_runtime(tmp_path)
    chat.create_chat_panel(runtime, shared.gradio)
    request = types.SimpleNamespace(session_hash="s1")
    with pytest.warns(UserWarning, match="finite"):  # gr.Warning outside an event: a Python warning
        out = handler(blocks, "save")(request, "chat", "Alice", "20260101-10-00-00", False, ["up"], float("nan"), *[0] * (chat.SLOTS - 1))
    assert out[-1].startswith("⚠") and "finite" in out[-1]
    assert out[0]["value"] is True and out[1]["value"] == 0.4  # not switched off: nothing was stored
    assert runtime.chat_choice("chat/Alice/20260101-10-00-00").enabled is True
    with pytest.warns(UserWarning, match="no id"):  # a new chat without an id cannot remember a choice
        out = handler(blocks, "save")(request, "chat", "Alice", None, False, ["up"], 0.4, *[0] * (chat.SLOTS - 1))
    assert out[-1].startswith("⚠") and out[0]["value"] is True


def listeners_of_re_renders(blocks) -> list:
    """Handlers on a Markdown's or HTML's .change (fired by every re-render of a gradio 4.37 page)."""
    fns = blocks.fns.values() if isinstance(blocks.fns, dict) else blocks.fns
    return [(fn.name, blocks.blocks[target]) for fn in fns for target, event in fn.targets
            if event == "change" and isinstance(blocks.blocks.get(target), (gr.Markdown, gr.HTML))]


def test_no_handler_listens_to_a_re_render(webui_blocks):
    """In gradio 4.37 a Markdown's or HTML's .change fires at every re-render of the page (Render.svelte
    makes a new `gradio` prop; their Index.svelte dispatches "change" on it): a handler there with
    outputs re-triggers itself for as long as a page is open. The panel and the tab listen to users."""
    blocks, shared, column, tab, tmp_path = webui_blocks
    from extensions.steering.ui import chat

    chat.create_chat_panel(make_runtime(tmp_path), shared.gradio)
    assert listeners_of_re_renders(blocks) == []
    fns = blocks.fns.values() if isinstance(blocks.fns, dict) else blocks.fns
    copy = [fn for fn in fns if (shared.gradio["unique_id"]._id, "change") in fn.targets]
    assert len(copy) == 1 and copy[0].fn is None and copy[0].js  # the chat id is copied in the browser
    chat_tab = chat.enclosing_tab(column)
    assert chat_tab is not None and chat_tab.label == "Chat"
    assert any((chat_tab._id, "select") in fn.targets and fn.name == "load" for fn in fns)


def test_multi_user_panel_keeps_the_choice_per_session(webui_blocks):
    blocks, shared, column, tab, tmp_path = webui_blocks
    from extensions.steering.ui import chat

    runtime = make_runtime(tmp_path)
    chat.create_chat_panel(runtime, shared.gradio, multi_user=True)
    alice, bob = types.SimpleNamespace(session_hash="alice"), types.SimpleNamespace(session_hash="bob")
    message = handler(blocks, "save")(alice, "chat", "Alice", None, False, ["up"], 0.4, *[0] * (chat.SLOTS - 1))[-1]
    assert "switched off" in message, message
    assert handler(blocks, "load")(alice, "chat", "Alice", None)[0]["value"] is False
    assert handler(blocks, "load")(bob, "chat", "Alice", None)[0]["value"] is True
    assert not (tmp_path / "data" / "chats.json").exists()


def test_script_ui_builds_the_tab_and_the_chat_panel(webui_blocks, monkeypatch):
    blocks, shared, column, tab, tmp_path = webui_blocks
    import threading

    shared.user_data_dir, shared.generation_lock = tmp_path / "user_data", threading.Lock()
    shared.model = shared.tokenizer = None
    shared.args.loader, shared.default_settings = "Transformers", {"character": "Assistant"}
    import importlib

    script = importlib.import_module("extensions.steering.script")
    script.setup()
    before = len(column.children)
    script.ui()  # the fixture's Steering tab is the open block, as with params['is_tab']
    assert tab.children and len(column.children) > before
    fns = list(blocks.fns.values() if isinstance(blocks.fns, dict) else blocks.fns)
    assert any((tab._id, "select") in fn.targets and fn.name == "refresh" for fn in fns)  # read when opened
    assert listeners_of_re_renders(blocks) == []  # not on model_status.change
    assert script.RUNTIME.lock.acquire(timeout=1) and shared.generation_lock.locked()
    script.RUNTIME.lock.release()
    assert not shared.generation_lock.locked()


def test_slider_ranges_are_fixed_by_the_preset_and_round(webui_blocks):
    """A slider's range depends on the preset only (never on where it was dragged), with round bounds and
    steps; a strength stored beyond it (a file, the API) widens it to show that strength."""
    from extensions.steering.runtime import ChatRow
    from extensions.steering.ui import chat

    def row(default, strength=None, calibrated=False):
        return ChatRow("p", default, default if strength is None else strength, "all chats", calibrated=calibrated)

    assert chat.slider_range(row(1.0, calibrated=True)) == (3.0, 0.05)
    assert chat.slider_range(row(1.0, 3.0, calibrated=True)) == (3.0, 0.05)  # dragged to the end: the same range
    assert chat.slider_range(row(0.35)) == (1.2, 0.01) == chat.slider_range(row(0.35, 1.2))
    assert chat.slider_range(row(4.0)) == (12.0, 0.1)  # actadd
    assert chat.slider_range(row(0.35, -2.0)) == (2.0, 0.01)
    assert chat.slider_info(row(0.35), 1.2) == "all chats: 0.35 · ±1.2"
