"""Iso-KL calibration (engine/calibration.py) and what a calibrated recipe makes and caches (methods.build_vector, PresetStore)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from extensions.steering.engine import calibration as cal
from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.context import ModelContext
from extensions.steering.engine.methods import METHODS, build_vector
from extensions.steering.engine.presets import SHIPPED_DIR, PresetStore
from extensions.steering.engine.recipe import Recipe, read_recipe

TINY_BUDGET = 0.01  # a random tiny model barely responds: even 8x its residual norm moves it by ~0.03 nats


@pytest.fixture
def tiny_budget(monkeypatch):
    monkeypatch.setattr(cal, "KL_BUDGET", TINY_BUDGET)
    return TINY_BUDGET


@pytest.fixture(scope="module")
def tiny_ctx(default_model):
    """A random 4-layer Llama with the default model's tokenizer (and chat template)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2)
    return ModelContext.of(LlamaForCausalLM(config).eval(), default_model[1])


def mean_recipe(**changes) -> Recipe:
    fields = dict(name="happy", positive=["Happy", "I am glad"], negative=["Sad", "I am upset"], method="mean")
    return Recipe(**{**fields, **changes})


def test_calibration_meets_the_budget_on_the_default_model(default_ctx):
    recipe = read_recipe(SHIPPED_DIR / "love.yaml")
    vector = METHODS["mean"].build(recipe, default_ctx, recipe.layer_indices(default_ctx.num_layers), None)
    found = cal.calibrate(default_ctx, vector, "all")
    assert abs(found.kl - cal.KL_BUDGET) <= cal.TOLERANCE * cal.KL_BUDGET
    assert found.layers == (6, 8) and 0 < found.scale < cal.MAX_RELATIVE_NORM and found.steps <= cal.MAX_STEPS
    # measured again through the probe, the scaled vector spends the budget; twice the scale spends more
    probe = cal.Probe.of(default_ctx)
    assert probe.measure(vector, found.scale, "all").kl == pytest.approx(found.kl, rel=1e-4)
    assert probe.measure(vector, 2 * found.scale, "all").kl > 1.5 * found.kl


@pytest.mark.parametrize("budget", [0.002, 0.02])
def test_calibration_meets_other_budgets_on_a_tiny_model(tiny_ctx, budget):
    vector = METHODS["mean"].build(mean_recipe(layers=[1]), tiny_ctx, [1], None)
    found = cal.calibrate(tiny_ctx, vector, "all", budget)
    assert abs(found.kl - budget) <= cal.TOLERANCE * budget and found.budget == budget


def test_generated_mode_steers_only_the_rollout(tiny_ctx):
    vector = METHODS["mean"].build(mean_recipe(layers=[1]), tiny_ctx, [1], None)
    probe = cal.Probe.of(tiny_ctx)
    point = probe.measure(vector, 1.0, "generated")
    per_position = (point.logprobs.exp() * (point.logprobs - probe.base)).sum(-1)
    assert torch.all(per_position[:, 0].abs() < 1e-5)  # the first reply token comes from the unsteered prompt
    assert float(per_position[:, 1:].mean()) > 1e-4


def test_a_dose_of_two_applies_twice_the_calibrated_scale(tiny_ctx, tiny_budget, tmp_path):
    store = PresetStore(tmp_path, shipped=None)
    recipe = mean_recipe(layers=[1], strength="auto")
    built = METHODS["mean"].build(recipe, tiny_ctx, [1], None)
    cached = store.vector(recipe, tiny_ctx)
    scale = float(store.cache_entries(recipe)[0][1]["calibration_scale"])
    assert torch.allclose(cached.directions[1], built.directions[1] * scale, rtol=1e-4)
    doubled = replace(recipe, strength=2.0)
    assert doubled.calibrated and doubled.dose == 2.0 and doubled.key() == recipe.key()  # the same cached tensor
    ids = torch.tensor([[tiny_ctx.sink_id, *tiny_ctx.tokens("Hello there, how are you?")]])
    with torch.inference_mode():
        with steer(tiny_ctx, [Steer(store.vector(doubled, tiny_ctx), doubled.strength, doubled.mode)]):
            dosed = tiny_ctx.model(input_ids=ids).logits
        with steer(tiny_ctx, [Steer(built * (2 * scale), 1.0, "all")]):
            expected = tiny_ctx.model(input_ids=ids).logits
    assert torch.allclose(dosed, expected, atol=1e-4)


def test_the_cache_records_the_calibration_and_an_auto_layer_its_choice(tiny_ctx, tiny_budget, tmp_path):
    store = PresetStore(tmp_path, shipped=None)
    recipe = mean_recipe()  # a new mean recipe: strength auto, layers auto
    assert recipe.calibrated and recipe.auto_layers and recipe.strength == 1.0
    vector = store.vector(recipe, tiny_ctx)
    [(fingerprint, meta)] = store.cache_entries(recipe)
    assert fingerprint == tiny_ctx.fingerprint and vector.layers == [int(meta["layers_chosen"])]
    candidates = recipe.layer_indices(tiny_ctx.num_layers)
    assert vector.layers[0] in candidates
    assert sorted(int(part.split(":")[0]) for part in meta["layer_scores"].split(",")) == candidates
    assert float(meta["calibration_budget"]) == tiny_budget and float(meta["calibration_seconds"]) > 0
    assert abs(float(meta["calibration_kl"]) - tiny_budget) <= cal.TOLERANCE * tiny_budget


def test_an_auto_layer_with_a_fixed_strength_is_chosen_but_not_scaled(tiny_ctx, tiny_budget):
    recipe = mean_recipe(strength=0.3)
    assert not recipe.calibrated and recipe.auto_layers
    made = build_vector(recipe, tiny_ctx)
    built = METHODS["mean"].build(recipe, tiny_ctx, list(made.calibration.layers), None)
    assert made.vector.layers == list(made.calibration.layers)
    assert torch.allclose(made.vector.directions[made.vector.layers[0]], built.directions[made.vector.layers[0]])


def test_a_fixed_recipe_is_built_as_before(tiny_ctx):
    recipe = mean_recipe(layers=[1, 2], strength=0.3)
    made = build_vector(recipe, tiny_ctx)
    assert made.calibration is None
    assert torch.equal(made.vector.directions[2], METHODS["mean"].build(recipe, tiny_ctx, [1, 2], None).directions[2])


def test_an_actadd_vector_calibrates_on_prompts_longer_than_its_rows(default_ctx):
    recipe = Recipe("a", ["I talk about gardening constantly"], ["I do not talk about gardening constantly"], method="actadd",
                    layers=[6], strength="auto")
    made = build_vector(recipe, default_ctx)
    rows = cal.Probe.of(default_ctx)._rows_for(made.vector, "actadd")
    assert made.vector.per_position and 0 < len(rows) <= len(cal.CHAT_MESSAGES) + len(cal.TEXT_OPENINGS)
    assert abs(made.calibration.kl - cal.KL_BUDGET) <= cal.TOLERANCE * cal.KL_BUDGET


def test_another_set_of_candidate_layers_is_another_cached_tensor(monkeypatch):
    from extensions.steering.engine import recipe as recipe_module

    auto, fixed = mean_recipe(layers=["auto"], strength="auto"), mean_recipe(layers=[1], strength="auto")
    keys = auto.key(), fixed.key()
    monkeypatch.setattr(recipe_module, "CANDIDATE_DEPTHS", ("10%", "50%"))
    assert auto.key() != keys[0]  # a layer chosen among other candidates may be another layer
    assert fixed.key() == keys[1]  # a fixed layer does not depend on them


def test_another_budget_recalibrates_new_presets_and_leaves_the_shipped_ones_as_they_are(monkeypatch):
    """The shipped presets have fixed strengths and layers: a change of the KL budget (issue 21) leaves their
    tensors and strengths as they were, while a new preset's cached tensor (strength auto) is made again."""
    from extensions.steering.engine import recipe as recipe_module

    shipped = [read_recipe(path) for path in sorted(SHIPPED_DIR.glob("*.yaml"))]
    new = mean_recipe(strength="auto")
    keys = [r.key() for r in shipped], new.key()
    monkeypatch.setattr(recipe_module, "KL_BUDGET", 2 * recipe_module.KL_BUDGET)
    assert new.key() != keys[1]
    assert [r.key() for r in shipped] == keys[0] and len(shipped) >= 9
    assert not any(r.calibrated or r.auto_layers for r in shipped)
