"""The adapter on a GPU the way the webui loads models there (fp16 or bf16 on CUDA; a LoRA load turns
a bf16 model into fp16 in place). Skipped without CUDA. Uses a small random Llama and the default
model's tokenizer (STEERING_TOKENIZER_DIR, else the embedded model's converted folder)."""
from __future__ import annotations

import os

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

import webui_host as host  # noqa: E402
from webui_host import HOST, shared, untouched  # noqa: E402

from extensions.steering.engine.presets import PresetStore, Recipe  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    folder = os.environ.get("STEERING_TOKENIZER_DIR")
    if not folder:
        from extensions.steering.engine.models import resolve_model_folder

        folder = resolve_model_folder()
    return AutoTokenizer.from_pretrained(folder)


def random_llama(dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=256, intermediate_size=512, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).to("cuda", dtype).eval()


@pytest.fixture(params=[torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def webui(request, tmp_path, tokenizer):
    user_data = tmp_path / "user_data"
    host.reset_shared(user_data)
    shared.model, shared.tokenizer = random_llama(request.param), tokenizer
    (user_data / "characters").mkdir(parents=True)
    (user_data / "characters" / "Assistant.yaml").write_text("name: AI\ncontext: A chat.\n")
    PresetStore(user_data / "steering" / "presets", shipped=None).save(
        Recipe("gpu-up", positive=["Love and joy"], negative=["Hate and anger"], method="mean", mode="all", layers=["50%"], strength=4.0))
    with host.running():
        yield host
    assert untouched(shared.model)


def tokens(**overrides):
    HOST.outputs.clear()
    host.chat("Tell me about your day.", host.ui_state(**overrides))
    HOST.join_threads()
    assert untouched(shared.model)
    return list(HOST.outputs[-1])


def without_extension(**overrides):
    saved = dict(host.state)
    host.unload_extensions()
    try:
        return tokens(**overrides)
    finally:
        host.state.update(saved)


@pytest.mark.parametrize("mode,stream", [("chat", True), ("instruct", True), ("instruct", False)])
def test_gpu_unsteered_identical_steered_differs_nothing_left(webui, mode, stream):
    runtime = host.state["steering"][2].RUNTIME
    baseline = without_extension(mode=mode, stream=stream)
    assert tokens(mode=mode, stream=stream) == baseline
    runtime.set_active([("gpu-up", 4.0)])
    steered = tokens(mode=mode, stream=stream)
    assert steered != baseline and runtime.last_applied_for() == [("gpu-up", 4.0)]
    assert tokens(mode=mode, stream=stream) == steered
    assert runtime.vector("gpu-up").directions[4].device.type == "cpu"  # stored on the CPU, cast per forward


def test_gpu_model_changed_in_place_to_fp16_keeps_working(webui):
    runtime = host.state["steering"][2].RUNTIME
    runtime.set_active([("gpu-up", 4.0)])
    tokens()
    shared.model.half()  # LoRA.py: shared.model.half() on a GPU load
    baseline = without_extension()
    assert tokens() != baseline


def test_gpu_stop_mid_stream(webui):
    runtime = host.state["steering"][2].RUNTIME
    runtime.set_active([("gpu-up", 4.0)])
    event = host.generate_chat_reply("Tell me a long story.", host.ui_state(mode="instruct", max_new_tokens=64))
    next(event)
    next(event)
    shared.stop_everything = True
    for _ in event:
        pass
    event.close()
    assert runtime.wait_idle(30)
    HOST.join_threads()
    assert untouched(shared.model)
