"""A model of text-generation-webui v4.7.3 as the steering extension meets it, for the adapter's tests.

Written from the contract between the two, not from the webui's code (which may not be committed here):
what the extension reads of the host, and what the host calls on the extension, in which order, under
which lock and on which thread. The facts behind it are in /work/shared/DESIGN.md.

What the extension reads or calls:
- ``modules.shared``: model, tokenizer, model_name, generation_lock, stop_everything, args (loader,
  multi_user, no_cache, extra_flags, api, ...), user_data_dir, settings, default_settings, gradio;
- ``modules.api`` (tests/webui_api): the OpenAI-compatible API's request models, errors, routes and
  entry points, imported afresh at each ``running(api=True)`` after the extensions' setup(), as at start;
- the llama.cpp loader's model object (``LlamaServer``): generate, generate_with_streaming, stop and
  _start_server, which reads ``shared.args.extra_flags``.

What the host calls on the extension:
- at start, once per module and process: ``<name>-<param>`` settings into ``params``, then ``setup()``;
- ``apply_extensions(kind, ...)``: each enabled extension's ``<kind>_modifier`` in load order, the result
  of one handed to the next;
- a reply (``generate_reply``) holds ``shared.generation_lock`` while its generator is consumed. A request
  that is not a chat runs the state and input modifiers there; a chat ran them in ``generate_chat_reply``.
  A PyTorch model's reply encodes the prompt, runs tokenizer_modifier and logits_processor_modifier, then
  ``model.generate``: in the caller's thread, or when streaming in a thread of its own whose per-token
  callback notices a Stop only at the next token (so one more forward runs after the lock is released).
  Stop strings make a non-streaming request stream internally. A llama.cpp model gets the prompt text.

Instrumentation for tests only: ``HOST`` records each reply's new token ids, the stream threads and the
errors the host would have logged.
"""
from __future__ import annotations

import ast
import contextlib
import contextvars
import copy
import html
import importlib
import inspect
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

import torch
import yaml
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList


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
    loader = types.ModuleType("modules.llama_cpp_server")  # its LlamaServer: the class below
    package.llama_cpp_server = loader
    sys.modules["modules.llama_cpp_server"] = loader
    return shared


API_MODULES = ("modules.api.script", "modules.api.completions", "modules.api.typing", "modules.api.errors")


def forget_api() -> None:
    """The API's modules are imported afresh next time (a new webui process)."""
    for name in API_MODULES:
        sys.modules.pop(name, None)
        vars(sys.modules["modules.api"]).pop(name.rsplit(".", 1)[1], None)


shared = _install_modules()


def reset_shared(user_data_dir: Path, multi_user: bool = False) -> None:
    """The shared module of a webui started without a model (``--multi-user`` when asked)."""
    args = types.SimpleNamespace(loader="Transformers", multi_user=multi_user, no_cache=False, verbose=False, extensions=[],
                                 extra_flags=None, api=False, public_api=False, api_key=None)
    vars(shared).update(model=None, tokenizer=None, model_name="None", is_seq2seq=False, generation_lock=threading.Lock(),
                        stop_everything=False, args=args, user_data_dir=Path(user_data_dir), settings={},
                        default_settings={"character": "Assistant"}, gradio={})


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

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        if "stop" in box:
            return results
        results.append(box["value"])


# -- the extension table: which extensions are on, in which order ------------------------------------------
state: dict = {}  # name -> [enabled, load position, script module], the host's own table
setup_called: set = set()  # modules whose setup() ran in this process


def load_extensions(names) -> None:
    """Enable ``names`` in this order. A module set up before (an earlier start in this process) is not set
    up again; a new one first gets its saved ``<name>-<param>`` settings, whose defaults the host records."""
    state.clear()
    for position, name in enumerate(names):
        module = importlib.import_module(f"extensions.{name}.script")
        if module not in setup_called:
            for param, default in getattr(module, "params", {}).items():
                shared.default_settings[f"{name}-{param}"] = default
                module.params[param] = shared.settings.get(f"{name}-{param}", default)
            getattr(module, "setup", lambda: None)()
            setup_called.add(module)
        state[name] = [True, position, module]


def unload_extensions() -> None:
    state.clear()


def iterator():
    """(module, name) of each enabled extension, in load order."""
    ordered = sorted(state.items(), key=lambda item: item[1][1])
    return ((module, name) for name, (enabled, _, module) in ordered if enabled)


def _text_hook(hook, text, state, is_chat):
    """input/output/bot_prefix modifiers take (text) or (text, state), and is_chat only if they declare it."""
    declared = inspect.signature(hook).parameters
    positional = (text, state) if len([p for p in declared if p != "is_chat"]) == 2 else (text,)
    return hook(*positional, is_chat=is_chat) if "is_chat" in declared else hook(*positional)


def apply_extensions(kind, *args, is_chat=False):
    """Each enabled extension's ``<kind>_modifier``, in load order, each given what the one before returned.
    The value threaded through: the text (input, output, bot_prefix), (text, visible text) for chat_input,
    the state, the history, (prompt, input ids, embeddings) for tokenizer, and the logits processors, which
    a hook changes in place or replaces by returning a plain list. ``css``: every custom_css() joined."""
    if kind == "css":
        return "".join(module.custom_css() for module, _ in iterator() if hasattr(module, "custom_css"))
    args = list(args)
    for module, _ in iterator():
        hook = getattr(module, f"{kind}_modifier", None)
        if hook is None:
            continue
        if kind in ("input", "output", "bot_prefix"):
            args[0] = _text_hook(hook, args[0], args[1] if len(args) > 1 else None, is_chat)
        elif kind == "chat_input":
            args[:2] = hook(*args)
        elif kind == "tokenizer":
            args[1:] = hook(*args)
        elif kind == "logits_processor":
            replaced = hook(*args)
            args[0] = replaced if type(replaced) is list else args[0]
        else:  # state, history
            args[0] = hook(args[0])
    return {"chat_input": lambda: tuple(args[:2]), "tokenizer": lambda: tuple(args[1:])}.get(kind, lambda: args[0])()


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


def without_extension(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on this host with no extension loaded (the webui as it is without ours)."""
    saved = dict(state)
    unload_extensions()
    try:
        return fn(*args, **kwargs)
    finally:
        state.update(saved)


# -- one reply: the generation lock, the hooks, model.generate ------------------------------------------------
@dataclass
class HostRecord:
    outputs: list = field(default_factory=list)  # token ids of each generated reply (new tokens only)
    threads: list = field(default_factory=list)  # the streaming threads
    thread_errors: list = field(default_factory=list)  # what a streaming thread raised (the host logs it)
    errors: list = field(default_factory=list)  # what a PyTorch reply raised (the host logs it, the reply ends)

    def join_threads(self, timeout: float = 30) -> None:
        for thread in self.threads:
            thread.join(timeout)


HOST = HostRecord()
SAMPLING = ("max_new_tokens", "do_sample", "temperature", "top_p")  # the state's keys passed on to model.generate
CLIENT_MODELS = ("LlamaServer", "Exllamav3Model", "TensorRTLLMModel")  # loaders whose model runs in another process


def stop_strings(*sources) -> list[str]:
    """The chat's stop strings and the user's own: a list, or the UI's text box holding a Python list's items."""
    found: list[str] = []
    for source in sources:
        found += ast.literal_eval(f"[{source}]") if isinstance(source, str) else list(source or [])
    return found


def cut_at_stop(reply: str, stops: list[str]) -> tuple[str, bool]:
    """The reply up to the first stop string found in it (checked in the list's order), and whether one was."""
    hit = next((stop for stop in stops if stop in reply), None)
    return (reply, False) if hit is None else (reply[:reply.index(hit)], True)


def generate_reply(question, state, stopping_strings=None, is_chat=False):
    """Every reply of the host, under the generation lock for as long as its generator runs: the whole
    reply so far at each step when streaming, else one final reply (a non-chat request first yields "")."""
    with shared.generation_lock:
        yield from _reply_steps(question, state, stopping_strings, is_chat)


def _reply_steps(question, state, stopping_strings, is_chat):
    if shared.model is None:
        yield ""
        return
    if not is_chat:
        state = apply_extensions("state", state)
        question = apply_extensions("input", question, state)
    stops = stop_strings(stopping_strings, state["custom_stopping_strings"])
    shared.stop_everything = False  # a Stop clicked during an earlier reply does not end this one
    asked_to_stream = state["stream"]
    if stops and not asked_to_stream:  # streamed inside to cut at a stop string; objects that cannot be copied kept
        kept = {key: state[key] for key in ("logits_processor", "stop_event") if key in state}
        state = {**copy.deepcopy({k: v for k, v in state.items() if k not in kept}), **kept, "stream": True}
    steps = _client_model_steps if type(shared.model).__name__ in CLIENT_MODELS else _pytorch_steps
    reply = ""
    for reply in steps(question, state, is_chat):
        reply, stopped = cut_at_stop(reply, stops)
        if asked_to_stream:
            yield reply
        cancelled = state.get("stop_event") is not None and state["stop_event"].is_set()
        if stopped or cancelled or shared.stop_everything:
            break
    yield reply if is_chat else apply_extensions("output", reply, state)


def encode(prompt, add_bos_token=True):
    """Token ids (1, n) with the tokenizer's special tokens and, when asked, one BOS in front; on the GPU if any."""
    ids = shared.tokenizer.encode(str(prompt), return_tensors="pt")
    bos = getattr(shared.tokenizer, "bos_token_id", None)
    if add_bos_token and bos is not None and (ids.shape[1] == 0 or int(ids[0, 0]) != bos):
        ids = torch.cat([torch.tensor([[bos]]), ids], dim=1)
    return ids.to("cuda") if torch.cuda.is_available() and not getattr(shared.args, "cpu", False) else ids


def decode_reply(token_ids, state) -> str:
    return shared.tokenizer.decode(token_ids, skip_special_tokens=state["skip_special_tokens"])


class StopButton(StoppingCriteria):
    """Ends model.generate at the next token once the Stop button set shared.stop_everything."""

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        return bool(shared.stop_everything)


class EachToken(StoppingCriteria):
    """Hands each step's sequence to ``callback``; never ends generation itself."""

    def __init__(self, callback):
        self.callback = callback

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        self.callback(input_ids[0])
        return False


def _pytorch_steps(question, state, is_chat):
    torch.manual_seed(state["seed"])
    ids = encode(question, add_bos_token=state["add_bos_token"])
    question, ids, embeddings = apply_extensions("tokenizer", state, question, ids, None)
    eos = [] if shared.tokenizer.eos_token_id is None else [shared.tokenizer.eos_token_id]
    processors = state.get("logits_processor", LogitsProcessorList())
    processors = processors if isinstance(processors, LogitsProcessorList) else LogitsProcessorList([processors])
    apply_extensions("logits_processor", processors, ids)
    kwargs = {key: state[key] for key in SAMPLING if key in state}
    kwargs.update(inputs=ids, attention_mask=torch.ones_like(ids), eos_token_id=eos, pad_token_id=shared.tokenizer.pad_token_id,
                  use_cache=not shared.args.no_cache, logits_processor=processors, stopping_criteria=StoppingCriteriaList([StopButton()]))
    if embeddings is not None:
        kwargs["inputs_embeds"] = embeddings
    prompt_length = ids.shape[1]
    try:
        if not is_chat:
            yield ""
        if state["stream"]:
            yield from _streamed_reply(kwargs, prompt_length, eos, state)
        else:
            with torch.no_grad():
                new_tokens = shared.model.generate(**kwargs)[0][prompt_length:]
            HOST.outputs.append(new_tokens.tolist())
            yield decode_reply(new_tokens, state)
    except Exception as error:  # the host logs it and the reply ends with what it had
        HOST.errors.append(error)


def _streamed_reply(kwargs, prompt_length, eos, state):
    """The reply so far after each token, model.generate running in a CallbackStream's thread."""
    def generate(callback):
        criteria = StoppingCriteriaList([*kwargs["stopping_criteria"], EachToken(callback)])
        with torch.no_grad():
            shared.model.generate(**{**kwargs, "stopping_criteria": criteria})

    tokens: list[int] = []
    HOST.outputs.append(tokens)
    reply, decoded_up_to = "", prompt_length
    with CallbackStream(generate) as sequences:
        for sequence in sequences:
            tokens[:] = sequence[prompt_length:].tolist()
            if int(sequence[-1]) in eos:
                break
            piece = decode_reply(sequence[decoded_up_to:], state)
            if "\ufffd" in piece:  # part of a character: wait for the token that completes it
                continue
            reply, decoded_up_to = reply + piece, len(sequence)
            yield reply


class CallbackStream:
    """``run(callback)`` in a thread of its own; each value it hands the callback comes out of the
    iterator. Leaving the ``with`` does not wait for the thread: it is flagged, and stops at its next callback."""

    _END = object()

    def __init__(self, run):
        self.values: Queue = Queue()
        self.abandoned = False
        self.thread = threading.Thread(target=self._run, args=(run,))
        HOST.threads.append(self.thread)
        self.thread.start()

    class _Abandoned(Exception):
        pass

    def _run(self, run) -> None:
        try:
            run(self._receive)
        except self._Abandoned:
            pass
        except Exception as error:  # the host logs it
            HOST.thread_errors.append(error)
        self.values.put(self._END)

    def _receive(self, value) -> None:
        if self.abandoned or shared.stop_everything:
            raise self._Abandoned
        self.values.put(value)

    def __iter__(self):
        return iter(self.values.get, self._END)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.abandoned = True


def _client_model_steps(question, state, is_chat):
    """A model served by another process (llama.cpp's llama-server, ...) gets the prompt text: no token hooks."""
    if not is_chat:
        yield ""
    if state["stream"]:
        yield from shared.model.generate_with_streaming(question, state)
    else:
        whole = shared.model.generate(question, state)
        yield whole


class LlamaServer:
    """The llama.cpp loader's model object: a client of an external process, no torch layers.
    ``starts`` records the extra flags of every (re)start, as the loader's own start reads them."""

    def __init__(self, model_path=None):
        self.calls = 0
        self.model_path = str(model_path) if model_path else None
        self.starts = [shared.args.extra_flags]
        self.running = True

    def stop(self) -> None:
        self.running = False

    def _start_server(self) -> None:
        self.starts.append(shared.args.extra_flags)
        self.running = True

    def generate(self, prompt: str, state: dict) -> str:
        self.calls += 1
        return f"llama.cpp reply {self.calls}"

    def generate_with_streaming(self, prompt: str, state: dict):
        self.calls += 1
        yield f"llama.cpp reply {self.calls}"


sys.modules["modules.llama_cpp_server"].LlamaServer = LlamaServer


# -- the chat tab ---------------------------------------------------------------------------------------------
def load_character(character: str) -> dict:
    """A saved character's file as the host reads it (name, greeting, context, ...)."""
    folder = Path(shared.user_data_dir) / "characters"
    for path in (folder / f"{character}{suffix}" for suffix in (".yml", ".yaml", ".json")):
        if path.exists():
            return yaml.safe_load(path.read_bytes())
    raise ValueError(f"no character {character}")


def save_character(name, greeting, context, filename):
    """The Character tab's Save: the file is written anew with only the non-empty name, greeting and
    context, so any other key it had (our ``steering:`` among them) is gone."""
    fields = {key: value for key, value in (("name", name), ("greeting", greeting), ("context", context)) if value}
    text = yaml.dump(fields, sort_keys=False, width=float("inf"))
    (Path(shared.user_data_dir) / "characters" / f"{filename}.yaml").write_text(text, encoding="utf-8")


def chat_stop_strings(state) -> list[str]:
    """A chat reply ends where the next speaker's line would begin; instruct replies have no such line."""
    return [] if state["mode"] == "instruct" else [f"\n{state['name1']}:", f"\n{state['name2']}:"]


def chat_prompt(state, impersonate=False) -> str:
    """The prompt of the chat in ``state["history"]`` (a simplified template; the adapter depends only on
    its shape). The bot prefix modifiers add to the end of a prompt for the character's reply."""
    turns = state["history"]["internal"]
    if state["mode"] == "instruct":
        system = state.get("custom_system_message") or "You are a helpful assistant."
        messages = [{"role": "system", "content": system}]
        for said, answered in turns:
            messages += [{"role": "user", "content": said}] + ([{"role": "assistant", "content": answered}] if answered else [])
        prompt = shared.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        transcript = [state["context"].strip(), ""]
        for said, answered in turns:
            transcript += [f"{state['name1']}: {said}", f"{state['name2']}: {answered}".rstrip() if answered else f"{state['name2']}:"]
        prompt = "\n".join(transcript)
        if state["mode"] == "chat-instruct":
            told = state["chat-instruct_command"].replace("<|character|>", state["name2"]).replace("<|prompt|>", prompt)
            prompt = shared.tokenizer.apply_chat_template([{"role": "user", "content": told}], tokenize=False, add_generation_prompt=True)
            prompt += f"{state['name2']}:"
    return prompt + f"\n{state['name1']}:" if impersonate else prompt + apply_extensions("bot_prefix", "", state)


def generate_chat_reply(text, state, regenerate=False, loading_message=True):
    """One Send (or Regenerate) in the chat tab: the history after each step of the reply. The history and
    state modifiers run first, then (for a new message) the chat-input and input modifiers; the reply is
    generated as a chat (no state modifier again); the output modifier shapes what is shown."""
    history = apply_extensions("history", copy.deepcopy(state["history"]))
    state = apply_extensions("state", state)
    if state["mode"] != "chat":  # the instruction template brings its own BOS
        state["add_bos_token"] = False
    if regenerate:
        history["internal"][-1][1] = history["visible"][-1][1] = ""
    else:
        text, shown = apply_extensions("chat_input", text, html.escape(text), state)
        text = apply_extensions("input", text, state, is_chat=True)
        history["internal"].append([text, ""])
        history["visible"].append([shown, ""])
    reply = ""
    for reply in generate_reply(chat_prompt({**state, "history": history}), state, chat_stop_strings(state), is_chat=True):
        history["internal"][-1][1] = reply.lstrip(" ")
        yield history
    history["visible"][-1][1] = apply_extensions("output", html.escape(reply.lstrip(" ")), state, is_chat=True)
    yield history


def impersonate_wrapper(text, state):
    """Impersonate: the user's next line, generated as a chat but without the state modifier running."""
    prompt = chat_prompt(state, impersonate=True) + text
    for reply in generate_reply(prompt, state, chat_stop_strings(state), is_chat=True):
        yield (text + reply).lstrip(" ")


# -- what the tests do: a click in a tab, a request to the API -------------------------------------------------
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
    history = run_event(generate_chat_reply, text, state, regenerate=regenerate, session=session)[-1]
    return history["internal"][-1][1], history


def impersonate(text, state, session=None):
    """One Impersonate click in the chat tab: returns the textbox's text."""
    return run_event(impersonate_wrapper, text, state, session=session)[-1]


def notebook(prompt, state, session=None):
    """The Notebook/Default tab: generate_reply(is_chat=False)."""
    return run_event(generate_reply, prompt, state, is_chat=False, session=session)[-1]


GREEDY = {"do_sample": False, "seed": 0}  # the API's defaults sample; the tests compare replies token for token


def _api_call(entry_point: str, request: str, body: dict) -> dict:
    """A non-streaming API request without HTTP: the body validated by the request model, handed to the
    entry point in a worker thread (the route's asyncio.to_thread: no gradio request in its context)."""
    typing_module, completions = (importlib.import_module(f"modules.api.{name}") for name in ("typing", "completions"))
    validated = typing_module.to_dict(getattr(typing_module, request)(**body))
    box: dict = {}
    worker = threading.Thread(target=lambda: box.update(answer=getattr(completions, entry_point)(validated)))
    worker.start()
    worker.join()
    return box["answer"]["choices"][0]


def chat_completions(body: dict) -> str:
    """POST /v1/chat/completions (greedy, 12 tokens unless the body says): the reply's text."""
    return _api_call("chat_completions", "ChatCompletionRequest", {"max_tokens": 12, **GREEDY, **body})["message"]["content"]


def completions(prompt: str, max_tokens: int = 12) -> str:
    """POST /v1/completions, greedy: the reply's text."""
    return _api_call("completions", "CompletionRequest", {"prompt": prompt, "max_tokens": max_tokens, **GREEDY})["text"]
