"""Steering per request through the webui's OpenAI-compatible API (extensions/steering/api.py), in the
fake host's API (tests/webui_api: a model of the webui's request models, error handler and routes), over
HTTP with FastAPI's test client, on the embedded SmolLM2-135M-Instruct, greedy."""
from __future__ import annotations

import json
import threading

import pytest
import webui_host as host
import yaml
from fastapi.testclient import TestClient
from llama_server import needs_server
from webui_host import shared, untouched

from extensions.steering.engine.presets import PresetStore, Recipe
from extensions.steering.engine.recipe import ImportedVector
from extensions.steering.runtime.requests import MAX_REQUEST_PRESETS, RequestReport, read_steering

LOVE = Recipe("test-love", positive=["Love, joy and kindness"], negative=["Hate, anger and cruelty"], method="mean", mode="all", layers=[6], strength=6.0)
DEEP = Recipe("test-deep", positive=["Love"], negative=["Hate"], method="mean", mode="all", layers=[25], strength=6.0)
FRONT = Recipe("test-front", positive=["Love"], negative=["Hate"], method="actadd", layers=[6], strength=4.0)
MESSAGES = [{"role": "user", "content": "Tell me about your day."}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def api(tmp_path, default_model):
    """A test client of the fake webui's API with the steering extension enabled (``--api``)."""
    model, tokenizer = default_model
    host.load_model(tmp_path / "user_data", model, tokenizer, (LOVE, DEEP, FRONT))
    with host.running(api=True):
        import modules.api.script as script

        yield TestClient(script.app)
    assert untouched(model)


def runtime():
    return host.state["steering"][2].RUNTIME


def chat(client, max_tokens=8, **fields):
    response = client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0, **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["choices"][0]["message"]["content"], body["steering"]


def complete(client, **fields):
    response = client.post("/v1/completions", json={"prompt": "Once upon a time, the dragon", "max_tokens": 8, "temperature": 0, **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["choices"][0]["text"], body["steering"]


def events(response) -> list[dict]:
    lines = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# -- the field ------------------------------------------------------------------------------------------
def test_request_models_carry_the_fields_and_absent_differs_from_null(api):
    from modules.api import typing

    def steering(**fields):
        return typing.ChatCompletionRequest(messages=MESSAGES, **fields).steering

    assert steering() is None  # absent: the character's and all-chats presets apply
    assert steering(steering=None) == steering(steering="none") == steering(steering=" None ") == steering(steering={}) == []
    assert steering(steering="test-love:0.5, test-deep") == [["test-love", 0.5], ["test-deep", 6.0]]  # a missing strength is the preset's own
    assert steering(steering={"test-love": 2, "test-deep": None}) == [["test-love", 2.0], ["test-deep", 6.0]]
    assert typing.CompletionRequest(prompt="x", monitor="test-love, test-deep").monitor == ["test-love", "test-deep"]
    assert typing.ChatCompletionRequest.__name__ == "ChatCompletionRequest"  # the API schema keeps the webui's names
    assert {"steering", "monitor"} <= set(typing.ChatCompletionRequest.model_fields)


def test_a_request_steers_its_own_reply_and_says_what_was_applied(api):
    plain, report = chat(api)
    assert report["chosen_by"] == "settings" and report["presets"] == [] and "no preset is active" in report["reason"]
    steered, report = chat(api, steering={"test-love": 6})
    assert steered != plain
    assert report["chosen_by"] == "request" and report["presets"] == [
        {"preset": "test-love", "strength": 6.0, "layers": [6], "source": "request", "applied": True}]
    assert [r["name"] for r in report["monitor"]] == ["test-love"]  # an applied preset is read too
    runtime().set_active([("test-love", 6.0)])  # the same preset for all chats steers the same reply
    assert chat(api)[0] == steered
    text, report = complete(api, steering="test-love:6")
    assert text != host.without_extension(complete, api)[0] and report["presets"][0]["applied"]


def test_the_request_wins_over_the_character_and_all_chats(api):
    unsteered = host.without_extension(chat, api, mode="chat", character="Assistant")[0]
    runtime().set_active([("test-deep", 6.0)])
    runtime().attach("Assistant", [("test-love", 6.0)])
    both, report = chat(api, mode="chat", character="Assistant")
    assert both != unsteered
    assert {(p["preset"], p["source"]) for p in report["presets"]} == {("test-love", "character"), ("test-deep", "all chats")}
    off, report = chat(api, mode="chat", character="Assistant", steering=None)
    assert off == unsteered and report["reason"] == "the request asked for no steering"
    assert chat(api, mode="chat", character="Assistant", steering="none")[0] == unsteered
    only_deep, report = chat(api, mode="chat", character="Assistant", steering={"test-deep": 6})
    runtime().attach("Assistant", [])
    assert only_deep == chat(api, mode="chat", character="Assistant")[0]  # = all chats' test-deep alone
    assert [p["preset"] for p in report["presets"]] == ["test-deep"]


def test_a_stream_says_what_was_applied_in_its_finishing_chunk(api):
    text, _ = chat(api, steering="test-love:6")
    for path, body in (("/v1/chat/completions", {"messages": MESSAGES}), ("/v1/completions", {"prompt": "Once upon a time, the dragon"})):
        response = api.post(path, json={**body, "max_tokens": 8, "temperature": 0, "stream": True, "steering": "test-love:6"})
        assert response.status_code == 200
        chunks = events(response)
        assert [("steering" in chunk) for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["steering"]["presets"][0] == {"preset": "test-love", "strength": 6.0, "layers": [6], "source": "request", "applied": True}
    streamed = "".join(chunk["choices"][0].get("delta", {}).get("content", "") for chunk in events(
        api.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 8, "temperature": 0, "stream": True, "steering": "test-love:6"})))
    assert streamed == text


def test_a_preset_that_cannot_steer_this_prompt_is_reported_with_the_reason(api):
    _, report = complete(api, prompt="Hi", steering="test-front, test-love:6")
    front, love = report["presets"]
    assert front["applied"] is False and "at least" in front["reason"] and love["applied"] is True


# -- errors ---------------------------------------------------------------------------------------------
FAULTS = [
    ({"steering": 5}, "got a number"),
    ({"steering": True}, "got a boolean"),
    ({"steering": ["test-love"]}, "got an array"),
    ({"steering": {"test-love": "x"}}, "must be a number"),
    ({"steering": {"test-love": [1]}}, "must be a number"),
    ({"steering": {"test-love": float("nan")}}, "finite"),
    ({"steering": {"test-love": float("inf")}}, "finite"),
    ({"steering": "test-love:1e300"}, "out of range"),
    ({"steering": {"test-love": 10 ** 400}}, "must be a number"),
    ({"steering": "nope"}, "unknown preset 'nope'"),
    ({"steering": {"test-love": 1, "nope": 1}}, "unknown preset 'nope'"),
    ({"steering": ""}, "empty string"),
    ({"steering": "  "}, "empty string"),
    ({"steering": "test-love,,test-deep"}, "invalid preset name ''"),
    ({"steering": "../../etc/passwd"}, "preset name"),
    ({"steering": "x" * 5000}, "characters long"),
    ({"steering": ", ".join(f"p{i}" for i in range(10_000))}, "characters long"),
    ({"steering": ",".join("p" for i in range(1000))}, f"names 1000 presets; a request may name at most {MAX_REQUEST_PRESETS}"),
    ({"steering": {f"p{i}": 1 for i in range(10_000)}}, f"at most {MAX_REQUEST_PRESETS}"),
    ({"monitor": "nope"}, "unknown preset 'nope' in monitor"),
    ({"monitor": 3}, "monitor must be"),
    ({"monitor": [f"p{i}" for i in range(10_000)]}, f"at most {MAX_REQUEST_PRESETS}"),
]


@pytest.mark.parametrize("fields,says", FAULTS, ids=[f"{next(iter(f))}-{i}" for i, (f, _) in enumerate(FAULTS)])
def test_a_bad_value_is_a_400_naming_the_problem_and_the_server_keeps_serving(api, fields, says):
    body = json.dumps({"messages": MESSAGES, "max_tokens": 2, "temperature": 0, **fields}, allow_nan=True)
    for stream in (False, True):
        sent = body[:-1] + f', "stream": {json.dumps(stream)}}}'
        response = api.post("/v1/chat/completions", content=sent, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert says in error["message"] and error["param"] == next(iter(fields)) and error["type"] == "invalid_request_error"
    assert runtime().take_report("nothing")["chosen_by"] is None and "generate" not in shared.model.__dict__  # nothing armed
    assert chat(api, max_tokens=2)[0]  # still serving


def test_a_preset_for_another_hidden_size_is_refused_up_front(api):
    store = runtime().store
    (store.folder / "vectors").mkdir(parents=True, exist_ok=True)
    store.folder.joinpath("other.yaml").write_text(yaml.safe_dump({
        "method": "imported", "layers": [3], "strength": 1.0,
        "imported": ImportedVector("other.safetensors", hidden_size=2048, layer_count=24).to_dict()}), encoding="utf-8")
    response = api.post("/v1/chat/completions", json={"messages": MESSAGES, "steering": "other"})
    assert response.status_code == 400 and "hidden size 2048" in response.json()["error"]["message"]


def test_the_llama_cpp_loader_takes_mode_all_presets_and_refuses_the_others_with_a_400(api):
    shared.model, shared.args.loader = host.LlamaServer("/models/m.gguf"), "llama.cpp"
    response = api.post("/v1/chat/completions", json={"messages": MESSAGES, "steering": "test-front"})
    assert response.status_code == 400 and "llama.cpp loader cannot do" in response.json()["error"]["message"]
    response = api.post("/v1/chat/completions", json={"messages": MESSAGES, "monitor": ["test-love"]})
    assert response.status_code == 400 and "Transformers loader" in response.json()["error"]["message"]
    response = api.post("/v1/chat/completions", json={"messages": MESSAGES, "steering": None})
    assert response.status_code == 200 and response.json()["steering"]["reason"] == "the request asked for no steering"


# -- many at once ---------------------------------------------------------------------------------------
def test_eight_concurrent_requests_each_get_exactly_their_own_steering(api):
    choices = [None, "test-love:6", "none", "test-deep:6", {"test-love": 3}, None, "test-love:6, test-deep:6", {}]
    bodies = [{"messages": MESSAGES, "max_tokens": 6, "temperature": 0, **({} if c is None else {"steering": c})} for c in choices]
    runtime().set_active([("test-love", -4.0)])  # what a request without the field gets
    alone = [api.post("/v1/chat/completions", json=body).json() for body in bodies]
    results: list = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def send(index):
        start.wait()
        results[index] = api.post("/v1/chat/completions", json=bodies[index]).json()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    texts = [r["choices"][0]["message"]["content"] for r in results]
    assert texts == [r["choices"][0]["message"]["content"] for r in alone]
    assert [r["steering"] for r in results] == [r["steering"] for r in alone]
    assert len(set(texts)) >= 4  # the choices really differ


# -- what a client can name -----------------------------------------------------------------------------
def test_the_presets_route_lists_what_a_request_may_name(api):
    listed = {p["name"]: p for p in api.get("/v1/steering/presets").json()["data"]}
    assert {"test-love", "test-deep", "test-front"} <= set(listed) and listed["love"]["shipped"]
    assert listed["test-love"] == {
        "name": "test-love", "method": "mean", "mode": "all", "calibrated": False, "strength": 6.0, "layers": [6],
        "model": "any: built for the loaded model at first use", "shipped": False, "description": "", "usable": True, "problem": None}
    shared.model, shared.args.loader = host.LlamaServer("/models/m.gguf"), "llama.cpp"
    front = {p["name"]: p for p in api.get("/v1/steering/presets").json()["data"]}["test-front"]
    assert front["usable"] is False and "llama.cpp loader cannot do" in front["problem"]


def test_a_report_speaks_in_doses_for_a_calibrated_preset():
    report = RequestReport("request")
    report.applied("kind", 1.5, True, [12], "request")
    report.skipped("cold", 0.3, False, None, "request", "why")
    assert report.to_json()["presets"] == [
        {"preset": "kind", "dose": 1.5, "layers": [12], "source": "request", "applied": True},
        {"preset": "cold", "strength": 0.3, "layers": None, "source": "request", "applied": False, "reason": "why"}]
    assert read_steering("kind:1.5", lambda name: 1.0) == [("kind", 1.5)]


# -- readings (engine/monitor.py) -----------------------------------------------------------------------
def test_a_request_reads_its_reply_along_the_presets_it_applies_and_names(api):
    _, report = chat(api, monitor=["test-deep"])  # unsteered, read along test-deep
    assert [(r["name"], r["layer"]) for r in report["monitor"]] == [("test-deep", 25)]
    assert isinstance(report["monitor"][0]["z"], float) and report["monitor"][0]["tokens"] > 0
    _, report = chat(api, steering="test-love:6", monitor="test-deep")
    assert [r["name"] for r in report["monitor"]] == ["test-love", "test-deep"]  # applied first, then named
    chunks = events(api.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 8, "temperature": 0, "stream": True,
                                                           "steering": "test-love:6", "monitor": ["test-deep"]}))
    assert chunks[-1]["steering"]["monitor"] == report["monitor"]  # the stream's finishing chunk has them too
    assert "monitor" not in chat(api)[1]  # nothing named, nothing applied: nothing read


# -- llama.cpp: a real llama-server (STEERING_LLAMA_SERVER), restarted per request as the webui's loader would ----
@needs_server
def test_a_request_on_a_real_llama_server_gets_its_own_set_and_the_restart_cost_is_reported(tmp_path):
    import shlex

    from llama_server import LlamaServer as ServerProcess
    from test_llama_cpp import LlamaServer, ProcessHost

    from extensions.steering.engine.models import default_gguf
    from extensions.steering.runtime import SteeringRuntime
    from extensions.steering.runtime.requests import check_request, mark_request

    host = ProcessHost(tmp_path / "server.log")
    server = LlamaServer(default_gguf(), ServerProcess(shlex.split(host.flags), host.log))
    try:
        rt = SteeringRuntime(PresetStore(tmp_path / "presets"), tmp_path / "data", lambda: (server, server), lambda: "llama.cpp", llama_host=host)
        rt.notice()
        rt.set_active([("love", 0.5)])  # what a request without the field gets

        def send(key, **fields):
            state = {"steering_chat": False, **check_request(rt, fields)}
            mark_request(state, key)
            return server.generate("I hate you because", state), rt.take_report(key)

        plain, report = send("none", steering=None)
        assert host.starts == [] and report["reason"] == "the request asked for no steering"  # it runs without vectors already
        steered, report = send("own", steering="love:0.5")
        assert len(host.starts) == 1 and steered != plain
        assert report["presets"][0]["applied"] and report["llama_cpp_restart_seconds"] > 0
        again, report = send("settings")  # all chats: the same set, no restart
        assert again == steered and len(host.starts) == 1 and "llama_cpp_restart_seconds" not in report
        assert report["chosen_by"] == "settings" and report["presets"][0]["source"] == "all chats"
        assert send("off", steering="none")[0] == plain and len(host.starts) == 2
    finally:
        server.process.close()
