"""The per-chat panel (ui/chat.py) built inside a copy of the webui's chat-tab layout, gradio 4.37 API.

Runs where gradio is installed (the UI environment, requirements-ui.txt); skipped elsewhere.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

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
    monkeypatch.delitem(sys.modules, "extensions.steering.ui.chat", raising=False)  # imported again with this shared
    import extensions.steering.ui as ui_package

    monkeypatch.delattr(ui_package, "chat", raising=False)
    blocks = gr.Blocks()
    with blocks:
        with gr.Tab("Chat"):
            shared.gradio["Generate"] = gr.Button("Send")
            with gr.Row(elem_id="chat-controls"):
                with gr.Column() as column:
                    with gr.Row():
                        shared.gradio["mode"] = gr.Radio(choices=["instruct", "chat-instruct", "chat"], value="chat")
                    shared.gradio["token_display"] = gr.HTML("")
        with gr.Tab("Character"):
            shared.gradio["character_menu"] = gr.Dropdown(choices=["Alice"], value="Alice")
            shared.gradio["unique_id"] = gr.Radio(choices=["20260101-10-00-00"], value="20260101-10-00-00")
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
    chat.create_chat_panel(runtime)
    assert len(column.children) > before and column.parent is not tab  # added there, layout kept
    assert not tab.children  # nothing leaked into the Steering tab
    request = types.SimpleNamespace(session_hash="s1")
    out = handler(blocks, "load")("chat", "Alice", "20260101-10-00-00", request)
    enabled, first, names, status = out[0], out[1], out[-2], out[-1]
    assert enabled["value"] is True and first["visible"] and first["value"] == 0.4 and names == ["up"]
    assert "No model is loaded" in status and "up" not in status.split("⚠")[0]
    message = handler(blocks, "save")("chat", "Alice", "20260101-10-00-00", False, ["up"], 0.2, *[0] * (chat.SLOTS - 1), request=request)
    assert "switched off" in message
    assert runtime.chat_choice("chat/Alice/20260101-10-00-00").enabled is False
    assert runtime.chat_choice("chat/Alice/20260101-10-00-00").strengths == {"up": 0.2}
    assert handler(blocks, "load")("chat", "Alice", "20260101-10-00-01", request)[0]["value"] is True  # another chat


def test_multi_user_panel_keeps_the_choice_per_session(webui_blocks):
    blocks, shared, column, tab, tmp_path = webui_blocks
    shared.args.multi_user = True
    from extensions.steering.ui import chat

    runtime = make_runtime(tmp_path)
    chat.create_chat_panel(runtime)
    alice, bob = types.SimpleNamespace(session_hash="alice"), types.SimpleNamespace(session_hash="bob")
    message = handler(blocks, "save")("chat", "Alice", None, False, ["up"], 0.4, *[0] * (chat.SLOTS - 1), request=alice)
    assert "switched off" in message, message
    assert handler(blocks, "load")("chat", "Alice", None, alice)[0]["value"] is False
    assert handler(blocks, "load")("chat", "Alice", None, bob)[0]["value"] is True
    assert not (tmp_path / "data" / "chats.json").exists()


def test_script_ui_builds_the_tab_and_the_chat_panel(webui_blocks, monkeypatch):
    blocks, shared, column, tab, tmp_path = webui_blocks
    import threading

    shared.user_data_dir, shared.generation_lock = tmp_path / "user_data", threading.Lock()
    shared.model = shared.tokenizer = None
    shared.args.loader, shared.default_settings = "Transformers", {"character": "Assistant"}
    monkeypatch.delitem(sys.modules, "extensions.steering.script", raising=False)
    import importlib

    script = importlib.import_module("extensions.steering.script")
    script.setup()
    before = len(column.children)
    script.ui()  # the fixture's Steering tab is the open block, as with params['is_tab']
    assert tab.children and len(column.children) > before
    assert script.RUNTIME.lock.acquire(timeout=1) and shared.generation_lock.locked()
    script.RUNTIME.lock.release()
    assert not shared.generation_lock.locked()
