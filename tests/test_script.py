"""The webui adapter (extensions/steering/script.py) inside a model of the webui's call sequence
(tests/webui_host.py), on the embedded SmolLM2-135M-Instruct, greedy."""
from __future__ import annotations

import copy
import threading
import time

import pytest
import torch
import webui_host as host
import yaml
from webui_host import HOST, hooks_on, shared, untouched

from extensions.steering.engine.presets import PresetStore, Recipe

LOVE = Recipe("test-love", positive=["Love, joy and kindness"], negative=["Hate, anger and cruelty"], method="mean", mode="all", layers=[6], strength=6.0)
DEEP = Recipe("test-deep", positive=["Love"], negative=["Hate"], method="mean", mode="all", layers=[25], strength=6.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def webui(tmp_path, default_model):
    """The fake webui with the embedded model loaded and the steering extension enabled."""
    model, tokenizer = default_model
    host.load_model(tmp_path / "user_data", model, tokenizer, (LOVE, DEEP))
    with host.running():
        yield host
    assert untouched(model)


def script():
    return host.state["steering"][2]


def runtime():
    return script().RUNTIME


def chat_tokens(text="Tell me about your day.", session=None, **overrides):
    state = host.ui_state(**overrides)
    HOST.outputs.clear()
    reply, _ = host.chat(text, state, session=session)
    HOST.join_threads()
    assert untouched(shared.model), "something stayed hooked after the reply"
    return list(HOST.outputs[-1]), reply


MODES = [("chat", True), ("chat-instruct", True), ("instruct", True), ("instruct", False)]


def choice(enabled=True, **strengths):
    return script()._module("runtime").ChatChoice(enabled=enabled, strengths=strengths)


def key_for(mode, unique_id="20260101-00-00-00", character="Assistant"):
    return f"instruct/{unique_id}" if mode == "instruct" else f"chat/{character}/{unique_id}"


@pytest.mark.parametrize("mode,stream", MODES)
def test_unsteered_reply_is_token_for_token_the_reply_without_the_extension(webui, mode, stream):
    baseline, _ = host.without_extension(chat_tokens, mode=mode, stream=stream)
    assert chat_tokens(mode=mode, stream=stream)[0] == baseline  # loaded, nothing active
    runtime().set_active([("test-love", 2.0)])
    runtime().set_chat_choice(key_for(mode), choice(enabled=False))
    assert chat_tokens(mode=mode, stream=stream)[0] == baseline  # active, but switched off in this chat
    runtime().set_chat_choice(key_for(mode), choice(**{"test-love": 0.0}))
    assert chat_tokens(mode=mode, stream=stream)[0] == baseline  # strength 0 in this chat


@pytest.mark.parametrize("mode,stream", MODES)
def test_active_preset_steers_every_chat_mode_and_leaves_nothing_hooked(webui, mode, stream):
    baseline, _ = host.without_extension(chat_tokens, mode=mode, stream=stream)
    runtime().set_active([("test-love", 2.0)])
    steered, _ = chat_tokens(mode=mode, stream=stream)
    assert steered != baseline
    assert runtime().last_applied_for() == [("test-love", 2.0)]
    again, _ = chat_tokens(mode=mode, stream=stream)
    assert again == steered  # the same steering each time: nothing accumulated


def test_notebook_and_completions_api_are_steered_by_the_global_presets_only(webui):
    prompt = "Once upon a time, the dragon"
    state = host.ui_state(stream=False, character_menu="Kind")
    base_notebook = host.without_extension(host.notebook, prompt, state)
    base_api = host.without_extension(host.completions, prompt)
    runtime().attach("Assistant", [("test-love", 2.0)])
    assert host.notebook(prompt, host.ui_state(stream=False)) == base_notebook  # a character never steers the notebook
    assert host.completions(prompt) == base_api
    runtime().set_active([("test-love", 2.0)])
    assert host.notebook(prompt, host.ui_state(stream=False)) != base_notebook
    assert host.completions(prompt) != base_api
    assert untouched(shared.model)


def test_api_character_steers_its_replies_and_ui_chat_choices_do_not_apply(webui):
    body = {"messages": [{"role": "user", "content": "Tell me about your day."}], "mode": "instruct"}
    base_named = host.without_extension(host.chat_completions, {**body, "character": "Assistant"})
    base_plain = host.without_extension(host.chat_completions, body)
    runtime().attach("Assistant", [("test-love", 2.0)])
    runtime().set_chat_choice(key_for("chat"), choice(enabled=False))
    assert host.chat_completions({**body, "character": "Assistant"}) != base_named  # named: steers in any mode
    assert host.chat_completions(body) == base_plain  # instruct mode, no character named
    assert host.chat_completions({**body, "mode": "chat"}) != host.without_extension(host.chat_completions, {**body, "mode": "chat"})
    assert untouched(shared.model)


def test_impersonate_is_steered_like_a_reply_of_that_chat(webui):
    """Impersonate runs generate_reply(is_chat=True) without state_modifier: it still gets the chat's steering."""
    state = lambda: host.ui_state(stream=False, max_new_tokens=12)
    baseline = host.without_extension(host.impersonate, "I think", state())
    assert host.impersonate("I think", state()) == baseline  # nothing chosen: untouched
    runtime().attach("Assistant", [("test-love", 4.0)])
    steered = host.impersonate("I think", state())
    assert steered != baseline and runtime().last_applied_for() == [("test-love", 4.0)]
    runtime().set_chat_choice(key_for("chat"), choice(enabled=False))
    assert host.impersonate("I think", state()) == baseline  # the chat's switch applies to it too
    assert untouched(shared.model)


def test_character_presets_steer_in_chat_modes_and_the_chat_switch_turns_them_off(webui):
    baseline, _ = host.without_extension(chat_tokens)
    runtime().attach("Assistant", [("test-love", 2.0)])
    steered, _ = chat_tokens()
    assert steered != baseline
    assert chat_tokens(mode="instruct")[0] == host.without_extension(chat_tokens, mode="instruct")[0]  # instruct: no character
    state = {**host.ui_state(), "steering_chat": True}
    runtime().save_chat_view(state, enabled=False, strengths={})
    assert chat_tokens()[0] == baseline
    runtime().save_chat_view(state, enabled=True, strengths={"test-love": 2.0})
    assert chat_tokens()[0] == steered
    assert runtime().chat_choice("chat/Assistant/20260101-00-00-00").strengths == {}  # the preset's own strength is not stored


def test_regenerate_is_steered_like_the_first_reply(webui):
    runtime().set_active([("test-love", 2.0)])
    first, reply = chat_tokens()
    HOST.outputs.clear()
    host.run_event(host.generate_chat_reply, "", host.ui_state(history=history_of(reply)), regenerate=True)
    HOST.join_threads()
    assert HOST.outputs[-1] == first
    assert untouched(shared.model)


def history_of(reply_text):
    return {"internal": [["Tell me about your day.", reply_text]], "visible": [["Tell me about your day.", reply_text]], "metadata": {}}


def test_chat_choice_belongs_to_its_chat_and_survives_a_restart(webui):
    runtime().set_active([("test-love", 2.0)])
    baseline, _ = host.without_extension(chat_tokens)
    steered, _ = chat_tokens(unique_id="20260101-00-00-01")
    runtime().save_chat_view({**host.ui_state(unique_id="20260101-00-00-01"), "steering_chat": True}, enabled=False, strengths={})
    assert chat_tokens(unique_id="20260101-00-00-01")[0] == baseline
    assert chat_tokens(unique_id="20260101-00-00-02")[0] == steered  # another chat keeps its own choice
    host.setup_called.clear()  # a webui restart: setup() again, a new runtime from the files
    host.load_extensions(["steering"])
    assert chat_tokens(unique_id="20260101-00-00-01")[0] == baseline
    assert chat_tokens(unique_id="20260101-00-00-02")[0] == steered
    incognito = {**host.ui_state(unique_id="incognito-20260101-00-00-03"), "steering_chat": True}
    runtime().save_chat_view(incognito, enabled=False, strengths={})
    assert "incognito" not in (shared.user_data_dir / "steering" / "chats.json").read_text()


def test_multi_user_sessions_never_see_or_steer_each_other(webui):
    shared.args.multi_user = True
    runtime().set_active([("test-love", 2.0)])
    no_id = dict(unique_id=None)
    baseline, _ = host.without_extension(chat_tokens, **no_id)
    steered, _ = chat_tokens(session="alice", **no_id)
    assert steered != baseline
    alice = {**host.ui_state(**no_id), "steering_chat": True, "steering_session": "alice"}
    bob = {**host.ui_state(**no_id), "steering_chat": True, "steering_session": "bob"}
    runtime().save_chat_view(alice, enabled=False, strengths={})
    assert runtime().chat_view(bob).enabled and not runtime().chat_view(alice).enabled
    results = {}

    def talk(name):
        results[name] = host.chat("Tell me about your day.", host.ui_state(**no_id), session=name)[0]

    threads = [threading.Thread(target=talk, args=(name,)) for name in ("alice", "bob", "carol")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    base_text = host.without_extension(chat_tokens, **no_id)[1]
    steered_text = chat_tokens(session="bob", **no_id)[1]
    assert base_text != steered_text
    assert results == {"alice": base_text, "bob": steered_text, "carol": steered_text}
    assert not (shared.user_data_dir / "steering" / "chats.json").exists()  # nothing of a session is written
    assert chat_tokens(session=None, **no_id)[0] == steered  # a request without a session (the API) gets the default


def test_stop_mid_stream_removes_steering_even_with_the_extra_forward(webui):
    runtime().set_active([("test-love", 2.0)])
    baseline, _ = host.without_extension(chat_tokens, mode="instruct", max_new_tokens=6)
    entered = threading.Event()

    class SlowAfterStop:  # the stopped thread's extra forward overlaps the next generation
        def __call__(self, input_ids, scores):
            if shared.stop_everything:
                entered.set()
                time.sleep(1.5)
            return scores

    state = host.ui_state(mode="instruct", max_new_tokens=40, logits_processor=SlowAfterStop())
    event = host.generate_chat_reply("Tell me a long story.", state)
    next(event)
    next(event)
    shared.stop_everything = True  # the Stop button (stop_everything_event)
    for _ in event:
        pass
    event.close()
    assert entered.wait(10)
    assert runtime().steering_now  # the old thread is still in its extra forward, hooks on
    runtime().set_active([])
    assert chat_tokens(mode="instruct", max_new_tokens=6)[0] == baseline  # untouched by the old hooks
    assert runtime().wait_idle(10)
    assert untouched(shared.model)


def test_stop_string_ends_the_stream_and_steering(webui):
    runtime().set_active([("test-love", 2.0)])
    state = host.ui_state(mode="instruct", max_new_tokens=30, custom_stopping_strings='" "')
    host.chat("Hello", state)
    HOST.join_threads()
    assert untouched(shared.model)


def test_an_exception_during_generation_leaves_nothing_hooked(webui):
    runtime().set_active([("test-love", 2.0)])

    class Broken:
        def __call__(self, input_ids, scores):
            raise RuntimeError("a broken logits processor")

    for stream in (True, False):
        host.chat("Hello", host.ui_state(mode="instruct", stream=stream, logits_processor=Broken()))
        HOST.join_threads()
        assert untouched(shared.model)
    assert HOST.errors or HOST.thread_errors


def test_an_exception_before_generate_leaves_no_hook_and_disarms(webui):
    runtime().set_active([("test-love", 2.0)])
    baseline, _ = host.without_extension(chat_tokens, mode="instruct")

    class Failing:
        @staticmethod
        def logits_processor_modifier(processor_list, input_ids):
            raise ValueError("another extension fails after tokenizer_modifier")

    host.state["failing"] = [True, 1, Failing]
    with pytest.raises(ValueError):
        host.chat("Hello", host.ui_state(mode="instruct"))
    del host.state["failing"]
    assert hooks_on(shared.model) == 0
    with runtime().lock:  # the tab's own generate calls take the lock: nothing armed survives that
        pass
    assert untouched(shared.model)
    runtime().set_active([])
    assert chat_tokens(mode="instruct")[0] == baseline


def test_a_generate_call_with_other_tokens_is_never_steered(webui):
    runtime().set_active([("test-love", 2.0)])
    model, tokenizer = shared.model, shared.tokenizer
    prompt = tokenizer("I think that", return_tensors="pt").input_ids
    plain = model.generate(inputs=prompt, max_new_tokens=8, do_sample=False)
    state = {"steering_chat": False}
    runtime().begin_generation(state, tokenizer("Something else entirely", return_tensors="pt").input_ids)
    assert torch.equal(model.generate(inputs=prompt, max_new_tokens=8, do_sample=False), plain)
    assert host.hooks_on(model) == 0  # the other request stays armed for its own tokens, and hooks nothing meanwhile
    runtime().end_generation()
    assert untouched(model)


def perturbed(model):
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.002)
    return other


def test_a_replaced_model_gets_vectors_rebuilt_from_the_recipes(webui):
    runtime().set_active([("test-love", 2.0)])
    chat_tokens()
    first_fingerprint = runtime().current_model().fingerprint
    original = shared.model
    shared.model = perturbed(original)  # e.g. a UI or API load of another checkpoint of the same shape
    try:
        baseline, _ = host.without_extension(chat_tokens)
        steered, _ = chat_tokens()
        assert steered != baseline
        assert runtime().model_changes == 1 and runtime().current_model().fingerprint != first_fingerprint
        tensors = list((runtime().store.folder / "tensors" / "test-love").glob("*.safetensors"))
        assert len(tensors) == 2  # one per model, cached
        assert untouched(shared.model)
    finally:
        shared.model = original


def tiny_llama(hidden=64, layers=4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


def test_a_model_of_another_size_rebuilds_what_fits_and_refuses_the_rest(webui):
    runtime().set_active([("test-love", 2.0)])
    chat_tokens()  # vectors of the 576-wide model exist now
    original = shared.model
    shared.model = tiny_llama()
    try:
        baseline, _ = host.without_extension(chat_tokens)
        runtime().set_active([("test-deep", 2.0)])  # layer 25 does not exist in 4 layers
        assert chat_tokens()[0] == baseline
        assert "test-deep" in runtime().status_line() and "out of range" in runtime().status_line()
        runtime().set_active([("test-love", 20.0)])  # layer 6 does not exist either
        assert chat_tokens()[0] == baseline
        shared.model.config.num_hidden_layers = 4
        PresetStore(runtime().store.folder, shipped=None).save(Recipe("small", positive=["Love"], negative=["Hate"], method="mean", mode="all", layers=["50%"], strength=40.0))
        runtime().set_active([("small", 40.0)])
        steered, _ = chat_tokens()
        assert steered != baseline and runtime().last_applied_for() == [("small", 40.0)]
        assert runtime().vector("small").hidden_size == 64
    finally:
        shared.model = original


def test_a_cached_tensor_that_does_not_fit_is_never_applied(webui):
    from extensions.steering.engine.vector import SteeringVector

    rt = runtime()
    with pytest.raises(ValueError, match="does not fit"):
        rt.check_fits(SteeringVector({6: torch.ones(64)}), rt.current_model(), "wrong")
    with pytest.raises(ValueError, match="does not fit"):
        rt.check_fits(SteeringVector({40: torch.ones(576)}), rt.current_model(), "wrong")


def test_lora_wrapping_is_noticed_and_steered(webui):
    peft = pytest.importorskip("peft")
    runtime().set_active([("test-love", 2.0)])
    chat_tokens()  # the plain model is known
    original = shared.model
    wrapped = peft.get_peft_model(copy.deepcopy(original), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    shared.model = wrapped  # LoRA.py: shared.model = PeftModel.from_pretrained(shared.model, ...)
    try:
        baseline, _ = host.without_extension(chat_tokens)
        steered, _ = chat_tokens()
        assert steered != baseline and runtime().model_changes == 1
        assert untouched(wrapped)
    finally:
        shared.model = original


def test_llama_cpp_model_is_steered_by_control_vectors_and_the_users_flags_survive(webui):
    from extensions.steering.engine.models import default_gguf

    runtime().set_active([("test-love", 2.0)])
    original = shared.model
    shared.args.extra_flags = "--jinja --threads 2"
    server = host.LlamaServer(default_gguf())
    shared.model, shared.args.loader = server, "llama.cpp"
    try:
        reply, _ = host.chat("Hello", host.ui_state())
        assert reply == "llama.cpp reply 1" and len(server.starts) == 2 and server.running
        assert server.starts[1].startswith("--jinja --threads 2 --control-vector-scaled ") and server.starts[1].endswith(":2")
        assert shared.args.extra_flags == "--jinja --threads 2"  # the user's own setting is never changed
        host.chat("Hello again", host.ui_state())
        assert len(server.starts) == 2  # the same set: no restart
        assert "llama.cpp loader" in runtime().status_line() and "restarted llama.cpp with steering" in runtime().status_line()
        runtime().set_chat_choice(key_for("chat"), choice(enabled=False))
        host.chat("Off", host.ui_state())
        assert len(server.starts) == 3 and server.starts[2] == "--jinja --threads 2"  # the next reply is unsteered
        view = runtime().chat_view({**host.ui_state(), "steering_chat": True})
        assert view.problem is None and "without steering" in view.text()
        assert untouched(original)
    finally:
        shared.model, shared.args.loader, shared.args.extra_flags = original, "Transformers", None


def test_llama_cpp_impersonate_under_multi_user_is_told_to_its_own_session(webui):
    from extensions.steering.engine.models import default_gguf

    shared.args.multi_user = True
    host.setup_called.clear()  # a webui started with --multi-user
    host.load_extensions(["steering"])
    runtime().set_active([("test-love", 2.0)])
    original = shared.model
    shared.model, shared.args.loader = host.LlamaServer(default_gguf()), "llama.cpp"
    try:
        runtime().notice()  # as the chat panel's view does: Impersonate runs no hook of ours before a llama.cpp generate
        assert host.impersonate("I think", host.ui_state(), session="alice").startswith("I think")
        assert runtime().last_applied_for("alice") == [("test-love", 2.0)]
        assert "Last: restarted llama.cpp with steering: test-love ×2" in runtime().status_line("alice")
        assert runtime().last_applied_for("bob") == [] and "restarted" not in runtime().status_line("bob")
        host.impersonate("I think", host.ui_state(), session=None)  # no browser session (none to tell)
        assert runtime().last_applied_for("alice") == [("test-love", 2.0)] and "Last reply" not in runtime().status_line()
        assert "restarted llama.cpp" in runtime().chat_view({**host.ui_state(), "steering_session": "alice"}).text()
    finally:
        shared.model, shared.args.loader = original, "Transformers"
    assert "restarted" not in runtime().chat_view({**host.ui_state(), "steering_session": "alice"}).text()  # no longer news


def test_a_llama_cpp_model_first_used_by_impersonate_is_steered_without_any_hook_of_ours_before(webui):
    """A model loaded through the API runs no hook of ours before the open tab's Impersonate (llama.cpp has no
    tokenizer_modifier): the loader's class notices it at its generate call."""
    from extensions.steering.engine.models import default_gguf

    runtime().set_active([("test-love", 2.0)])
    original = shared.model
    server = host.LlamaServer(default_gguf())
    shared.model, shared.args.loader = server, "llama.cpp"  # loaded through the API: nothing of ours ran since
    try:
        assert host.impersonate("I think", host.ui_state()) == "I think" + "llama.cpp reply 1"
        assert len(server.starts) == 2 and "--control-vector-scaled" in server.starts[1] and server.calls == 1
        assert runtime().last_applied_for(None) == [("test-love", 2.0)]
        assert "restarted llama.cpp with steering: test-love ×2" in runtime().status_line()
        host.impersonate("I think", host.ui_state())  # wrapped once: the class's notice and the server's own run once each
        assert len(server.starts) == 2 and server.calls == 2
    finally:
        shared.model, shared.args.loader = original, "Transformers"


def test_exllama_model_is_left_untouched_and_the_status_says_why(webui):
    runtime().set_active([("test-love", 2.0)])
    original = shared.model
    shared.model, shared.args.loader = type("Exllamav3Model", (host.LlamaServer,), {})(), "ExLlamav3"
    try:
        reply, _ = host.chat("Hello", host.ui_state())
        assert reply == "llama.cpp reply 1"
        assert "ExLlamaV3 loader runs the model outside PyTorch" in runtime().status_line()
    finally:
        shared.model, shared.args.loader = original, "Transformers"


def test_no_model_loaded_is_reported(webui):
    original = shared.model
    shared.model = None
    try:
        assert "No model is loaded" in runtime().status_line()
        assert host.chat("Hello", host.ui_state())[0] == ""
    finally:
        shared.model = original


def test_hand_written_steering_key_is_honoured_and_survives_a_save_from_the_ui(webui):
    characters = shared.user_data_dir / "characters"
    kind = {"name": "Kind", "greeting": "Hi!", "context": "Kind is an assistant.", "steering": {"test-love": 2.0}}
    (characters / "Kind.yaml").write_text(yaml.safe_dump(kind), encoding="utf-8")
    state = dict(character_menu="Kind", name2="Kind", context="Kind is an assistant.")
    baseline, _ = host.without_extension(chat_tokens, **state)
    steered, _ = chat_tokens(**state)
    assert steered != baseline
    host.save_character("Kind", "Hi!", "Kind is an assistant.", "Kind")  # the webui drops the steering key
    assert "steering" not in yaml.safe_load((characters / "Kind.yaml").read_text())
    assert chat_tokens(**state)[0] == steered
    assert runtime().attachments("Kind") == [("test-love", 2.0)]
    kind["steering"] = {"test-love": 0}  # edited by hand again: the newest edit wins
    (characters / "Kind.yaml").write_text(yaml.safe_dump(kind), encoding="utf-8")
    assert chat_tokens(**state)[0] == baseline
    runtime().attach("Kind", [("test-love", 2.0)])  # then attached from the tab: that wins
    assert chat_tokens(**state)[0] == steered


def test_settings_from_settings_yaml_apply(webui, tmp_path):
    host.setup_called.clear()
    shared.settings["steering-enabled_by_default"] = False
    try:
        host.load_extensions(["steering"])
        assert runtime().default_enabled is False
        runtime().set_active([("test-love", 2.0)])
        assert chat_tokens()[0] == host.without_extension(chat_tokens)[0]  # new chats start switched off
    finally:
        script().params["enabled_by_default"] = True


def test_the_shipped_kind_assistant_is_steered_by_its_steering_key(webui):
    import shutil
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / "characters" / "Kind Assistant.yaml"
    shutil.copy(source, shared.user_data_dir / "characters" / source.name)
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    state = dict(character_menu="Kind Assistant", name2=data["name"], context=data["context"])
    view = runtime().chat_view({**host.ui_state(**state), "steering_chat": True})
    assert [(row.name, row.strength) for row in view.rows] == [("kind", 0.1)] and "kind ×0.1" in view.text()
    baseline, _ = host.without_extension(chat_tokens, **state)
    steered, _ = chat_tokens(**state)
    assert steered != baseline


def test_loads_from_user_data_extensions_without_a_parent_package(webui):
    """user_data/extensions/steering/script.py is executed by file path as 'user_ext_steering'."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("user_ext_steering", script().__file__)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    path_before = list(sys.path)
    try:
        spec.loader.exec_module(module)
        module.setup()
        assert module.PACKAGE == "steering" and module.RUNTIME is not None
        assert "steering can run" in module.RUNTIME.status_line()
    finally:
        sys.path[:] = path_before
        for name in [n for n in sys.modules if n == "user_ext_steering" or n == "steering" or n.startswith("steering.")]:
            del sys.modules[name]
