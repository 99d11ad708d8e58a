"""text-generation-webui adapter for `steering`: settings, set-up, the tab and the modifiers.

Everything that does not need the webui lives in runtime/ and ui/; this file (with api.py) is the only joint to the
webui: what they need of it (its models, locks, flags, components) is handed to them from here.
Steering is armed in tokenizer_modifier (Transformers path, inside the generation lock) for the one
``model.generate`` call of that request and removed when that call returns; nothing stays hooked.
"""
import functools
import importlib
import logging
import sys
import threading
from pathlib import Path

from modules import shared

params = {
    "display_name": "Steering",
    "is_tab": True,
    "chat_controls": True,  # the per-chat panel in the chat tab's controls
    "enabled_by_default": True,  # a chat nobody switched starts with steering on
    "layers_path": "",  # attribute path of the decoder blocks, for an architecture not found by itself
}

log = logging.getLogger("steering")
RUNTIME = None  # the SteeringRuntime, made in setup()
UNAVAILABLE = None  # why the extension cannot run at all (no torch in this webui), else None
_chat_request = threading.local()  # set by history_modifier: the next state_modifier is a chat reply's

if __package__:  # extensions/steering: imported as extensions.steering.script
    PACKAGE = __package__
else:  # user_data/extensions/steering: loaded by file path, without a parent package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    PACKAGE = Path(__file__).resolve().parent.name


def _module(name):
    return importlib.import_module(f"{PACKAGE}.{name}")


def setup():
    global RUNTIME, UNAVAILABLE
    try:  # a missing module must not abort the webui's start-up (portable builds have no torch)
        runtime, presets = _module("runtime"), _module("engine.presets")
    except ImportError as error:
        UNAVAILABLE = f"Steering cannot start: {error}. It needs PyTorch in the webui's environment (for every loader, llama.cpp included)."
        log.warning("steering: %s", UNAVAILABLE)
        return
    _to_console()
    data = Path(shared.user_data_dir) / "steering"
    RUNTIME = runtime.SteeringRuntime(
        presets.PresetStore(data / "presets", shipped=presets.SHIPPED_DIR),
        data,
        model_source=lambda: (shared.model, shared.tokenizer),
        loader_name=lambda: getattr(shared.args, "loader", None),
        characters_dir=Path(shared.user_data_dir) / "characters",
        host_lock=lambda: shared.generation_lock,
        layers_path=params["layers_path"] or None,
        default_enabled=bool(params["enabled_by_default"]),
        default_character=lambda: shared.default_settings.get("character", "Assistant"),
        multi_user=bool(shared.args.multi_user),
        llama_host=WebuiLlamaServer(),
    )
    RUNTIME.notice()
    _notice_before_llama_cpp()
    if getattr(shared.args, "api", False) or getattr(shared.args, "public_api", False):
        _api_fields()


def _notice_before_llama_cpp() -> None:
    """Every hook of ours runs before a llama.cpp reply but Impersonate's: a llama.cpp model loaded through the API
    and first used by Impersonate would go unsteered, and silently. So the loader's class notices the model before
    its generate calls, which wraps that server (runtime/llama_cpp.py: each call starts with its control vectors)."""
    try:
        server_class = importlib.import_module("modules.llama_cpp_server").LlamaServer
    except Exception as error:  # noqa: BLE001 - the webui must start all the same
        log.warning("steering: llama.cpp Impersonate may go unsteered for a model loaded through the API: %s", error)
        return
    for name in ("generate", "generate_with_streaming"):
        method = getattr(server_class, name, None)
        if method is not None and not hasattr(method, "__wrapped__"):  # once per webui process
            setattr(server_class, name, _noticed_first(name, method))


def _noticed_first(name, method):
    @functools.wraps(method)  # __wrapped__: what the server's own wrapper calls (runtime/llama_cpp.py attach)
    def noticed(server, *args, **kwargs):
        if RUNTIME is not None:
            RUNTIME.notice()
        steered = server.__dict__.get(name)  # the wrapper notice() put on this server, if it serves it
        return (steered or method.__get__(server))(*args, **kwargs)

    return noticed


def _api_fields() -> None:
    """Requests to the webui's API may carry their own steering (api.py); a failure leaves the API as it was."""
    try:
        problem = _module("api").install(RUNTIME, PACKAGE)
    except Exception as error:  # noqa: BLE001 - the webui must start all the same
        problem = f"{type(error).__name__}: {error}"
    if problem:
        log.warning("steering: API requests cannot choose their steering: %s", problem)


def _to_console() -> None:
    """The webui sends the root logger to a NullHandler (modules/logging_colors.py) and prints its own
    'textgen' logger: ours goes there too, or every problem and notice would be lost."""
    textgen = logging.getLogger("textgen")
    if textgen.handlers and not log.handlers:
        log.handlers = list(textgen.handlers)
        log.setLevel(logging.INFO)
        log.propagate = False


class WebuiLlamaServer:
    """Restarts the webui's llama-server (modules/llama_cpp_server.py) with control-vector flags added
    to the user's own --extra-flags, which stay as the user set them."""

    def model_path(self, server):
        return Path(server.model_path)

    def user_flags(self) -> str:
        return getattr(shared.args, "extra_flags", None) or ""

    def ik_llama(self) -> bool:
        return bool(getattr(shared.args, "ik", False))

    def restart(self, server, extra_flags: str) -> None:
        users = shared.args.extra_flags
        shared.args.extra_flags = extra_flags
        try:
            server.stop()
            server._start_server()  # the loader's own start: same binary, model and settings
        finally:
            shared.args.extra_flags = users

    def session(self):
        return _browser_session()


def history_modifier(history):
    _chat_request.pending = True  # only the chat path calls this, right before state_modifier
    return history


def state_modifier(state):
    if RUNTIME is not None:
        RUNTIME.notice()
        state[_module("runtime").STATE_IS_CHAT] = getattr(_chat_request, "pending", False)
        _chat_request.pending = False
        _remember_session(state)
    return state


def _browser_session():
    """The browser session of the request handled now with --multi-user (gradio's request context), else None."""
    return _module("ui.messages").browser_session() if shared.args.multi_user else None


def _remember_session(state) -> None:
    runtime = _module("runtime")
    session = _browser_session()
    if session:
        state[runtime.STATE_SESSION] = session
    else:
        state.pop(runtime.STATE_SESSION, None)


def tokenizer_modifier(state, prompt, input_ids, input_embeds):
    if RUNTIME is not None:
        if _module("runtime").STATE_IS_CHAT not in state:  # Impersonate skipped state_modifier (runtime.is_chat_request)
            RUNTIME.notice()
            _remember_session(state)
        try:
            RUNTIME.begin_generation(state, input_ids)
        except Exception as error:  # steering must never break a generation; the reason is said once
            RUNTIME.report_problem(f"not applied to this reply: {type(error).__name__}: {error}", state)
    return prompt, input_ids, input_embeds


def custom_css():
    """The chat panel's CSS (the webui adds every extension's to its page)."""
    return _module("ui.chat").PANEL_CSS if RUNTIME is not None else ""


def ui():
    import gradio as gr

    if RUNTIME is None:
        gr.Markdown(UNAVAILABLE or "Steering did not start; see the console.")
        return
    tab_module = _module("ui.tab")
    around = gr.context.Context.block  # the webui's gr.Tab for this tab (params['is_tab'])
    tab = tab_module.create_tab(RUNTIME, more=tab_module.extension_panels())
    if isinstance(around, gr.Tab):  # status and layer slider follow a model loaded later: read when opened
        tab.refresh_on(around.select)  # (never model_status.change: it re-fires at every re-render, see ui/chat.py)
    if params["chat_controls"]:
        _module("ui.chat").create_chat_panel(RUNTIME, shared.gradio, bool(shared.args.multi_user))

