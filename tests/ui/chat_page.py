"""A model of the webui's page for the chat panel's browser tests (not a test module).

The extension is loaded the webui's way (tests/webui_host.py: ``load_extensions`` runs ``setup()``),
then the page is built like the webui's server.py on the gradio 4.37 API: a Chat tab whose controls
column ends in ``token_display`` (where the panel goes), with Send/Regenerate/Continue and the chat id
(``unique_id``), a Character tab with ``character_menu``, a Model tab with Load/Unload buttons and the
``model_status`` Markdown, and the extension's own tab (``is_tab``) around ``script.ui()``. Send and
Regenerate run the host's chat path (webui_host.generate_chat_reply) on the embedded model.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

import gradio as gr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: webui_host
import webui_host as host  # noqa: E402
from webui_host import shared  # noqa: E402

CHAT_ID = "20260101-10-00-00"
BRANCH_ID = "20260101-11-00-00"  # the id a Branch click gives the copy
CHARACTERS = {  # character file stem -> (display name, presets attached in its file)
    "Alice": ("Alice", "love"),
    "Bob": ("Bob", "kind"),
}
PROMPT = "Tell me about your day."
MAX_NEW_TOKENS = 8
SIDEBAR_CSS = "#chat-controls { width: 260px; flex: none; }"  # the webui's chat controls are a 260 px sidebar


def write_characters(user_data: Path) -> None:
    folder = user_data / "characters"
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (name, preset) in CHARACTERS.items():
        (folder / f"{stem}.yaml").write_text(
            f"name: {name}\ngreeting: Hello.\ncontext: '{name} is a friendly person.'\nsteering:\n  {preset}: null\n",
            encoding="utf-8")


def chat_state(mode, character, unique_id, history) -> dict:
    name = CHARACTERS.get(character, (character,))[0]
    return host.ui_state(mode=mode, character_menu=character, unique_id=unique_id, name2=name, history=history,
                         context=f"{name} is a friendly person.", max_new_tokens=MAX_NEW_TOKENS)


class Page:
    """The page and what its host handlers did (``replies``: every reply, in order)."""

    def __init__(self, model, multi_user: bool):
        self.model = model
        self.multi_user = multi_user
        self.replies: list[str] = []
        self.histories: dict[tuple, dict] = {}
        self.lock = threading.Lock()
        self.app = self.build()

    # -- the host's handlers ------------------------------------------------------------------------
    def history(self, request, mode, character, unique_id) -> dict:
        """The chat's history: kept per chat like the webui's saved logs (a reload keeps it), or per
        browser session with --multi-user (nothing is saved)."""
        key = (request.session_hash if self.multi_user else "", mode, character, unique_id)
        with self.lock:
            return self.histories.setdefault(key, {"internal": [], "visible": [], "metadata": {}})

    def _reply(self, text, history, mode, character, unique_id, regenerate=False):
        if shared.model is None:
            return "no model"
        state = chat_state(mode, character, unique_id, history)
        for output in host.generate_chat_reply(text, state, regenerate=regenerate):
            pass
        history.update(output)
        reply = output["internal"][-1][1]
        with self.lock:
            self.replies.append(reply)
            number = len(self.replies)
        return f"#{number}: {reply}"

    def send(self, request: gr.Request, text, mode, character, unique_id):
        history = self.history(request, mode, character, unique_id)
        return self._reply(text or PROMPT, history, mode, character, unique_id)

    def regenerate(self, request: gr.Request, mode, character, unique_id):
        history = self.history(request, mode, character, unique_id)
        if not history["internal"]:
            return "nothing to regenerate"
        return self._reply(history["internal"][-1][0], history, mode, character, unique_id, regenerate=True)

    def load_model(self):
        shared.model, shared.tokenizer = self.model
        shared.model_name = "SmolLM2-135M-Instruct"
        return f"Successfully loaded `{shared.model_name}`."

    def unload_model(self):
        shared.model = shared.tokenizer = None
        shared.model_name = "None"
        return "Model unloaded."

    # -- the page -------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        g = shared.gradio
        g.clear()
        with gr.Blocks(analytics_enabled=False, title="webui model", css=SIDEBAR_CSS + host.apply_extensions("css")) as page:
            g["interface"] = page
            with gr.Tab("Chat", elem_id="chat-tab"):
                with gr.Row(elem_id="past-chats-row"):
                    g["unique_id"] = gr.Radio(choices=[CHAT_ID], value=CHAT_ID, label="", elem_id="past-chats",
                                              interactive=not self.multi_user)
                reply = gr.Textbox(label="Last reply", interactive=False, elem_id="reply")
                g["textbox"] = gr.Textbox(label="", placeholder="Send a message", elem_id="chat-input")
                with gr.Row():
                    g["Generate"] = gr.Button("Send", elem_id="Generate", variant="primary")
                    g["Regenerate"] = gr.Button("Regenerate", elem_id="Regenerate")
                    g["Continue"] = gr.Button("Continue", elem_id="Continue")
                    g["branch_chat"] = gr.Button("Branch", elem_id="Branch")
                with gr.Row(elem_id="chat-controls"):
                    with gr.Column():
                        with gr.Row():
                            g["start_with"] = gr.Textbox(label="Start reply with", placeholder="Sure thing!")
                        # the webui's sidebar is long: web search, a dozen tools, MCP servers, then the mode
                        g["selected_tools"] = gr.CheckboxGroup([f"tool_{n}" for n in range(12)], label="Tools",
                                                               elem_id="tools-group")
                        with gr.Row():
                            g["mode"] = gr.Radio(["instruct", "chat-instruct", "chat"], value="chat", label="Mode",
                                                 elem_id="chat-mode")
                        with gr.Row():
                            g["count_tokens"] = gr.Button("Count tokens", size="sm")
                        g["token_display"] = gr.HTML(value="", elem_classes="token-display")
            with gr.Tab("Character", elem_id="character-tab"):
                g["character_menu"] = gr.Dropdown(list(CHARACTERS), value="Alice", label="Character",
                                                  elem_id="character-menu")
            with gr.Tab("Model", elem_id="model-tab"):
                with gr.Row():
                    g["load_model"] = gr.Button("Load", elem_id="load-model")
                    g["unload_model"] = gr.Button("Unload", elem_id="unload-model")
                g["model_status"] = gr.Markdown("No model is loaded" if shared.model is None else "Ready",
                                                elem_id="model-status")
            chat = [g["mode"], g["character_menu"], g["unique_id"]]
            g["Generate"].click(self.send, [g["textbox"], *chat], reply)
            g["Regenerate"].click(self.regenerate, chat, reply)
            # chat.handle_branch_chat_click: the history is saved under a new id, which the chat list selects
            g["branch_chat"].click(lambda: gr.update(choices=[CHAT_ID, BRANCH_ID], value=BRANCH_ID), None, g["unique_id"])
            g["load_model"].click(self.load_model, None, g["model_status"])
            g["unload_model"].click(self.unload_model, None, g["model_status"])
            # modules/extensions.py create_extensions_tabs(): the extension's tab around its ui()
            for extension, name in host.iterator():
                with gr.Tab(extension.params.get("display_name", name), elem_classes="extension-tab"):
                    extension.ui()
        return page


def serve(page: Page, port: int) -> None:
    page.app.queue()
    page.app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    show_api=False)


@contextlib.contextmanager
def served(user_data: Path, model, *, multi_user: bool = False, loaded: bool = True):
    """The page on a free port, with the extension loaded the webui's way on a fresh ``user_data`` (the
    characters written); ``loaded``: the model is in ``shared`` from the start (else the Model tab loads it)."""
    from test_browser import free_port  # a test module: imported where the browser tests already run

    host.reset_shared(user_data, multi_user=multi_user)
    write_characters(user_data)
    if loaded:
        shared.model, shared.tokenizer = model
    try:
        with host.running():
            page = Page(model, multi_user=multi_user)
            page.port = free_port()
            serve(page, page.port)
            try:
                yield page
            finally:
                page.app.close()
    finally:
        shared.model = shared.tokenizer = None
