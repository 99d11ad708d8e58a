"""The llama.cpp loader: presets become control-vector flags, the server restarts only when the set changes.

The server here is a stand-in of the webui's LlamaServer class (the real binary is tested in
test_control_vectors.py when STEERING_LLAMA_SERVER is set); the GGUF is the embedded default model,
so vectors are really built for it and really exported.
"""
from __future__ import annotations

import gc
import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

from extensions.steering.engine.control_vectors import read_control_vector, write_control_vector
from extensions.steering.engine.methods.imported import ImportedVector
from extensions.steering.engine.models import default_gguf, load_context
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.untrusted import FileRefused
from extensions.steering.engine.validation import PresetError
from extensions.steering.engine.vector import SteeringVector
from extensions.steering.runtime import SteeringRuntime
from extensions.steering.runtime.llama_cpp import LlamaCppBackend, ServerSteering, literal_flags, parameter_count
from extensions.steering.runtime.problems import Problems


class LlamaServer:  # the webui's llama.cpp loader's model class, by name
    """A stand-in; with a real llama-server process, generate() completes over its HTTP API."""

    def __init__(self, model_path: Path, process=None):
        self.model_path = str(model_path)
        self.prompts: list[str] = []
        self.process = process

    def generate(self, prompt, state):
        self.prompts.append(prompt)
        if self.process is None:
            return "reply"
        return self.process.post("/completion", {"prompt": prompt, "n_predict": 24, "temperature": 0, "cache_prompt": False})["content"]

    def generate_with_streaming(self, prompt, state):
        self.prompts.append(prompt)
        yield "re"
        yield "reply"


class Host:
    def __init__(self, flags: str = ""):
        self.flags = flags
        self.restarts: list[str] = []
        self.serving: str | None = None  # the browser session of the request generated now (gradio's request context)
        self.refusal: str | None = None  # set: the server does not start again, and says this
        self.refuses_steering: str | None = None  # set: it does not start with control vectors, and says this
        self.tries: list[str] = []  # every restart asked for, started or not

    def model_path(self, server):
        return Path(server.model_path)

    def user_flags(self) -> str:
        return self.flags

    def ik_llama(self) -> bool:
        return False

    def restart(self, server, extra_flags: str) -> None:
        self.tries.append(extra_flags)
        if self.refusal:
            raise RuntimeError(self.refusal)
        if self.refuses_steering and control_vectors(extra_flags):
            raise RuntimeError(self.refuses_steering)
        self.restarts.append(extra_flags)

    def session(self) -> str | None:
        return self.serving


def test_parameter_count_reads_tensor_shapes_through_the_bounded_reader(tmp_path):
    vector = SteeringVector({3: torch.ones(1, 16), 5: torch.ones(1, 16)})
    path = write_control_vector(tmp_path / "v.gguf", vector, 1.0, "llama")
    assert parameter_count(path) == 2 * 16
    path.write_bytes(path.read_bytes()[:40])  # cut short: one line naming the file, not an allocation
    with pytest.raises(FileRefused, match="v.gguf"):
        parameter_count(path)


def chat(**extra):
    return {"steering_chat": True, "mode": "chat", "character_menu": "Alice", "unique_id": "20260101-10-00-00", **extra}


def with_later(tmp_path) -> PresetStore:
    """The shipped presets and "later", of mode generated, which llama.cpp cannot apply."""
    store = PresetStore(tmp_path / "presets")
    store.save(Recipe("later", positive=["Love"], negative=["Hate"], method="mean", layers=[6], strength=0.3, mode="generated"))
    return store


@pytest.fixture
def setup(tmp_path):
    store = with_later(tmp_path)
    server, host = LlamaServer(default_gguf()), Host("--jinja --threads 2")
    rt = SteeringRuntime(store, tmp_path / "data", lambda: (server, server), lambda: "llama.cpp", llama_host=host)
    rt.notice()
    return rt, server, host


def test_the_backend_is_chosen_for_the_model_loaded_now(tmp_path):
    loaded = {"model": LlamaServer(tmp_path / "model.gguf")}
    rt = SteeringRuntime(PresetStore(tmp_path / "presets"), tmp_path / "data", lambda: (loaded["model"], None), lambda: "llama.cpp",
                         llama_host=Host())
    assert "Model: model.gguf (llama.cpp loader): steering by control vectors" in rt.status_line()
    assert "generate" in loaded["model"].__dict__  # noticed once: its generate calls now start with their control vectors
    loaded["model"] = None  # unloaded (and freed): a later model, or none, gets its backend afresh
    gc.collect()
    assert rt.status_line().startswith("No model is loaded")


def control_vectors(flags: str) -> list[tuple[str, float]]:
    words = shlex.split(flags)
    if "--control-vector-scaled" not in words:
        return []
    spec = words[words.index("--control-vector-scaled") + 1]
    return [(path, float(scale)) for path, scale in (item.rsplit(":", 1) for item in spec.split(","))]


@pytest.mark.slow
def test_the_set_of_a_reply_restarts_the_server_once_and_keeps_the_users_flags(setup):
    rt, server, host = setup
    assert server.generate("Hello", chat()) == "reply" and host.restarts == []  # nothing chosen: untouched
    rt.set_active([("love", 0.3)])
    assert list(server.generate_with_streaming("Hello", chat())) == ["re", "reply"]
    assert len(host.restarts) == 1
    flags = host.restarts[0]
    assert shlex.split(flags)[:3] == ["--jinja", "--threads", "2"]
    [(path, scale)] = control_vectors(flags)
    vector, info = read_control_vector(path)
    assert scale == 0.3 and info.model_hint == "llama" and vector.hidden_size == 576
    assert vector.layers == rt.store.vector("love", rt_ctx(rt, server)).layers
    server.generate("Again", chat())
    server.generate("And again", chat())
    assert len(host.restarts) == 1  # an unchanged set costs nothing
    assert "llama.cpp loader" in rt.status_line() and "restarted llama.cpp with steering: love ×0.3" in rt.status_line()
    rt.save_chat_view(chat(), False, {})  # the per-chat switch: the next reply is unsteered, after one restart
    server.generate("Off now", chat())
    server.generate("Still off", chat())
    assert len(host.restarts) == 2 and control_vectors(host.restarts[1]) == [] and shlex.split(host.restarts[1]) == ["--jinja", "--threads", "2"]
    assert "without steering" in rt.chat_view(chat()).text()


def rt_ctx(rt, server):
    return load_context(server.model_path)  # the GGUF in PyTorch, as the backend loads it to build vectors


@pytest.mark.slow
def test_what_llama_cpp_cannot_do_is_refused_and_the_rest_applies(setup):
    rt, server, host = setup
    rt.set_active([("later", 0.3), ("love", 0.2)])
    server.generate("Hello", chat())
    [(path, scale)] = control_vectors(host.restarts[-1])
    assert "love" in Path(path).name and scale == 0.2
    assert "later" in rt.last_error and "generated" in rt.last_error and "llama.cpp cannot" in rt.last_error


def multi_user_runtime(tmp_path):
    server, host = LlamaServer(default_gguf()), Host()
    rt = SteeringRuntime(with_later(tmp_path), tmp_path / "data", lambda: (server, server), lambda: "llama.cpp", multi_user=True,
                         llama_host=host)
    return rt, server, host


@pytest.mark.slow
def test_with_multi_user_each_session_is_told_what_steered_its_own_last_reply(tmp_path):
    rt, server, host = multi_user_runtime(tmp_path)
    rt.set_active([("love", 0.3)])
    rt.attach("Bob", [("later", 0.3)])  # a preset llama.cpp cannot apply: Bob's replies have a problem
    alice, bob = chat(steering_session="alice"), chat(steering_session="bob", character_menu="Bob")
    rt.notice()
    server.generate("Hello", alice)
    assert "Last reply steered by: love ×0.3" in rt.status_line("alice")
    assert "Last: restarted llama.cpp with steering: love ×0.3" in rt.status_line("alice")
    for other in ("bob", None):  # a restart names what steered someone's reply: told to that session only
        assert "Last reply" not in rt.status_line(other) and "restarted" not in rt.status_line(other)
    server.generate("Hello", bob)  # love again (no restart), and Bob's own problem with "later"
    assert len(host.restarts) == 1
    assert "Last reply steered by: love ×0.3" in rt.status_line("bob") and "Last problem" in rt.status_line("bob")
    assert "llama.cpp cannot" in rt.status_line("bob") and "restarted" not in rt.status_line("bob")
    assert "Last problem" not in rt.status_line("alice") and "Last problem" not in rt.chat_view(alice).text()
    assert "llama.cpp cannot" in rt.chat_view(bob).text()
    rt.save_chat_view(bob, False, {})  # Bob switches steering off for his chat: his reply restarts the server without it
    server.generate("Hello", bob)
    assert len(host.restarts) == 2 and control_vectors(host.restarts[1]) == []
    assert "Last reply" not in rt.status_line("bob") and "restarted llama.cpp without steering" in rt.status_line("bob")
    assert "Last reply steered by: love ×0.3" in rt.status_line("alice") and "without steering" not in rt.status_line("alice")
    assert "restarted llama.cpp with steering: love" in (rt.chat_view(alice).notice or "")
    assert "without steering" in (rt.chat_view(bob).notice or "")
    # Impersonate: the host runs no state_modifier, so its state names no session; the host's request context does
    host.serving = "carol"
    server.generate("Impersonate", {"mode": "chat", "character_menu": "Alice", "unique_id": "20260101-10-00-00"})
    host.serving = None
    assert len(host.restarts) == 3 and control_vectors(host.restarts[2])
    assert "Last reply steered by: love ×0.3" in rt.status_line("carol") and "with steering: love" in rt.status_line("carol")
    assert "without steering" in rt.status_line("bob")


@pytest.mark.slow
def test_a_server_that_will_not_start_with_steering_is_started_without_it_and_not_retried_per_reply(setup):
    rt, server, host = setup
    rt.set_active([("love", 0.3)])
    host.refuses_steering = "llama-server exited with 1: failed to load control vector"
    assert server.generate("Hello", chat()) == "reply"  # the reply still goes out: the server is up, unsteered
    assert len(host.tries) == 2 and control_vectors(host.tries[0]) and host.restarts == ["--jinja --threads 2"]
    said = rt.status_line()
    assert "Last problem: llama.cpp steering not applied: RuntimeError: llama-server exited with 1: failed to load control vector" in said
    assert "Restarted llama.cpp without steering: this reply is not steered" in said
    assert "Last reply steered by" not in said
    server.generate("Again", chat())  # the same start is not tried again at every reply (a large model's restart is long)
    assert len(host.tries) == 2 and "at an earlier reply" in rt.status_line() and "not steered" in rt.status_line()
    host.flags = "--jinja --threads 3"  # other flags: worth a new try
    server.generate("Again", chat())
    assert len(host.tries) == 4 and control_vectors(host.tries[2]) and "at an earlier reply" not in rt.status_line()
    host.refuses_steering = None
    rt.set_active([("love", 0.5)])  # other presets: tried again, and now it starts
    server.generate("Steered", chat())
    assert control_vectors(host.restarts[-1]) and "Last problem" not in rt.status_line()
    assert "Last reply steered by: love ×0.5" in rt.status_line()


@pytest.mark.slow
def test_a_server_left_stopped_by_a_failed_start_is_started_at_the_next_reply_even_unsteered(setup):
    rt, server, host = setup
    rt.set_active([("love", 0.3)])
    host.refusal = "llama-server exited with 1: invalid argument: --no-such-flag"  # the user's flags: no start at all
    server.generate("Hello", chat())
    assert len(host.tries) == 2 and host.restarts == []
    assert "nor did it start without steering" in rt.status_line() and "llama-server is not running" in rt.status_line()
    host.refusal = None
    rt.set_active([])  # unsteered, as the server was loaded: yet it is stopped now, so it must start again
    server.generate("Hello", chat())
    assert host.restarts == ["--jinja --threads 2"] and "restarted llama.cpp without steering" in rt.status_line()


@pytest.mark.slow
def test_a_reply_steered_as_chosen_clears_the_problem_said_before(setup, tmp_path):
    rt, server, host = setup
    rt.set_active([("love", 0.3)])
    host.refusal = "llama-server exited with 1: error while handling argument"
    server.generate("Hello", chat())
    assert host.restarts == [] and "Last problem: llama.cpp steering not applied: RuntimeError: llama-server exited" in rt.status_line()
    host.refusal = None
    server.generate("Again", chat())  # restarted with the chosen set: the failed restart is past
    assert len(host.restarts) == 1 and "Last problem" not in rt.status_line() and rt.last_error is None
    rt.set_active([("later", 0.3), ("love", 0.3)])
    for prompt in ("Hello", "Again"):  # a preset it cannot apply: said at every reply it is skipped
        server.generate(prompt, chat())
        assert "Last problem: preset 'later' uses mode generated" in rt.status_line()
    rt.set_active([])
    server.generate("Unsteered", chat())  # nothing chosen is nothing steered as chosen: the problem stays said
    assert len(host.restarts) == 2 and "Last problem: preset 'later'" in rt.status_line()
    rt.set_active([("love", 0.3)])
    server.generate("Steered", chat())
    assert len(host.restarts) == 3 and "Last problem" not in rt.status_line() and "Last problem" not in rt.chat_view(chat()).text()
    rt.set_active([("later", 0.3), ("love", 0.3)])
    server.generate("Hello", chat())
    rt.set_active([("love", 0.3)])
    server.generate("Same set", chat())  # love alone runs on the server already: no restart, and steered as chosen
    assert len(host.restarts) == 3 and rt.last_error is None and "Last reply steered by: love ×0.3" in rt.status_line()
    (tmp_path / "data" / "chats.json").write_bytes(b"\xff not UTF-8")
    server.generate("Hello", chat())  # steered as chosen, but its own plan met an unreadable file: said, not cleared at once
    assert "Last problem: unreadable, ignored: " in rt.status_line() and "chats.json" in rt.status_line()


@pytest.mark.slow
def test_with_multi_user_a_reply_steered_as_chosen_clears_its_own_sessions_problem_only(tmp_path):
    rt, server, host = multi_user_runtime(tmp_path)
    rt.set_active([("love", 0.3)])
    for character in ("Alice", "Bob"):
        rt.attach(character, [("later", 0.3)])
    alice, bob = chat(steering_session="alice"), chat(steering_session="bob", character_menu="Bob")
    rt.notice()
    for state in (alice, bob):
        server.generate("Hello", state)
    for session in ("alice", "bob"):
        assert "Last problem: preset 'later' uses mode generated" in rt.status_line(session)
    rt.attach("Bob", [])
    server.generate("Hello", bob)
    assert "Last problem" not in rt.status_line("bob") and "Last problem: preset 'later'" in rt.status_line("alice")
    assert len(host.restarts) == 1


@pytest.mark.slow
def test_impersonate_and_the_notebook_get_the_right_sets(setup):
    rt, server, host = setup
    rt.attach("Alice", [("love", 0.3)])
    server.generate("Notebook text", {"steering_chat": False, "mode": "chat", "character_menu": "Alice"})
    assert host.restarts == []  # the notebook: a character never steers it
    server.generate("Impersonate", {"mode": "chat", "character_menu": "Alice", "unique_id": "20260101-10-00-00"})
    assert len(host.restarts) == 1 and control_vectors(host.restarts[0])  # no state_modifier ran: the chat's own request


@pytest.mark.parametrize("given,words", [
    ("", []),
    ("--jinja --rpc 1222,1222", ["--jinja", "--rpc", "1222,1222"]),
    ('"--jinja --threads 4"', ["--jinja", "--threads", "4"]),
    ("ctx-size=2048,jinja,ngl=10,rpc=1222", ["--ctx-size", "2048", "--jinja", "-ngl", "10", "--rpc", "1222"]),
])
def test_the_users_extra_flags_in_either_form(given, words):
    assert literal_flags(given) == words
    steering = ServerSteering((("/data/a.gguf", 0.5), ("/data/b.gguf", -1.0)))
    assert shlex.split(steering.extra_flags(given)) == words + ["--control-vector-scaled", "/data/a.gguf:0.5,/data/b.gguf:-1"]
    assert shlex.split(ServerSteering().extra_flags(given)) == words


@pytest.mark.parametrize("users", [
    "--control-vector old.gguf --jinja",
    "--control_vector old.gguf --jinja",  # llama.cpp reads '_' as '-' in a word starting with --
    "--control-vector-scaled old.gguf:0.3,older.gguf:1 --jinja",
    "--control_vector_scaled old.gguf:0.3 --jinja",
    "--control-vector_scaled old.gguf:0.3 --control_vector_layer_range 2 9 --jinja",
    "control_vector_scaled=old.gguf:0.3,jinja",  # the legacy form
    "control-vector=old.gguf,jinja",
    "'--jinja --control_vector old.gguf'",
])
def test_a_users_own_control_vector_is_replaced_not_doubled_in_every_spelling(users):
    mine = ServerSteering((("/data/a.gguf", 0.5),))
    assert shlex.split(mine.extra_flags(users)) == ["--jinja", "--control-vector-scaled", "/data/a.gguf:0.5"]
    assert "old.gguf" in ServerSteering().extra_flags(users)  # no steering: the user's own flags as they are


def test_ik_llama_cpp_gets_its_own_syntax_two_words_per_vector():
    mine = ServerSteering((("/data/a.gguf", 0.5), ("/data/b.gguf", -1.0)))
    assert shlex.split(mine.extra_flags("--jinja", ik=True)) == [
        "--jinja", "--control-vector-scaled", "/data/a.gguf", "0.5", "--control-vector-scaled", "/data/b.gguf", "-1"]
    # ik's --control-vector-scaled takes two words: the user's own goes whole, and nothing after it is eaten
    users = "--control_vector_scaled old.gguf 0.3 --threads 2 --control-vector older.gguf --jinja"
    assert shlex.split(mine.extra_flags(users, ik=True))[:3] == ["--threads", "2", "--jinja"]
    assert shlex.split(mine.extra_flags("--control-vector-scaled old.gguf:0.3 --threads 2"))[:2] == ["--threads", "2"]
    # mainline's one-word form under --ik (ik would refuse it): removed without eating the user's next flag
    for users in ("--control-vector-scaled old.gguf:0.3 --jinja", "--jinja --control_vector_scaled old.gguf:0.3"):
        assert shlex.split(mine.extra_flags(users, ik=True))[:1] == ["--jinja"]
    assert shlex.split(mine.extra_flags("--control-vector-layer-range 2 9 --jinja", ik=True))[:1] == ["--jinja"]


@pytest.mark.slow
def test_an_imported_preset_made_for_another_model_is_refused_from_its_recipe_before_the_gguf_loads(tmp_path):
    store = PresetStore(tmp_path / "presets")
    wide = SteeringVector({4: torch.ones(64)})
    store.save_imported(Recipe("wide", method="imported", layers=[4], strength=1.0, mode="all",
                               options=ImportedVector("wide.safetensors", 64, 30, "llama", "wide.gguf")), wide)
    deep = SteeringVector({40: torch.ones(576)})
    store.save_imported(Recipe("deep", method="imported", layers=[40], strength=1.0, mode="all",
                               options=ImportedVector("deep.safetensors", 576, 0, "llama", "deep.gguf")), deep)
    loads = []
    server, host, problems = LlamaServer(default_gguf()), Host(), Problems()
    backend = LlamaCppBackend(store, tmp_path / "data", host, problems, lambda state: [], load_context=loads.append)
    for name, problem in (("wide", "hidden size is 64, the model's 576"), ("deep", "steers layer 40, the model has 30 layers")):
        with pytest.raises(PresetError, match=f"{name} was imported for another model .* does not fit SmolLM2.*{problem}"):
            backend.vector_file(default_gguf(), name, [])
    assert backend.steering_for(server, [("wide", 1.0), ("deep", 1.0)]) == ServerSteering()
    assert loads == []  # nothing was loaded into PyTorch
    assert "deep was imported for another model" in problems.last  # each said (the last one kept for the panel)


# -- with a real llama-server (STEERING_LLAMA_SERVER; ik_llama.cpp's: STEERING_IK_LLAMA_SERVER), restarted by the
# backend as the webui's loader would (with --ik, the webui starts ik_llama.cpp's binary with the same extra flags)
from llama_server import IK_LLAMA_SERVER, LLAMA_SERVER, needs_ik_server, needs_server  # noqa: E402
from llama_server import LlamaServer as ServerProcess  # noqa: E402


class ProcessHost:
    """Starts llama-server processes the way the webui's loader does: its own flags, then the extra flags."""

    def __init__(self, log: Path, flags: str = "--threads 2", ik: bool = False):
        self.log, self.flags, self.ik, self.starts = log, flags, ik, []
        self.binary = IK_LLAMA_SERVER if ik else LLAMA_SERVER

    def model_path(self, server):
        return default_gguf()

    def user_flags(self) -> str:
        return self.flags

    def ik_llama(self) -> bool:
        return self.ik

    def session(self) -> str | None:
        return None  # one user

    def start(self, extra_flags: str) -> ServerProcess:
        return ServerProcess(shlex.split(extra_flags), self.log, binary=self.binary)

    def restart(self, server, extra_flags: str) -> None:
        server.process.close()
        self.starts.append(extra_flags)
        server.process = self.start(extra_flags)


@contextmanager
def real_server_runtime(tmp_path, ik: bool = False) -> Iterator[tuple[SteeringRuntime, LlamaServer, ProcessHost]]:
    """A runtime steering a real llama-server, started with the user's flags "--threads 2" (closed after)."""
    host = ProcessHost(tmp_path / "server.log", "--threads 2", ik)
    server = LlamaServer(default_gguf(), host.start(host.flags))
    try:
        rt = SteeringRuntime(PresetStore(tmp_path / "presets"), tmp_path / "data", lambda: (server, server), lambda: "llama.cpp",
                             llama_host=host)
        rt.notice()
        yield rt, server, host
    finally:
        server.process.close()


@pytest.mark.slow
@pytest.mark.parametrize("ik", [pytest.param(False, marks=needs_server, id="llama.cpp"),
                                pytest.param(True, marks=needs_ik_server, id="ik_llama.cpp")])
def test_a_real_llama_server_is_restarted_with_the_presets_and_steered(tmp_path, ik):
    from extensions.steering.engine.metrics import sentiment

    # the user's own vector, in a spelling llama.cpp accepts, is replaced by the chosen set
    with real_server_runtime(tmp_path, ik) as (rt, server, host):
        state = {"steering_chat": False}
        prompt = "I hate you because"
        plain = server.generate(prompt, state)
        assert host.starts == []
        rt.set_active([("love", 0.5)])
        host.flags = "--threads 2 --control_vector_scaled " + ("missing.gguf 1" if ik else "missing.gguf:1")
        steered = server.generate(prompt, state)
        assert len(host.starts) == 1 and "missing" not in host.starts[0] and rt.last_error is None
        assert shlex.split(host.starts[0]).count("--control-vector-scaled") == 1
        assert steered != plain and sentiment(steered) > sentiment(plain), (plain, steered)
        assert server.generate(prompt, state) == steered and len(host.starts) == 1  # no restart, same reply
        host.flags = "--threads 2"
        rt.set_active([])
        assert server.generate(prompt, state) == plain and len(host.starts) == 2  # unsteered again: token for token
        if ik:  # mainline's one FILE:SCALE word is not ik_llama.cpp's syntax: the server does not start with it
            path = next((tmp_path / "data").rglob("love-*.gguf"))
            with pytest.raises(RuntimeError, match="exited"):
                host.start(f"--control-vector-scaled {path}:0.5")


@pytest.mark.slow
@needs_server
def test_a_real_llama_servers_failed_restart_is_said_until_a_reply_is_steered_as_chosen(tmp_path):
    with real_server_runtime(tmp_path) as (rt, server, host):
        state = {"steering_chat": False}
        rt.set_active([("love", 0.5)])
        host.flags = "--threads 2 --no-such-flag"  # the user's own flags: the server does not start again with them
        with pytest.raises(OSError):  # stopped and not started: this reply fails, as the webui's would
            server.generate("I hate you because", state)
        assert "Last problem: llama.cpp steering not applied: RuntimeError: llama-server exited" in rt.status_line()
        assert "invalid argument: --no-such-flag" in rt.last_error
        assert "nor did it start without steering" in rt.last_error and "llama-server is not running" in rt.last_error
        assert len(host.starts) == 2 and "--control-vector-scaled" not in host.starts[1]  # tried without ours too
        host.flags = "--threads 2"
        assert server.generate("I hate you because", state)
        assert len(host.starts) == 3 and "--control-vector-scaled" in host.starts[2]
        assert "Last problem" not in rt.status_line() and "Last reply steered by: love ×0.5" in rt.status_line()


@pytest.mark.slow
@needs_server
def test_a_damaged_cached_control_vector_is_built_again_not_handed_to_a_server_that_would_ignore_it(tmp_path):
    """llama-server starts without a control-vector file it cannot read, saying so only in its own log."""
    with real_server_runtime(tmp_path) as (rt, server, host):
        state = {"steering_chat": False}
        prompt = "I hate you because"
        plain = server.generate(prompt, state)
        rt.set_active([("love", 0.5)])
        steered = server.generate(prompt, state)
        assert steered != plain and len(host.starts) == 1
        rt.set_active([])
        assert server.generate(prompt, state) == plain
        cached = next((tmp_path / "data").rglob("love-*.gguf"))
        cached.write_bytes(cached.read_bytes()[:200])  # damaged on disk
        rt.set_active([("love", 0.5)])
        assert server.generate(prompt, state) == steered and len(host.starts) == 3
        assert "Last reply steered by: love ×0.5" in rt.status_line() and rt.last_error is None


@pytest.mark.slow
@needs_server
def test_a_real_llama_server_that_will_not_start_with_our_flags_serves_the_reply_unsteered_and_says_so(tmp_path):
    with real_server_runtime(tmp_path) as (rt, server, host):
        state = {"steering_chat": False}
        prompt = "I hate you because"
        plain = server.generate(prompt, state)
        host.ik = True  # ik_llama.cpp's spelling of the flag, which this mainline server does not start with
        rt.set_active([("love", 0.5)])
        assert server.generate(prompt, state) == plain  # started again without it: the reply goes out, unsteered
        assert len(host.starts) == 2 and "--control-vector-scaled" in host.starts[0] and "--control-vector-scaled" not in host.starts[1]
        said = rt.status_line()
        assert "llama.cpp steering not applied: RuntimeError" in said and "Restarted llama.cpp without steering: this reply is not steered" in said
        assert "Last reply steered by" not in said
        assert server.generate(prompt, state) == plain and len(host.starts) == 2  # not tried again at every reply
        host.ik = False
        rt.set_active([("love", 0.5)])
        assert server.generate(prompt, state) != plain and len(host.starts) == 3 and "Last problem" not in rt.status_line()
