"""SteeringRuntime without a webui: what applies to a request, where choices are kept, the model
checks and the life of one generation's steering (tiny random models; the default tokenizer)."""
from __future__ import annotations

import json
import threading
import time

import pytest
import torch
import yaml
from torch import nn

from extensions.steering.engine.apply import Steer, SteeringHandle, on_thread
from extensions.steering.engine.presets import PresetError, PresetStore, Recipe
from extensions.steering.runtime import (
    MAX_SESSIONS,
    ChatChoice,
    ReentrantLock,
    SteeringRuntime,
    SteeringUnavailable,
    character_of,
    chat_key,
    parse_items,
    state_key,
)
from extensions.steering.runtime.problems import Problems


def tiny_llama(hidden=64, layers=4, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer(default_model):
    return default_model[1]


@pytest.fixture
def loaded(tmp_path, tokenizer):
    return {"model": tiny_llama(), "tokenizer": tokenizer, "loader": "Transformers"}


@pytest.fixture
def rt(tmp_path, loaded):
    store = PresetStore(tmp_path / "presets", shipped=None)
    store.save(Recipe("up", positive=["Love"], negative=["Hate"], method="mean", mode="all", layers=["50%"], strength=2.0))
    store.save(Recipe("front", positive=["Love and joy"], negative=["Hate"], method="actadd", mode="actadd", layers=[1], strength=4.0))
    (tmp_path / "characters").mkdir()
    return SteeringRuntime(store, tmp_path / "data", lambda: (loaded["model"], loaded["tokenizer"]),
                           lambda: loaded["loader"], characters_dir=tmp_path / "characters")


def chat(**extra):
    return {"steering_chat": True, "mode": "chat", "character_menu": "Alice", "unique_id": "20260101-10-00-00", **extra}


def hooks_on(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


# -- reading requests ------------------------------------------------------------------------------------------
def test_parse_items_reads_every_written_form(rt):
    default = lambda name: 9.0
    assert parse_items({"a": 1, "b": None}, default) == [("a", 1.0), ("b", 9.0)]
    assert parse_items(["a", ["b", 2], {"name": "c", "strength": 3}], default) == [("a", 9.0), ("b", 2.0), ("c", 3.0)]
    assert parse_items("a", default) == [("a", 9.0)]
    assert parse_items(None) == []
    assert parse_items([["a", 1], ["a", 2]]) == [("a", 2.0)]
    for bad in (5, [["a", "x"]], [["a", float("inf")]], ["../etc"], [{"strength": 1}]):
        with pytest.raises(PresetError):
            parse_items(bad)


def test_keys_of_chats_sessions_and_requests():
    assert chat_key("chat", "Alice", "id1") == "chat/Alice/id1"
    assert chat_key("chat-instruct", "Alice", "id1") == "chat/Alice/id1"
    assert chat_key("instruct", "Alice", "id1") == "instruct/id1"  # instruct chats have no character folder
    assert chat_key("chat", "Alice", None) is None
    assert state_key(chat()) == "chat/Alice/20260101-10-00-00"
    assert state_key(chat(steering_session="abc")) == "session:abc"
    assert state_key({**chat(), "steering_chat": False}) is None  # notebook: no chat


def test_the_character_of_a_request():
    assert character_of(chat()) == "Alice"
    assert character_of(chat(mode="instruct")) is None
    assert character_of({**chat(), "steering_chat": False}) is None  # notebook and completions
    api = {"steering_chat": True, "mode": "instruct", "character": "Bob"}
    assert character_of(api) == "Bob"  # named in an API request: any mode
    assert character_of({**api, "character": None}) is None
    assert character_of({**api, "character": None, "mode": "chat"}, "Assistant") == "Assistant"  # the API's default


# -- files -------------------------------------------------------------------------------------------------------
def test_global_active_presets_persist(rt, tmp_path):
    rt.set_active([("up", 1.5), ("front", 3)])
    again = SteeringRuntime(rt.store, tmp_path / "data", lambda: None)
    assert again.active == [("up", 1.5), ("front", 3.0)]
    with pytest.raises(PresetError):
        rt.set_active([("../x", 1)])
    with pytest.raises(PresetError):
        rt.set_active([("up", float("nan"))])
    assert rt.active == [("up", 1.5), ("front", 3.0)]


def test_a_damaged_file_is_reported_and_ignored(tmp_path, rt):
    (tmp_path / "data" / "active.json").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "active.json").write_text("{not json")
    again = SteeringRuntime(rt.store, tmp_path / "data", lambda: None)
    assert again.active == [] and "unreadable" in again.last_error


def test_chat_choices_on_disk_and_in_memory(rt, tmp_path):
    chats = tmp_path / "data" / "chats.json"
    rt.set_chat_choice("chat/Alice/1", ChatChoice(False, {"up": 0.5}))
    assert rt.chat_choice("chat/Alice/1") == ChatChoice(False, {"up": 0.5})
    assert rt.chat_choice("chat/Alice/2") == ChatChoice(True, {})
    rt.set_chat_choice("session:abc", ChatChoice(False))
    rt.set_chat_choice("chat/Alice/incognito-20260101-10-00-00", ChatChoice(False))
    assert not rt.chat_choice("session:abc").enabled and rt.chat_choice("session:xyz").enabled
    assert list(json.loads(chats.read_text())["chats"]) == ["chat/Alice/1"]  # sessions and incognito chats stay in memory
    rt.set_chat_choice("chat/Alice/1", ChatChoice(True, {}))  # back to the default: nothing stored
    assert json.loads(chats.read_text()) == {"format": 2, "chats": {}}
    for index in range(MAX_SESSIONS + 5):
        rt.set_chat_choice(f"session:s{index}", ChatChoice(True, {"up": 0.5}))
    assert not rt.chat_choice("session:s4").enabled  # dropped: reads as off, never back on
    assert rt.chat_choice("session:s5") == ChatChoice(True, {"up": 0.5})  # the last MAX_SESSIONS are kept
    with pytest.raises(ValueError):
        rt.set_chat_choice(None, ChatChoice())


def test_attachments_last_edit_wins_and_survive_a_rewrite_of_the_character(rt, tmp_path):
    path = tmp_path / "characters" / "Alice.yaml"
    path.write_text(yaml.safe_dump({"name": "Alice", "context": "x", "steering": {"up": 1.0}}))
    assert rt.attachments("Alice") == [("up", 1.0)]
    path.write_text(yaml.safe_dump({"name": "Alice", "context": "x"}))  # saved from the webui: key gone
    assert rt.attachments("Alice") == [("up", 1.0)]
    rt.attach("Alice", [("front", 2.0)])
    assert rt.attachments("Alice") == [("front", 2.0)]
    time.sleep(0.01)
    path.write_text(yaml.safe_dump({"name": "Alice", "steering": ["up"]}))  # edited by hand: wins, default strength
    assert rt.attachments("Alice") == [("up", 2.0)]
    rt.attach("Alice", [])
    assert rt.attachments("Alice") == []
    assert rt.attachments("Nobody") == [] and rt.attachments(None) == []
    with pytest.raises(PresetError):
        rt.attach("", [("up", 1)])


def test_character_files_are_read_like_the_webui_does(rt, tmp_path):
    folder = tmp_path / "characters"
    (folder / "Bob.json").write_text(json.dumps({"name": "Bob", "steering": {"up": 0.5}}))
    assert rt.attachments("Bob") == [("up", 0.5)]
    (folder / "Carl.yaml").write_text(yaml.safe_dump({"steering": {"up": 1}}))
    (folder / "Carl.yml").write_text(yaml.safe_dump({"steering": {"front": 1}}))  # .yml is loaded first
    assert rt.attachments("Carl") == [("front", 1.0)]
    (folder / "Dana.yaml").write_text("steering: [: broken")
    assert rt.attachments("Dana") == [] and "Dana.yaml" in rt.last_error
    assert rt.character_file("../Alice") is None


def test_what_steers_a_request(rt, tmp_path):
    rt.set_active([("up", 1.0)])
    (tmp_path / "characters" / "Alice.yaml").write_text(yaml.safe_dump({"steering": {"front": 4.0, "up": 0.5}}))
    assert rt.plan(chat()) == [("up", 0.5), ("front", 4.0)]  # the character's strength wins
    assert rt.plan(chat(mode="instruct")) == [("up", 1.0)]
    rt.set_chat_choice(state_key(chat()), ChatChoice(True, {"front": 0.0, "up": 2.0, "other": 5.0}))
    assert rt.plan(chat()) == [("up", 2.0)]
    view = rt.chat_view(chat())
    assert [(r.name, r.default, r.strength, r.source) for r in view.rows] == [("up", 0.5, 2.0, "character"), ("front", 4.0, 0.0, "character")]
    assert "up ×2" in view.text()
    rt.set_chat_choice(state_key(chat()), ChatChoice(False))
    assert rt.plan(chat()) == [] and "switched off" in rt.chat_view(chat()).text()
    with pytest.raises(ValueError, match="no id"):
        rt.save_chat_view(chat(unique_id=None), True, {})


def test_the_chat_panel_knows_which_strengths_are_doses(rt):
    rt.store.save(Recipe("calm", positive=["Calm"], negative=["Angry"], method="mean", layers=[1], strength="auto"))
    rt.set_active([("calm", 1.5), ("up", 1.0)])
    rows = {row.name: row for row in rt.chat_view(chat()).rows}
    assert rows["calm"].calibrated and rows["calm"].strength == 1.5  # a dose of its calibrated strength
    assert not rows["up"].calibrated  # a fixed strength
    assert rt.wait_prepared(120)  # the panel started building both in the background: let it finish


def test_a_renamed_or_branched_chat_keeps_its_choice(rt, tmp_path):
    old, new = chat(unique_id="20260101-10-00-00"), chat(unique_id="My New Chat")
    rt.save_chat_view(old, False, {"up": 0.5})
    assert rt.follow_chat(old, new)
    assert rt.chat_choice("chat/Alice/My New Chat") == ChatChoice(False, {"up": 0.5})
    assert rt.chat_choice("chat/Alice/20260101-10-00-00") == ChatChoice(False, {"up": 0.5})  # a branch keeps both
    assert not rt.follow_chat(chat(unique_id="never-chosen"), chat(unique_id="other"))  # nothing to carry
    rt.save_chat_view(chat(unique_id="third"), True, {"up": 1.5})
    assert not rt.follow_chat(old, chat(unique_id="third"))  # a chat's own choice is never overwritten
    assert rt.chat_choice("chat/Alice/third").strengths == {"up": 1.5}
    assert "My New Chat" in (tmp_path / "data" / "chats.json").read_text()


def test_presets_are_prepared_in_the_background_when_a_model_loads(rt, loaded, monkeypatch):
    rt.attach("Alice", [("up", 2.0)])
    rt.set_active([("front", 4.0)])
    started, release = [], threading.Event()
    real = rt.store.vector

    def slow(*args, **kwargs):  # a build that takes a while (a distilled preset: ~35 s on 2 CPU cores)
        started.append(args[0].name if hasattr(args[0], "name") else args[0])
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(rt.store, "vector", slow)
    loaded["model"] = tiny_llama(seed=3)  # a new model: what steers the next replies is built at once
    view = rt.chat_view(chat())
    assert "Preparing up" in view.text() or "Preparing front" in view.text()
    release.set()
    assert rt.wait_prepared(30)
    assert sorted(started) == ["front", "up"]
    view = rt.chat_view(chat())
    assert "Preparing" not in view.text() and {row.preparing for row in view.rows} == {"ready"}
    assert len(rt.steers_for_state(chat())) == 2 and len(started) == 2  # the reply builds nothing more


# -- the model ---------------------------------------------------------------------------------------------------
class LlamaServer:  # the llama.cpp loader's model class
    pass


def test_models_steering_cannot_run_on_are_reported(rt, loaded):
    loaded["model"] = None
    with pytest.raises(SteeringUnavailable, match="No model is loaded"):
        rt.current_model()
    loaded["model"] = LlamaServer()
    with pytest.raises(SteeringUnavailable, match="llama.cpp loader"):
        rt.current_model()
    loaded["model"], loaded["loader"] = nn.Linear(2, 2), "ExLlamav3_HF"
    assert "ExLlamaV3" in rt.status_line()
    loaded["loader"] = "Transformers"
    assert "cannot find the decoder layers" in rt.status_line()
    rt.set_active([("up", 1.0)])
    assert rt.steers_for_state(chat()) == [] and "up" in rt.last_error


def test_vectors_are_cached_per_model_and_rebuilt_for_another(rt, loaded, monkeypatch):
    calls = []
    real = rt.store.vector
    monkeypatch.setattr(rt.store, "vector", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = rt.vector("up")
    assert rt.vector("up") is first and len(calls) == 1
    loaded["model"] = tiny_llama(hidden=32, layers=2, seed=1)
    second = rt.vector("up")
    assert second.hidden_size == 32 and rt.model_changes == 1 and len(calls) == 2
    assert rt.steers_for_state({"steering_chat": False}) == []
    rt.set_active([("front", 4.0)])  # layer 1 fits 2 layers; 'up' at 50% too
    assert len(rt.steers_for_state({"steering_chat": False})) == 1


def test_a_recipe_that_cannot_fit_the_model_is_refused(rt, tmp_path):
    rt.store.save(Recipe("deep", positive=["a"], negative=["b"], method="mean", mode="all", layers=[20], strength=1.0))
    rt.set_active([("deep", 1.0), ("up", 1.0)])
    steers = rt.steers_for_state({"steering_chat": False})
    assert len(steers) == 1 and "deep" in rt.last_error and "out of range" in rt.last_error


# -- one generation ----------------------------------------------------------------------------------------------
def generate(model, ids, tokens=6):
    return model.generate(inputs=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False, pad_token_id=0)


def test_steering_is_armed_for_one_generate_call_only(rt, loaded, tokenizer, tmp_path):
    model = loaded["model"]
    ids = tokenizer("Tell me something about the sea and the sky", return_tensors="pt").input_ids
    plain = generate(model, ids)
    rt.set_active([("up", 8.0)])
    assert rt.begin_generation({"steering_chat": False}, ids) == [("up", 8.0)]
    assert "generate" in model.__dict__ and hooks_on(model) == 0  # armed: no hook before generate runs
    steered = generate(model, ids)
    assert not torch.equal(steered, plain)
    assert "generate" not in model.__dict__ and hooks_on(model) == 0
    assert torch.equal(generate(model, ids), plain)  # the next call is not steered
    assert "Last reply steered by: up ×8" in rt.status_line()
    rt = SteeringRuntime(rt.store, tmp_path / "data", lambda: (model, tokenizer), multi_user=True)
    assert rt.begin_generation({"steering_chat": False}, ids) == [("up", 8.0)]
    generate(model, ids)
    assert "Last reply" not in rt.status_line()  # one session must not learn what steered another's reply
    # multi-user: each session's own status line names what steered its own last reply
    assert rt.begin_generation({"steering_chat": True, "steering_session": "s1"}, ids) == [("up", 8.0)]
    generate(model, ids)
    assert "Last reply steered by: up ×8" in rt.status_line("s1")
    assert "Last reply" not in rt.status_line("s2") and "Last reply" not in rt.status_line()
    rt.set_active([])
    assert rt.begin_generation({"steering_chat": True, "steering_session": "s2"}, ids) == []
    assert "Last reply steered by: up ×8" in rt.status_line("s1") and "Last reply" not in rt.status_line("s2")


def test_nothing_is_touched_when_nothing_applies(rt, loaded, tokenizer):
    model = loaded["model"]
    ids = tokenizer("Hello there", return_tensors="pt").input_ids
    assert rt.begin_generation({"steering_chat": False}, ids) == []
    assert "generate" not in model.__dict__
    rt.set_active([("up", 0.0)])
    assert rt.begin_generation({"steering_chat": False}, ids) == []
    assert "generate" not in model.__dict__


def test_a_stale_arming_is_ended_by_the_next_request_and_by_the_lock(rt, loaded, tokenizer):
    model = loaded["model"]
    ids = tokenizer("Tell me something about the sea", return_tensors="pt").input_ids
    rt.set_active([("up", 8.0)])
    rt.begin_generation({"steering_chat": False}, ids)
    rt.set_active([])
    rt.begin_generation({"steering_chat": False}, ids)  # the same prompt tokens: the newer request owns them
    assert "generate" not in model.__dict__
    rt.set_active([("up", 8.0)])
    rt.begin_generation({"steering_chat": False}, ids)
    with rt.lock:
        assert "generate" not in model.__dict__


def test_an_actadd_vector_longer_than_the_prompt_is_skipped(rt, loaded, tokenizer):
    rt.set_active([("front", 4.0)])
    short = tokenizer("Hi", return_tensors="pt").input_ids
    assert rt.begin_generation({"steering_chat": False}, short) == []
    assert "prompt of at least" in rt.last_error and "generate" not in loaded["model"].__dict__
    assert "Last problem: an actadd preset needs a prompt" in rt.status_line()  # one user is told the last problem


def test_with_multi_user_a_session_is_told_its_own_problems_and_those_of_every_user(rt, loaded, tokenizer, tmp_path):
    rt = SteeringRuntime(rt.store, tmp_path / "data", lambda: (loaded["model"], tokenizer), characters_dir=tmp_path / "characters",
                         multi_user=True)
    (tmp_path / "characters" / "Bob.yaml").write_text(yaml.safe_dump({"steering": {"front": 4.0}}))
    alice, bob = chat(steering_session="alice"), chat(steering_session="bob", character_menu="Bob")
    assert rt.begin_generation(bob, tokenizer("Hi", return_tensors="pt").input_ids) == []  # too short for Bob's actadd preset
    assert "Last problem: an actadd preset needs a prompt" in rt.status_line("bob")
    assert "prompt" in rt.chat_view(bob).text() and "prompt" in rt.last_error
    for other in ("alice", None):  # another session's problem may name what steers its chat: never told to others
        assert "Last problem" not in rt.status_line(other)
    assert "Last problem" not in rt.chat_view(alice).text()
    (tmp_path / "characters" / "Dana.yaml").write_text("steering: [: broken")
    assert rt.attachments("Dana") == []  # a shared file, read outside every request: every session is told, as such
    for session in ("alice", "bob", None):
        assert "Last problem for every user: " in rt.status_line(session) and "Dana.yaml" in rt.status_line(session)
    assert "Last problem for every user: " in rt.chat_view(alice).text()
    assert "Last problem: an actadd preset" in rt.status_line("bob") and "Last problem:" not in rt.status_line("alice")
    long = tokenizer("Tell me something about the sea, the sky and the mountains", return_tensors="pt").input_ids
    assert rt.begin_generation(bob, long) == [("front", 4.0)]  # steered as chosen: what went wrong before is past
    rt.end_generation()
    assert "Last problem" not in rt.status_line("bob") and "Last problem" not in rt.status_line("alice")
    rt.report_problem("not applied to this reply: RuntimeError: boom", alice)  # the adapter's own catch, for Alice's request
    assert "boom" in rt.status_line("alice") and "boom" not in rt.status_line("bob")


def test_a_reply_steered_as_chosen_keeps_a_problem_it_met_itself_until_it_is_said():
    problems = Problems(sessions=4)
    with problems.serving("bob"):
        problems.report("an actadd preset needs a longer prompt")
    with problems.serving("bob"):  # a reply whose plan read an unreadable chats.json, then was steered as chosen
        problems.report("unreadable, ignored: chats.json")
        problems.clear()
    assert problems.told("bob") == ("unreadable, ignored: chats.json", None) and problems.last is not None
    with problems.serving("bob"):  # the next reply steered as chosen, meeting nothing: what it said before is past
        problems.clear()
    assert problems.told("bob") == (None, None) and problems.last is None


def test_a_steered_reply_whose_plan_met_an_unreadable_file_says_so(rt, tokenizer, tmp_path):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "chats.json").write_bytes(b"\xff not UTF-8")
    rt.set_active([("up", 2.0)])
    assert rt.begin_generation(chat(), tokenizer("Tell me something about the sea", return_tensors="pt").input_ids) == [("up", 2.0)]
    rt.end_generation()
    assert "Last problem: unreadable, ignored: " in rt.status_line() and "chats.json" in rt.status_line()


def test_hooks_of_one_thread_leave_other_threads_alone(rt, loaded, tokenizer):
    model = loaded["model"]
    ids = tokenizer("Tell me something about the sea", return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(ids).logits
    handle = SteeringHandle(rt.current_model(), [Steer(rt.vector("up"), 8.0)], gate=on_thread(threading.get_ident() + 1))
    try:
        with torch.no_grad():
            assert torch.equal(model(ids).logits, plain)  # another thread's hooks: no effect here
        handle.gate = on_thread()
        with torch.no_grad():
            assert not torch.equal(model(ids).logits, plain)
    finally:
        handle.remove()
    assert hooks_on(model) == 0


def test_two_armed_requests_each_get_their_own_steering(rt, loaded, tokenizer):
    """A request armed, then another armed before the first reached generate: neither loses its steering."""
    model = loaded["model"]
    first = tokenizer("Tell me something about the sea", return_tensors="pt").input_ids
    second = tokenizer("Tell me something about the sky, please", return_tensors="pt").input_ids
    plain_first, plain_second = generate(model, first), generate(model, second)
    rt.set_active([("up", 8.0)])
    rt.begin_generation({"steering_chat": False}, first)
    rt.set_active([])
    rt.begin_generation({"steering_chat": False}, second)  # nothing to steer: the first request keeps its arming
    assert torch.equal(generate(model, second), plain_second)
    assert not torch.equal(generate(model, first), plain_first)
    assert "generate" not in model.__dict__ and hooks_on(model) == 0


def test_a_generate_call_that_raises_removes_its_hooks(rt, loaded, tokenizer):
    model = loaded["model"]
    ids = tokenizer("Tell me something about the sea", return_tensors="pt").input_ids
    rt.set_active([("up", 8.0)])
    rt.begin_generation({"steering_chat": False}, ids)

    def broken(input_ids, scores):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.generate(inputs=ids, max_new_tokens=3, logits_processor=[broken], pad_token_id=0)
    assert hooks_on(model) == 0 and not rt.steering_now and rt.wait_idle(1)


def test_reentrant_lock_over_a_plain_lock():
    plain = threading.Lock()
    acquired = []
    lock = ReentrantLock(lambda: plain, on_acquire=lambda: acquired.append(1))
    with lock:
        with lock:
            assert plain.locked()
        assert plain.locked()
    assert not plain.locked() and acquired == [1]
    with lock:
        other = []
        thread = threading.Thread(target=lambda: other.append(lock.acquire(timeout=0.05)))
        thread.start()
        thread.join()
        assert other == [False]
    with pytest.raises(RuntimeError):
        lock.release()


def test_a_first_build_on_a_model_is_announced_in_the_console(rt, tmp_path, loaded, caplog):
    """Building a preset's vector (a distilled one takes a while) at the first reply says so in the log."""
    with caplog.at_level("INFO", logger="steering"):
        rt.vector("up")
    assert any("building up (mean)" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage().startswith("steering: built up in") for r in caplog.records)
    caplog.clear()
    with caplog.at_level("INFO", logger="steering"):
        rt.vector("up")  # in memory
        SteeringRuntime(rt.store, tmp_path / "other", lambda: (loaded["model"], loaded["tokenizer"])).vector("up")  # on disk
    assert not [r for r in caplog.records if "building" in r.getMessage()]
