"""A model of text-generation-webui v4.7.3 as an extension sees it, for the adapter's tests.

It mirrors the host's call sequence with the same function names, signatures and threads
(modules/extensions.py, modules/text_generation.py, modules/callbacks.py, modules/chat.py,
modules/api/completions.py), reduced to what touches an extension:

- ``modules.shared``: model, tokenizer, model_name, generation_lock, stop_everything, args (loader,
  multi_user, no_cache), user_data_dir, settings, default_settings, gradio;
- ``load_extensions`` imports ``extensions.<name>.script``, applies ``<name>-<param>`` settings and
  runs ``setup()`` once per module; ``apply_extensions`` calls the modifiers in the host's way;
- ``generate_reply`` takes the generation lock around ``_generate_reply`` (state and input
  modifiers for non-chat requests, stopping strings that turn a non-stream request into a stream,
  the Stop check) and ``generate_reply_HF`` (encode, tokenizer_modifier, logits_processor_modifier,
  ``model.generate`` directly or, when streaming, in the thread ``Iteratorize`` starts, whose
  callback raises only at the next token: after a Stop the thread runs one more forward after the
  lock was released); a model of the llama.cpp class goes to ``generate_reply_custom`` instead;
- ``chatbot_wrapper``: history, state, chat_input and input modifiers, the prompt with
  bot_prefix_modifier, ``generate_reply(is_chat=True)`` and output_modifier;
- ``modules.api`` (tests/webui_api): the OpenAI-compatible API's request models, error handlers, routes
  and completion entry points, imported fresh at each ``running(api=True)`` as server.py imports them
  after the extensions' setup();
- ``chat_completions``: the OpenAI-compatible API (``mode`` defaults to instruct, the body's raw
  ``character``, no ``unique_id``/``character_menu``; non-streaming requests run in a worker thread);
  ``completions``: ``generate_reply(is_chat=False)``.

Instrumentation for tests only: ``HOST.outputs`` keeps the token ids of each model.generate result.
"""
from __future__ import annotations

import ast
import contextlib
import contextvars
import copy
import html
import importlib
import sys
import threading
import types
from dataclasses import dataclass, field
from inspect import signature
from pathlib import Path
from queue import Queue
from threading import Thread

import torch
import transformers
import yaml
from transformers import LogitsProcessorList


def _install_modules() -> types.ModuleType:
    """``import modules.shared`` gives this fake, unless a real webui is already on sys.path."""
    if "modules.shared" in sys.modules and not getattr(sys.modules["modules.shared"], "FAKE", False):
        raise RuntimeError("a real webui's modules package is imported; the fake host cannot stand beside it")
    if "modules.shared" in sys.modules:
        return sys.modules["modules.shared"]
    package = types.ModuleType("modules")
    package.__path__ = []
    shared = types.ModuleType("modules.shared")
    shared.FAKE = True
    package.shared = shared
    api = types.ModuleType("modules.api")  # its modules are the files in tests/webui_api
    api.__path__ = [str(Path(__file__).resolve().parent / "webui_api")]
    package.api = api
    sys.modules["modules"] = package
    sys.modules["modules.shared"] = shared
    sys.modules["modules.api"] = api
    return shared


API_MODULES = ("modules.api.script", "modules.api.completions", "modules.api.typing", "modules.api.errors")


def forget_api() -> None:
    """The API's modules are imported afresh next time (a new webui process)."""
    for name in API_MODULES:
        sys.modules.pop(name, None)
        vars(sys.modules["modules.api"]).pop(name.rsplit(".", 1)[1], None)


shared = _install_modules()


def reset_shared(user_data_dir: Path, multi_user: bool = False) -> None:
    shared.model = None
    shared.tokenizer = None
    shared.model_name = "None"
    shared.is_seq2seq = False
    shared.generation_lock = threading.Lock()
    shared.stop_everything = False
    shared.args = types.SimpleNamespace(loader="Transformers", multi_user=multi_user, no_cache=False, verbose=False, extensions=[],
                                        extra_flags=None, api=False, public_api=False, api_key=None)
    shared.user_data_dir = Path(user_data_dir)
    shared.settings = {}
    shared.default_settings = {"character": "Assistant"}
    shared.gradio = {}


ASSISTANT = {"name": "AI", "greeting": "How can I help you today?", "context": "The following is a conversation with an AI Large Language Model."}


def load_model(user_data_dir: Path, model, tokenizer, recipes=()) -> None:
    """A fresh host with ``model`` loaded, the webui's Assistant character and ``recipes`` saved as user presets."""
    from extensions.steering.engine.presets import PresetStore

    reset_shared(user_data_dir)
    shared.model, shared.tokenizer, shared.model_name = model, tokenizer, "SmolLM2-135M-Instruct"
    (shared.user_data_dir / "characters").mkdir(parents=True)
    (shared.user_data_dir / "characters" / "Assistant.yaml").write_text(yaml.safe_dump(ASSISTANT), encoding="utf-8")
    store = PresetStore(shared.user_data_dir / "steering" / "presets", shipped=None)
    for recipe in recipes:
        store.save(recipe)


# -- gradio's request context (gradio.context.LocalContext), set per step of an event generator ------------
def local_context():
    try:
        from gradio.context import LocalContext
    except ImportError:
        return None
    return LocalContext


@contextlib.contextmanager
def gradio_context():
    """Provide gradio.context.LocalContext for the test's duration when gradio is not installed."""
    if local_context() is not None:
        yield local_context()
        return
    package, context = types.ModuleType("gradio"), types.ModuleType("gradio.context")
    package.__path__ = []

    class LocalContext:  # gradio/context.py: the one field the adapter reads
        request = contextvars.ContextVar("request", default=None)

    context.LocalContext = LocalContext
    package.context = context
    sys.modules["gradio"], sys.modules["gradio.context"] = package, context
    try:
        yield LocalContext
    finally:
        for name, module in (("gradio", package), ("gradio.context", context)):
            if sys.modules.get(name) is module:
                del sys.modules[name]


@dataclass
class Request:
    session_hash: str


def run_event(generator_function, *args, session: str | None = None, **kwargs):
    """Run a generator event the way gradio does (utils.function_wrapper + SyncToAsyncIterator): each
    step in a worker thread, with LocalContext.request set to the session's request for that step."""
    iterator = generator_function(*args, **kwargs)
    results = []

    context = local_context()

    def step():
        if context is not None:
            context.request.set(Request(session) if session else None)
        try:
            return next(iterator)
        finally:
            if context is not None:
                context.request.set(None)

    while True:
        box = {}

        def worker():
            try:
                box["value"] = contextvars.copy_context().run(step)
            except StopIteration:
                box["stop"] = True
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                box["error"] = error

        thread = Thread(target=worker)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        if "stop" in box:
            return results
        results.append(box["value"])


# -- modules/extensions.py ---------------------------------------------------------------------------
state: dict = {}
setup_called: set = set()


def apply_settings(extension, name):
    if not hasattr(extension, "params"):
        return
    for param in extension.params:
        key = f"{name}-{param}"
        shared.default_settings[key] = extension.params[param]
        if key in shared.settings:
            extension.params[param] = shared.settings[key]


def load_extensions(names) -> None:
    state.clear()
    for index, name in enumerate(names):
        extension = importlib.import_module(f"extensions.{name}.script")
        if extension not in setup_called:
            apply_settings(extension, name)
            if hasattr(extension, "setup"):
                extension.setup()
            setup_called.add(extension)
        state[name] = [True, index, extension]


def unload_extensions() -> None:
    state.clear()


def iterator():
    for name in sorted(state, key=lambda x: state[x][1]):
        if state[name][0]:
            yield state[name][2], name


def _apply_string_extensions(function_name, text, state, is_chat=False):
    for extension, _ in iterator():
        if hasattr(extension, function_name):
            func = getattr(extension, function_name)
            count, has_chat = 0, False
            for k in signature(func).parameters:
                if k == "is_chat":
                    has_chat = True
                else:
                    count += 1
            args = [text, state] if count == 2 else [text]
            text = func(*args, is_chat=is_chat) if has_chat else func(*args)
    return text


def _apply_chat_input_extensions(text, visible_text, state):
    for extension, _ in iterator():
        if hasattr(extension, "chat_input_modifier"):
            text, visible_text = extension.chat_input_modifier(text, visible_text, state)
    return text, visible_text


def _apply_state_modifier_extensions(state):
    for extension, _ in iterator():
        if hasattr(extension, "state_modifier"):
            state = extension.state_modifier(state)
    return state


def _apply_history_modifier_extensions(history):
    for extension, _ in iterator():
        if hasattr(extension, "history_modifier"):
            history = extension.history_modifier(history)
    return history


def _apply_tokenizer_extensions(function_name, state, prompt, input_ids, input_embeds):
    for extension, _ in iterator():
        if hasattr(extension, function_name):
            prompt, input_ids, input_embeds = getattr(extension, function_name)(state, prompt, input_ids, input_embeds)
    return prompt, input_ids, input_embeds


def _apply_logits_processor_extensions(function_name, processor_list, input_ids):
    for extension, _ in iterator():
        if hasattr(extension, function_name):
            result = getattr(extension, function_name)(processor_list, input_ids)
            if type(result) is list:
                processor_list = result
    return processor_list


EXTENSION_MAP = {
    "input": lambda *a, **k: _apply_string_extensions("input_modifier", *a, **k),
    "output": lambda *a, **k: _apply_string_extensions("output_modifier", *a, **k),
    "bot_prefix": lambda *a, **k: _apply_string_extensions("bot_prefix_modifier", *a, **k),
    "chat_input": _apply_chat_input_extensions,
    "state": _apply_state_modifier_extensions,
    "history": _apply_history_modifier_extensions,
    "tokenizer": lambda *a: _apply_tokenizer_extensions("tokenizer_modifier", *a),
    "logits_processor": lambda *a: _apply_logits_processor_extensions("logits_processor_modifier", *a),
    "css": lambda: "".join(extension.custom_css() for extension, _ in iterator() if hasattr(extension, "custom_css")),
}


def apply_extensions(typ, *args, **kwargs):
    return EXTENSION_MAP[typ](*args, **kwargs)


@contextlib.contextmanager
def running(names=("steering",), api=False):
    """A webui start with these extensions enabled (and ``--api``: its modules are imported after the
    extensions' setup(), as server.py does); on exit they are disabled and stream threads joined."""
    HOST.__init__()
    setup_called.clear()
    forget_api()
    shared.args.api = api
    with gradio_context():
        load_extensions(list(names))
        if api:
            importlib.import_module("modules.api.script")
        yield
    unload_extensions()
    HOST.join_threads()


def hooks_on(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def untouched(model) -> bool:
    """No hook on any module and no generate wrapper left on the model."""
    return hooks_on(model) == 0 and "generate" not in model.__dict__


# -- modules/callbacks.py ------------------------------------------------------------------------------
class StopNowException(Exception):
    pass


class Iteratorize:
    """Turns a function taking a callback into an iterator; the function runs in its own thread."""

    def __init__(self, func, args=None, kwargs=None, callback=None):
        self.mfunc = func
        self.c_callback = callback
        self.q = Queue()
        self.sentinel = object()
        self.args = args or []
        self.kwargs = kwargs or {}
        self.stop_now = False

        def _callback(val):
            if self.stop_now or shared.stop_everything:
                raise StopNowException
            self.q.put(val)

        def gentask():
            try:
                self.mfunc(callback=_callback, *self.args, **self.kwargs)
            except StopNowException:
                pass
            except Exception as error:  # the host logs it ("Failed in generation callback")
                HOST.thread_errors.append(error)
            self.q.put(self.sentinel)

        self.thread = Thread(target=gentask)
        HOST.threads.append(self.thread)
        self.thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        obj = self.q.get(True, None)
        if obj is self.sentinel:
            raise StopIteration
        return obj

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.stop_now = True


# -- modules/transformers_loader.py ---------------------------------------------------------------------
class _StopEverythingStoppingCriteria(transformers.StoppingCriteria):
    def __call__(self, input_ids, _scores) -> bool:
        return shared.stop_everything


class Stream(transformers.StoppingCriteria):
    def __init__(self, callback_func=None):
        self.callback_func = callback_func

    def __call__(self, input_ids, scores) -> bool:
        if self.callback_func is not None:
            self.callback_func(input_ids[0])
        return False


# -- modules/text_generation.py -----------------------------------------------------------------------------
@dataclass
class HostRecord:
    outputs: list = field(default_factory=list)  # token ids of each generated reply (new tokens only)
    threads: list = field(default_factory=list)  # Iteratorize threads
    thread_errors: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # what generate_reply_HF logged ("Failed to generate reply (HF)")

    def join_threads(self, timeout: float = 30) -> None:
        for thread in self.threads:
            thread.join(timeout)


HOST = HostRecord()


def generate_reply(*args, **kwargs):
    shared.generation_lock.acquire()
    try:
        for result in _generate_reply(*args, **kwargs):
            yield result
    finally:
        shared.generation_lock.release()


def apply_stopping_strings(reply, all_stop_strings):
    for string in all_stop_strings:
        index = reply.find(string)
        if index != -1:
            return reply[:index], True
    return reply, False


def _generate_reply(question, state, stopping_strings=None, is_chat=False, escape_html=False, for_ui=False):
    if shared.model is None:
        yield ""
        return
    if shared.model.__class__.__name__ in ["LlamaServer", "Exllamav3Model", "TensorRTLLMModel"]:
        generate_func = generate_reply_custom
    else:
        generate_func = generate_reply_HF

    original_question = question
    if not is_chat:
        state = apply_extensions("state", state)
        question = apply_extensions("input", question, state)

    all_stop_strings = []
    for st in (stopping_strings, state["custom_stopping_strings"]):
        if type(st) is str:
            st = ast.literal_eval(f"[{st}]")
        if type(st) is list and len(st) > 0:
            all_stop_strings += st

    shared.stop_everything = False
    reply = ""
    is_stream = state["stream"]
    if len(all_stop_strings) > 0 and not state["stream"]:
        original_logits_processor = state.get("logits_processor")
        stop_event_ref = state.pop("stop_event", None)
        state = copy.deepcopy(state)
        if stop_event_ref is not None:
            state["stop_event"] = stop_event_ref
        if original_logits_processor is not None:
            state["logits_processor"] = original_logits_processor
        state["stream"] = True

    for reply in generate_func(question, original_question, state, stopping_strings, is_chat=is_chat):
        reply, stop_found = apply_stopping_strings(reply, all_stop_strings)
        if escape_html:
            reply = html.escape(reply)
        if is_stream:
            yield reply
        stop_event = state.get("stop_event")
        if stop_found or shared.stop_everything or (stop_event and stop_event.is_set()):
            break

    if not is_chat:
        reply = apply_extensions("output", reply, state)
    yield reply


def encode(prompt, add_special_tokens=True, add_bos_token=True):
    input_ids = shared.tokenizer.encode(str(prompt), return_tensors="pt", add_special_tokens=add_special_tokens)
    bos = getattr(shared.tokenizer, "bos_token_id", None)
    if bos is not None and add_bos_token and (len(input_ids[0]) == 0 or input_ids[0][0] != bos):
        input_ids = torch.cat((torch.tensor([[bos]]), input_ids), 1)
    if not getattr(shared.args, "cpu", False) and torch.cuda.is_available():  # get_device(): the GPU
        input_ids = input_ids.to("cuda")
    return input_ids


def decode(output_ids, skip_special_tokens=True):
    return shared.tokenizer.decode(output_ids, skip_special_tokens=skip_special_tokens)


def get_reply_from_output_ids(output_ids, state=None, starting_from=0):
    return decode(output_ids[starting_from:], state["skip_special_tokens"] if state else True)


def generate_reply_HF(question, original_question, state, stopping_strings=None, is_chat=False):
    torch.manual_seed(state["seed"])
    generate_params = {k: state[k] for k in ("max_new_tokens", "do_sample", "temperature", "top_p") if k in state}
    generate_params.update({"use_cache": not shared.args.no_cache})

    input_ids = encode(question, add_bos_token=state["add_bos_token"])
    output = input_ids[0]

    question, input_ids, inputs_embeds = apply_extensions("tokenizer", state, question, input_ids, None)
    original_input_ids = input_ids
    generate_params.update({"inputs": input_ids})
    if inputs_embeds is not None:
        generate_params.update({"inputs_embeds": inputs_embeds})

    eos_token_ids = [shared.tokenizer.eos_token_id] if shared.tokenizer.eos_token_id is not None else []
    generate_params["eos_token_id"] = eos_token_ids
    generate_params["pad_token_id"] = shared.tokenizer.pad_token_id
    generate_params["attention_mask"] = torch.ones_like(input_ids)
    generate_params["stopping_criteria"] = transformers.StoppingCriteriaList()
    generate_params["stopping_criteria"].append(_StopEverythingStoppingCriteria())

    processor = state.get("logits_processor", LogitsProcessorList([]))
    if not isinstance(processor, LogitsProcessorList):
        processor = LogitsProcessorList([processor])
    apply_extensions("logits_processor", processor, input_ids)
    generate_params["logits_processor"] = processor

    starting = len(original_input_ids[0])
    try:
        if not is_chat:
            yield ""

        if not state["stream"]:
            with torch.no_grad():
                output = shared.model.generate(**generate_params)[0]
            HOST.outputs.append(output[starting:].tolist())
            yield get_reply_from_output_ids(output, state, starting_from=starting)
        else:

            def generate_with_callback(callback=None, *args, **kwargs):
                kwargs["stopping_criteria"].append(Stream(callback_func=callback))
                with torch.no_grad():
                    shared.model.generate(**kwargs)

            def generate_with_streaming(**kwargs):
                return Iteratorize(generate_with_callback, [], kwargs, callback=None)

            with generate_with_streaming(**generate_params) as generator:
                cumulative_reply = ""
                starting_from = starting
                tokens = []
                HOST.outputs.append(tokens)
                for output in generator:
                    tokens[:] = output[starting:].tolist()
                    if output[-1] in eos_token_ids:
                        break
                    new_content = get_reply_from_output_ids(output, state, starting_from=starting_from)
                    if chr(0xFFFD) in new_content:
                        continue
                    cumulative_reply += new_content
                    starting_from = len(output)
                    yield cumulative_reply
    except Exception as error:  # the host logs it: "Failed to generate reply (HF)"
        HOST.errors.append(error)


def generate_reply_custom(question, original_question, state, stopping_strings=None, is_chat=False):
    """Loaders outside PyTorch (llama.cpp's LlamaServer, ExLlamaV3): no tokenizer_modifier."""
    if not is_chat:
        yield ""
    if not state["stream"]:
        yield shared.model.generate(question, state)
    else:
        for reply in shared.model.generate_with_streaming(question, state):
            yield reply


# -- modules/chat.py ----------------------------------------------------------------------------------------
def load_character(character, name1, name2):
    for suffix in (".yml", ".yaml", ".json"):
        path = Path(shared.user_data_dir) / "characters" / f"{character}{suffix}"
        if path.exists():
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return name1, data.get("name", name2), None, data.get("greeting", ""), data.get("context", "")
    raise ValueError(f"no character {character}")


def generate_character_yaml(name, greeting, context):
    """What saving a character from the UI writes (chat.py:2196-2204): every other key is lost."""
    data = {"name": name, "greeting": greeting, "context": context}
    return yaml.dump({k: v for k, v in data.items() if v}, sort_keys=False, width=float("inf"))


def save_character(name, greeting, context, filename):
    path = Path(shared.user_data_dir) / "characters" / f"{filename}.yaml"
    path.write_text(generate_character_yaml(name, greeting, context), encoding="utf-8")


def get_stopping_strings(state):
    if state["mode"] in ("chat", "chat-instruct"):
        return [f"\n{state['name1']}:", f"\n{state['name2']}:"]
    return []


def generate_chat_prompt(user_input, state, **kwargs):
    """The chat prompt (a simplified chat template; its shape is all the adapter depends on)."""
    history = state["history"]["internal"]
    if state["mode"] == "instruct":
        messages = [{"role": "system", "content": state.get("custom_system_message") or "You are a helpful assistant."}]
        for user, bot in history:
            messages.append({"role": "user", "content": user})
            if bot:
                messages.append({"role": "assistant", "content": bot})
        prompt = shared.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        lines = [state["context"].strip(), ""]
        for user, bot in history:
            lines.append(f"{state['name1']}: {user}")
            lines.append(f"{state['name2']}: {bot}".rstrip() if bot else f"{state['name2']}:")
        prompt = "\n".join(lines)
        if state["mode"] == "chat-instruct":
            command = state["chat-instruct_command"].replace("<|character|>", state["name2"]).replace("<|prompt|>", prompt)
            prompt = shared.tokenizer.apply_chat_template([{"role": "user", "content": command}], tokenize=False, add_generation_prompt=True)
            prompt += f"{state['name2']}:"
    prompt += apply_extensions("bot_prefix", "", state)
    return prompt


def chatbot_wrapper(text, state, regenerate=False, _continue=False, loading_message=True, for_ui=False):
    history = state["history"]
    output = copy.deepcopy(history)
    output = apply_extensions("history", output)
    state = apply_extensions("state", state)

    if state["mode"] in ["instruct", "chat-instruct"]:
        state["add_bos_token"] = False

    stopping_strings = get_stopping_strings(state)
    if not (regenerate or _continue):
        visible_text = html.escape(text)
        text, visible_text = apply_extensions("chat_input", text, visible_text, state)
        text = apply_extensions("input", text, state, is_chat=True)
        output["internal"].append([text, ""])
        output["visible"].append([visible_text, ""])
    elif regenerate:
        output["internal"][-1][1] = ""
        output["visible"][-1][1] = ""

    prompt = generate_chat_prompt(text, {**state, "history": output})
    reply = ""
    for reply in generate_reply(prompt, state, stopping_strings=stopping_strings, is_chat=True, for_ui=for_ui):
        output["internal"][-1][1] = reply.lstrip(" ")
        yield output
    output["visible"][-1][1] = apply_extensions("output", html.escape(reply.lstrip(" ")), state, is_chat=True)
    yield output


def generate_chat_reply(text, state, regenerate=False, _continue=False, loading_message=True, for_ui=False):
    for history in chatbot_wrapper(text, state, regenerate=regenerate, _continue=_continue, loading_message=loading_message, for_ui=for_ui):
        yield history


# -- the UI's state (ui.gather_interface_values) and the API ---------------------------------------------------
def ui_state(**overrides) -> dict:
    """A chat tab state: the keys the host and the adapter read, with the UI's defaults."""
    state = {
        "mode": "chat",
        "character_menu": "Assistant",
        "unique_id": "20260101-00-00-00",
        "name1": "You",
        "name2": "AI",
        "context": "The following is a conversation with an AI Large Language Model.",
        "chat-instruct_command": 'Continue the chat dialogue below. Write a single reply for the character "<|character|>".\n\n<|prompt|>',
        "custom_system_message": "",
        "history": {"internal": [], "visible": [], "metadata": {}},
        "custom_stopping_strings": "",
        "stream": True,
        "max_new_tokens": 8,
        "do_sample": False,
        "seed": 0,
        "add_bos_token": True,
        "skip_special_tokens": True,
        "textbox-notebook": "",
    }
    state.update(overrides)
    return state


def chat(text, state, session=None, regenerate=False):
    """One Send click in the chat tab: returns (reply, history)."""
    results = run_event(generate_chat_reply, text, state, regenerate=regenerate, session=session)
    history = results[-1]
    return history["internal"][-1][1], history


def impersonate_wrapper(text, state):
    """chat.impersonate_wrapper: the user's next line, generated with is_chat=True and no state_modifier."""
    prompt = generate_chat_prompt("", state, impersonate=True) + f"\n{state['name1']}:"
    reply = ""
    for reply in generate_reply(prompt + text, state, stopping_strings=get_stopping_strings(state), is_chat=True):
        yield (text + reply).lstrip(" ")


def impersonate(text, state, session=None):
    """One Impersonate click in the chat tab: returns the textbox's text."""
    return run_event(impersonate_wrapper, text, state, session=session)[-1]


def notebook(prompt, state, session=None):
    """The Notebook/Default tab: generate_reply(is_chat=False)."""
    results = run_event(generate_reply, prompt, state, is_chat=False, session=session)
    return results[-1]


def chat_completions(body: dict):
    """POST /v1/chat/completions, reduced: the state the API builds, then the same chat path."""
    character = body.get("character") or shared.default_settings["character"]
    character = "Assistant" if character == "None" else character
    name1, name2, _, greeting, context = load_character(character, body.get("user_name") or "You", "")
    messages = body["messages"]
    history = {"internal": [], "visible": [], "metadata": {}}
    pending = None
    for message in messages:
        if message["role"] == "user":
            pending = message["content"]
        elif message["role"] == "assistant" and pending is not None:
            history["internal"].append([pending, message["content"]])
            history["visible"].append([pending, message["content"]])
            pending = None
    generate_params = ui_state()
    for key in ("character_menu", "unique_id", "textbox-notebook"):
        generate_params.pop(key)
    generate_params.update({
        "mode": body.get("mode", "instruct"),
        "character": body.get("character"),
        "name1": name1, "name2": body.get("bot_name") or name2,
        "context": body.get("context") or context, "greeting": greeting,
        "history": history, "stream": bool(body.get("stream", False)),
        "max_new_tokens": body.get("max_tokens", 12),
    })
    box = {}

    def run():  # non-streaming requests run in asyncio.to_thread: another thread, no gradio request
        replies = list(generate_chat_reply(pending or "", generate_params, loading_message=False))
        box["reply"] = replies[-1]["internal"][-1][1]

    thread = Thread(target=run)
    thread.start()
    thread.join()
    return box["reply"]


def completions(prompt: str, max_tokens: int = 12):
    """POST /v1/completions: generate_reply(is_chat=False) with a state of sampler fields only."""
    generate_params = {k: v for k, v in ui_state(max_new_tokens=max_tokens, stream=False).items()
                       if k not in ("mode", "character_menu", "unique_id", "name1", "name2", "context", "history")}
    reply = ""
    for reply in generate_reply(prompt, generate_params, is_chat=False):
        pass
    return reply


class LlamaServer:
    """The llama.cpp loader's model object: a client of an external process, no torch layers.
    ``starts`` records the extra flags of every (re)start, as _start_server reads them."""

    def __init__(self, model_path=None):
        self.calls = 0
        self.model_path = str(model_path) if model_path else None
        self.starts = [shared.args.extra_flags]
        self.running = True

    def stop(self):
        self.running = False

    def _start_server(self):
        self.starts.append(shared.args.extra_flags)
        self.running = True

    def generate(self, prompt, state):
        self.calls += 1
        return f"llama.cpp reply {self.calls}"

    def generate_with_streaming(self, prompt, state):
        self.calls += 1
        yield f"llama.cpp reply {self.calls}"


def without_extension(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on this host with no extension loaded (the webui as it is without ours)."""
    saved = dict(state)
    unload_extensions()
    try:
        return fn(*args, **kwargs)
    finally:
        state.update(saved)
