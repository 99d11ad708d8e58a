"""Layer discovery and steering on every architecture we claim, using tiny random models built from configs.

No weights are downloaded: each model is ``from_config`` with a hidden size of 32, 3 layers and a
128-token vocabulary, seeded so every run sees the same numbers.
"""
from __future__ import annotations

import pytest
import torch
import transformers as T
from torch import nn

from extensions.steering.engine import SteeringVector, UnsupportedModelError, find_layers, steer
from extensions.steering.engine.context import ModelContext
from extensions.steering.engine.layers import Layers
from extensions.steering.engine.record import record_block_inputs

HIDDEN, VOCAB, LAYERS, MIDDLE = 32, 128, 3, 1
PROMPT = torch.tensor([[5, 17, 33, 2, 99, 41, 7, 8]])
NEW_TOKENS = 5

# Shared by the decoder configs that use the Llama-style argument names.
_COMMON = dict(
    vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
)


def _causal(config):
    return lambda: T.AutoModelForCausalLM.from_config(config)


def _gemma3_multimodal():
    text = dict(_COMMON, head_dim=8, sliding_window=16)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)
    config = T.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4,
        image_token_index=VOCAB - 1, boi_token_index=VOCAB - 2, eoi_token_index=VOCAB - 3,
    )
    return T.Gemma3ForConditionalGeneration(config)


def _llama_lora():
    from peft import LoraConfig, get_peft_model

    base = T.AutoModelForCausalLM.from_config(T.LlamaConfig(**_COMMON))
    # init_lora_weights=False: non-zero adapters, so the LoRA path really changes the forward.
    return get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))


# name -> (factory, the block list the engine must find)
ARCHITECTURES = {
    "llama": (_causal(T.LlamaConfig(**_COMMON)), lambda m: m.model.layers),
    "mistral": (_causal(T.MistralConfig(**_COMMON)), lambda m: m.model.layers),
    "mixtral": (_causal(T.MixtralConfig(**_COMMON, num_local_experts=4, num_experts_per_tok=2)), lambda m: m.model.layers),
    "qwen2": (_causal(T.Qwen2Config(**_COMMON)), lambda m: m.model.layers),
    "qwen3": (_causal(T.Qwen3Config(**_COMMON, head_dim=8)), lambda m: m.model.layers),
    "qwen2_moe": (
        _causal(T.Qwen2MoeConfig(**_COMMON, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)),
        lambda m: m.model.layers,
    ),
    "qwen3_moe": (
        _causal(T.Qwen3MoeConfig(**_COMMON, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)),
        lambda m: m.model.layers,
    ),
    "gemma": (_causal(T.GemmaConfig(**_COMMON, head_dim=8)), lambda m: m.model.layers),
    "gemma2": (_causal(T.Gemma2Config(**_COMMON, head_dim=8, sliding_window=16)), lambda m: m.model.layers),
    "gemma3_text": (_causal(T.Gemma3TextConfig(**_COMMON, head_dim=8, sliding_window=16)), lambda m: m.model.layers),
    "gemma3_multimodal": (_gemma3_multimodal, lambda m: m.model.language_model.layers),
    "phi3": (_causal(T.Phi3Config(**_COMMON, pad_token_id=0)), lambda m: m.model.layers),
    "gpt2": (_causal(T.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=128)), lambda m: m.transformer.h),
    "gpt_neox": (
        _causal(T.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4, max_position_embeddings=128)),
        lambda m: m.gpt_neox.layers,
    ),
    "gptj": (
        _causal(T.GPTJConfig(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=128, rotary_dim=4)),
        lambda m: m.transformer.h,
    ),
    "opt": (
        _causal(T.OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, ffn_dim=64, num_hidden_layers=LAYERS, num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=HIDDEN)),
        lambda m: m.model.decoder.layers,
    ),
    "falcon": (_causal(T.FalconConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4)), lambda m: m.transformer.h),
    "bloom": (_causal(T.BloomConfig(vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=LAYERS, n_head=4)), lambda m: m.transformer.h),
    "llama_lora": (_llama_lora, lambda m: m.base_model.model.model.layers),
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def arch(request):
    """(name, model, expected block list, a vector at the middle layer about as long as the residual there)."""
    factory, expected = ARCHITECTURES[request.param]
    torch.manual_seed(0)
    model = factory().eval()
    with torch.no_grad(), record_block_inputs(ModelContext.of(model), [MIDDLE]) as recorded:
        model(input_ids=PROMPT)
    residual = float(recorded[MIDDLE][0, 1:].norm(dim=-1).mean())
    generator = torch.Generator().manual_seed(1)
    direction = torch.randn(HIDDEN, generator=generator)
    vector = SteeringVector({MIDDLE: direction / direction.norm() * 4 * residual})
    return request.param, model, expected(model), vector


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROMPT).logits


def greedy(model, use_cache: bool) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            input_ids=PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=use_cache, pad_token_id=0,
        )
    return out[0, PROMPT.shape[1]:].tolist()


def hook_count(layers: Layers) -> int:
    modules = [layers.owner, *layers.blocks]
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in modules)


def test_finds_every_block(arch):
    name, model, expected, _ = arch
    layers = find_layers(model)
    assert layers.blocks is expected, f"{name}: found {layers.path}"
    assert len(layers) == LAYERS
    # the path the engine reports leads back to the same list
    assert find_layers(model, layers.path).blocks is expected


def test_steering_changes_logits_and_leaves_no_trace(arch):
    name, model, _, vector = arch
    layers = find_layers(model)
    hooks_before = hook_count(layers)
    plain = logits(model)
    with steer(ModelContext.of(model), [(vector, 1.0, "all")]):
        steered = logits(model)
    assert not torch.equal(plain, steered), f"{name}: steering did not change the logits"
    # position 0 (the sink) is not steered and, being first, attends to nothing steered: its logits
    # stay (MoE blocks batch tokens per expert, so other rows can move the float noise; hence close)
    torch.testing.assert_close(plain[:, 0], steered[:, 0], rtol=1e-5, atol=1e-6)
    with steer(ModelContext.of(model), [(vector, 0.0, "all")]):
        zero = logits(model)
    assert torch.equal(plain, zero), f"{name}: strength 0 changed the logits"
    assert torch.equal(plain, logits(model)), f"{name}: steering left a trace"
    assert hook_count(layers) == hooks_before


@pytest.mark.parametrize("mode", ["all", "generated"])
def test_greedy_output_same_with_and_without_cache(arch, mode):
    name, model, _, vector = arch
    plain_cached, plain_uncached = greedy(model, True), greedy(model, False)
    if plain_cached != plain_uncached:  # float noise of the architecture itself, not of steering
        pytest.skip(f"{name} differs between cache and no cache even unsteered: {plain_cached} vs {plain_uncached}")
    with steer(ModelContext.of(model), [(vector, 1.0, mode)]):
        cached, uncached = greedy(model, True), greedy(model, False)
    assert cached == uncached, f"{name} ({mode}): cached {cached} vs uncached {uncached}"
    assert cached != plain_cached, f"{name} ({mode}): steering did not change the greedy output"
    if mode == "generated":
        # the first new token comes from the prompt's logits, which 'generated' leaves alone
        assert cached[0] == plain_cached[0]


# -- models we cannot read ---------------------------------------------------------------------


class _Config:
    num_hidden_layers = 3
    hidden_size = 8

    def get_text_config(self):
        return self


class OddBlocks(nn.Module):
    """Blocks at a path we do not know, but one entry per configured layer: found by search."""

    def __init__(self):
        super().__init__()
        self.config = _Config()
        self.backbone = nn.Module()
        self.backbone.stages = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.heads = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))


class NoBlocks(nn.Module):
    """Nothing resembling a block list: no ModuleList with one entry per configured layer."""

    def __init__(self):
        super().__init__()
        self.config = _Config()
        self.trunk = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))


def test_unknown_layout_found_by_layer_count():
    model = OddBlocks()
    layers = find_layers(model)
    assert layers.blocks is model.backbone.stages
    assert layers.owner is model.backbone
    assert layers.path == "backbone.stages"


def test_model_without_layers_raises_naming_class_and_layers_path():
    with pytest.raises(UnsupportedModelError) as error:
        find_layers(NoBlocks())
    assert "NoBlocks" in str(error.value)
    assert "layers_path" in str(error.value)


def test_model_without_config_raises():
    with pytest.raises(UnsupportedModelError, match="Sequential"):
        find_layers(nn.Sequential(nn.Linear(4, 4)))


def test_explicit_path_overrides_and_is_checked():
    model = NoBlocks()
    layers = find_layers(model, "trunk")
    assert layers.blocks is model.trunk and layers.owner is model
    with pytest.raises(UnsupportedModelError, match="NoBlocks"):
        find_layers(model, "model.layers")
    with pytest.raises(UnsupportedModelError):
        find_layers(model, "config")  # exists, but not a ModuleList


def test_unsupported_model_error_is_a_value_error():
    assert issubclass(UnsupportedModelError, ValueError)


def test_steering_an_unsupported_model_raises_before_hooking():
    model = NoBlocks()
    vector = SteeringVector({0: torch.ones(8)})
    with pytest.raises(UnsupportedModelError, match="layers_path"):
        steer(ModelContext.of(model), [(vector, 1.0)])
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_distill_training_hook_is_mode_all_with_gradients(arch):
    """engine/distill/training.py fits a direction through its own hook: on every architecture it must add what
    the engine's mode 'all' adds and pass gradients to it. The rows are padded on both sides, so this
    also checks that the engine finds the padding mask on every architecture (Gemma 3 multimodal hands
    its language model a mask mapping; the engine reads the 2-D mask where the model is called) and
    leaves each row's first real position alone."""
    from extensions.steering.engine import distill as d
    from extensions.steering.engine.apply import Steer, steer

    name, model, _, vector = arch
    ctx = ModelContext.of(model)  # token ids are given; no tokenizer needed
    batch = d.Batch(ctx, [[5, 17, 33, 2, 99], [7, 8, 41]], [[11, 12, 13], [14]], 3)  # padded on both sides
    trainable = d.TrainableSteering(ctx, [MIDDLE])
    with torch.no_grad():
        trainable.params[MIDDLE].copy_(vector.directions[MIDDLE].reshape(-1))
    with torch.enable_grad(), trainable.applied(batch):
        ours = d.reply_logprobs(ctx, batch)
        ours[batch.reply_mask.bool()].logsumexp(-1).sum().backward()  # any scalar of the real reply positions
    with torch.no_grad(), steer(ctx, [Steer(vector, 1.0, "all")]):
        engine = d.reply_logprobs(ctx, batch)
    real = batch.reply_mask.bool()
    assert torch.allclose(ours.detach()[real], engine[real], atol=1e-4), name
    assert trainable.params[MIDDLE].grad is not None and trainable.params[MIDDLE].grad.abs().sum() > 0, name
    assert hook_count(find_layers(model)) == 0
