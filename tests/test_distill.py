"""Distilling a system prompt into a vector (engine/distill/), on the real default model.

Small but real: a few optimisation steps on a few training messages, measured on held-out ones.
"""
from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from extensions.steering import characters, cli, reports
from extensions.steering.engine import distill as d
from extensions.steering.engine import metrics
from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.distill import training
from extensions.steering.engine.distill.recipes import distill_recipe
from extensions.steering.engine.methods import build_vector
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.recipe import Recipe, StandIn, read_recipe
from extensions.steering.engine.validation import PresetError
from extensions.steering.engine.vector import SteeringVector

SYSTEM = "You are a pirate. Always talk like a pirate: say 'Arr', 'matey' and 'ahoy' in every reply."
FAST = dict(reply_tokens=8, batch_size=8)


KL_RECIPE = dict(steps=6, messages=3, lr=0.1, reply_tokens=6, batch_size=8)
CONTRAST_RECIPE = dict(via="contrast", messages=2, reply_tokens=4)


@pytest.fixture(scope="module")
def distilled(default_ctx):
    """A KL-distilled vector from 3 training messages and 6 steps at layer 6."""
    options = dict(KL_RECIPE)
    return d.distill(default_ctx, SYSTEM, [6], "kl", messages=d.training_messages(options.pop("messages")), **options)


@pytest.fixture(scope="module")
def contrasted(default_ctx):
    return d.distill(default_ctx, SYSTEM, [6, 9], "contrast", messages=d.training_messages(2), reply_tokens=4)


def evaluation(**numbers) -> d.Evaluation:
    """An Evaluation with the given numbers, nan (or nothing) for the rest: what a stubbed measurement returns."""
    nan = {f.name: float("nan") for f in fields(d.Evaluation) if f.name != "examples"}
    return d.Evaluation(**{**nan, "metric": "sentiment", "instead": None, **numbers})


# -- messages --------------------------------------------------------------------------------------
def test_held_out_messages_are_fixed_and_never_trained_on():
    messages = d.load_messages()
    train, held = d.split_messages(messages)
    assert len(messages) >= 30 and len(held) == len(messages) // 3
    assert not set(train) & set(held) and set(train) | set(held) == set(messages)
    assert d.held_out_messages() == held and d.training_messages() == train
    assert d.held_out_messages(2) == held[:2] and d.split_messages(messages) == (train, held)


def test_recipes_build_from_training_messages_only(default_ctx, monkeypatch):
    seen = {}

    def fake(ctx, system, layers, **options):
        seen.update(options, system=system, layers=layers)
        return SteeringVector({layers[0]: torch.ones(1, 576)})

    monkeypatch.setattr(training, "distill", fake)
    recipe = distill_recipe("p", SYSTEM, [6], messages=5, steps=3, instead="Jack is a sailor.")
    build_vector(recipe, default_ctx)
    assert seen["messages"] == d.training_messages(5) and seen["steps"] == 3 and seen["via"] == "kl"
    assert seen["instead"] == "Jack is a sailor."
    assert not set(seen["messages"]) & set(d.held_out_messages())


# -- the trainable helper is the engine's mode 'all' --------------------------------------------------------
def test_training_hook_matches_the_engines_mode_all(default_ctx):
    ctx = default_ctx
    messages = d.training_messages(3)
    prompts = [d.chat_ids(ctx, m, None) for m in messages]
    replies = [[ctx.tokenizer.eos_token_id] * n for n in (1, 3, 2)]  # ragged replies: padding on both sides
    batch = d.Batch(ctx, prompts, replies, 3)
    direction = torch.randn(576, generator=torch.Generator().manual_seed(0)) * 3
    trainable = d.TrainableSteering(ctx, [4, 9])
    with torch.no_grad():
        for p in trainable.params.values():
            p.copy_(direction)
    with torch.inference_mode(), trainable.applied(batch):
        ours = d.reply_logprobs(ctx, batch)
    vector = trainable.vector({})
    with torch.inference_mode(), steer(ctx, [Steer(vector, 1.0, "all")]):
        engine = d.reply_logprobs(ctx, batch)
    with torch.inference_mode():
        plain = d.reply_logprobs(ctx, batch)
    real = batch.reply_mask.bool()
    assert torch.allclose(ours[real], engine[real], atol=1e-4)
    assert not torch.allclose(ours[real], plain[real], atol=1e-2)
    assert not trainable._handles  # removed


# -- distilling and measuring ---------------------------------------------------------------------------
def test_kl_distillation_recovers_part_of_the_prompt_on_held_out_messages(default_ctx, distilled):
    held = d.held_out_messages(3)
    with_s = [d.chat_ids(default_ctx, m, SYSTEM) for m in held]
    without = [d.chat_ids(default_ctx, m, None) for m in held]
    kl_without, kl_steered = d.kl_divergences(default_ctx, with_s, without, [Steer(distilled, 1.0, "all")], **FAST)
    assert min(kl_without) > 0
    assert d.recovery(kl_without, kl_without) == 0  # no steering recovers nothing
    assert d.recovery(kl_without, kl_steered) > 0
    assert distilled.layers == [6] and distilled.residual_norms[6] > 0


def test_evaluate_reports_every_number(default_ctx, distilled):
    ctx = default_ctx
    held = d.held_out_messages(1)
    result = d.evaluate(ctx, SYSTEM, distilled, 1.0, "all", held, reply_tokens=4, behaviour_tokens=4, ttft_rounds=1)
    assert result.held_out == 1 and result.metric == "pirate"
    assert result.kl_recovery == pytest.approx(1 - result.kl_steered / result.kl_without)
    with_s = [len(d.chat_ids(ctx, m, SYSTEM)) for m in held]
    without = [len(d.chat_ids(ctx, m, None)) for m in held]
    assert result.tokens_saved == with_s[0] - without[0]
    assert result.system_tokens == len(ctx.tokenizer(SYSTEM, add_special_tokens=False)["input_ids"])
    assert result.ttft_with_system_ms > 0 and result.ttft_ratio == pytest.approx(result.ttft_steered_ms / result.ttft_with_system_ms)
    for key in ("behaviour_with_system", "behaviour_without", "behaviour_steered"):
        assert 0 <= getattr(result, key) <= 1
    assert result.examples[0].message == held[0] and result.to_dict()["examples"][0]["message"] == held[0]
    header, rows = reports.table_rows([("p", result)])
    assert header[2] == "KL recovery" and rows[0][0] == "p" and len(rows[0]) == len(header)
    assert "| p | 1 |" in reports.markdown_table([("p", result)])


def test_kl_fitting_works_inside_inference_mode(default_ctx):
    # a host may build presets inside torch.inference_mode(); fitting needs autograd all the same
    options = dict(steps=1, messages=d.training_messages(1), reply_tokens=2)
    flags = [p.requires_grad for p in default_ctx.model.parameters()]
    plain = d.distill(default_ctx, SYSTEM, [6], **options)
    with torch.inference_mode():
        inside = d.distill(default_ctx, SYSTEM, [6], **options)
    assert torch.equal(plain.directions[6], inside.directions[6]) and plain.norm(6) > 0
    assert [p.requires_grad for p in default_ctx.model.parameters()] == flags  # the model's own flags are restored


def test_contrast_and_direct_methods(default_ctx, contrasted):
    direct = d.distill(default_ctx, SYSTEM, [6], "direct")
    assert contrasted.layers == [6, 9] and direct.layers == [6] and contrasted.norm(6) > 0 and direct.norm(6) > 0
    with pytest.raises(ValueError, match="empty"):
        d.distill(default_ctx, " ", [6])
    with pytest.raises(ValueError, match="unknown distillation method"):
        d.distill(default_ctx, SYSTEM, [6], "magic")


# -- recipes ----------------------------------------------------------------------------------------------
def test_the_recipe_round_trips_through_the_preset_store(default_ctx, distilled, contrasted, tmp_path):
    store = PresetStore(tmp_path / "presets", shipped=None)
    recipe = distill_recipe("pirate-distilled", SYSTEM, [6], metric="pirate", **KL_RECIPE)
    store.save(recipe, distilled, default_ctx)
    again = store.recipe("pirate-distilled")
    assert again == recipe and again.method == "distill" and again.mode == "all" and again.options.system == SYSTEM
    cached = store.vector("pirate-distilled", default_ctx)
    assert torch.equal(cached.directions[6], distilled.directions[6])
    # a store without the tensors rebuilds from the recipe alone (any model); deterministic (greedy, no sampling)
    cheap = distill_recipe("pirate-contrast", SYSTEM, [6, 9], **CONTRAST_RECIPE)
    fresh = PresetStore(tmp_path / "elsewhere", shipped=None)
    fresh.save(cheap)
    rebuilt = fresh.vector("pirate-contrast", default_ctx)
    for layer in (6, 9):
        assert torch.allclose(rebuilt.directions[layer], contrasted.directions[layer], atol=1e-4)
    assert fresh.cached_vector(cheap, default_ctx) is not None


def test_bad_distill_recipes_are_refused(tmp_path):
    with pytest.raises(PresetError, match="distill.system"):
        Recipe(name="x", method="distill", options={})
    with pytest.raises(PresetError, match="unknown distill option"):
        Recipe(name="x", method="distill", options={"system": "Hi", "colour": "red"})
    with pytest.raises(PresetError, match="distill.steps"):
        distill_recipe("x", "Hi", steps=-1)
    with pytest.raises(PresetError, match="distill.via"):
        distill_recipe("x", "Hi", via="magic")
    with pytest.raises(PresetError, match="distill.instead must be text"):
        distill_recipe("x", "Hi", instead=["a list"])


def test_shipped_distill_recipes_are_valid():
    from extensions.steering.engine.presets import SHIPPED_DIR

    found = [read_recipe(p) for p in sorted(SHIPPED_DIR.glob("*.yaml"))]
    distilled = [r for r in found if r.method == "distill"]
    assert distilled, "no shipped distill recipe"
    for recipe in distilled:
        assert recipe.options.system and recipe.mode == "all"
    # every shipped persona names the system prompt it stands in for and a behaviour score (README's KL column)
    for recipe in found:
        target = recipe.target()
        assert target.system and target.metric, recipe.name
        assert callable(metrics.metric(target.metric).score)


def test_prompt_pair_recipes_name_the_prompt_they_stand_in_for():
    recipe = Recipe(name="k", positive=["Kind"], negative=["Cruel"], method="mean", stands_in_for={"system": "Be kind.", "metric": "sentiment"})
    assert recipe.target() == StandIn("Be kind.", "sentiment")
    assert Recipe(name="k", positive=["Kind"], negative=["Cruel"], method="mean").target() == StandIn()
    # naming the prompt does not change the tensors, so it does not invalidate a cached vector
    assert recipe.key() == Recipe(name="k", positive=["Kind"], negative=["Cruel"], method="mean").key()
    with pytest.raises(PresetError, match="stands_in_for.system must be text"):
        Recipe(name="k", positive=["Kind"], negative=["Cruel"], method="mean", stands_in_for={"system": 3})
    pirate = distill_recipe("p", SYSTEM, [6], metric="pirate")
    assert pirate.target() == StandIn(SYSTEM, "pirate")
    assert pirate.key() != distill_recipe("p", SYSTEM + " Arr.", [6], metric="pirate").key()
    # the metric only scores the vector: changing it keeps the cached tensors
    assert pirate.key() == distill_recipe("p", SYSTEM, [6], metric="sentiment").key() == distill_recipe("p", SYSTEM, [6]).key()


def test_evaluate_many_shares_one_baseline(default_ctx, distilled):
    ctx = default_ctx
    held = d.held_out_messages(2)
    results = dict(d.evaluate_many(ctx, SYSTEM, [("none", []), ("vector", [Steer(distilled, 1.0, "all")])], held,
                                   reply_tokens=4, behaviour_tokens=4, ttft_rounds=1))
    assert results["none"].kl_recovery == 0 and results["none"].behaviour_steered == results["none"].behaviour_without
    assert results["vector"].kl_without == results["none"].kl_without > 0
    assert results["vector"].kl_steered != results["none"].kl_steered
    assert results["vector"].ttft_with_system_ms == results["none"].ttft_with_system_ms
    # a character's one-line context sent in place of S
    line = "Jack is a sailor talking with You."
    (name, result), = d.evaluate_many(ctx, SYSTEM, [("vector", [Steer(distilled, 1.0, "all")])], held[:1],
                                      reply_tokens=2, behaviour_tokens=2, ttft_rounds=1, instead=line)
    assert result.instead == line and result.prompt_tokens_without == len(d.chat_ids(ctx, held[0], line))
    assert result.tokens_saved == len(d.chat_ids(ctx, held[0], SYSTEM)) - len(d.chat_ids(ctx, held[0], line))


def test_read_character_fills_placeholders(tmp_path):
    path = tmp_path / "Kind.yaml"
    path.write_text("name: Kindly\ncontext: '{{char}} is kind to {{user}}.'\ngreeting: Hi\n")
    assert characters.read_character(path) == ("Kindly", "Kindly is kind to You.")
    (tmp_path / "Empty.json").write_text('{"name": "E", "context": ""}')
    with pytest.raises(ValueError, match="no context"):
        characters.read_character(tmp_path / "Empty.json")


def test_metric_inferred_from_the_prompt():
    assert metrics.infer_metric("Reply only in JSON.") == "json"
    assert metrics.infer_metric(SYSTEM) == "pirate"
    assert metrics.infer_metric("Be nice and helpful.") == "sentiment"
    assert metrics.metric("pirate").score("Arr, matey!") == 1.0
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.metric("nope")


# -- command line -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_distill_and_evaluate(tmp_path, capsys, monkeypatch):
    # the real build (direct: one forward); the measurement is tested above, here it is stubbed
    calls = []

    def fake_evaluate_many(ctx, system, candidates, messages, metric, **options):
        calls.append(dict(system=system, candidates=candidates, messages=messages, metric=metric, **options))
        return [(name, evaluation(held_out=len(messages), kl_recovery=0.5, metric=metric or metrics.infer_metric(system)))
                for name, _ in candidates]

    monkeypatch.setattr(d, "evaluate_many", fake_evaluate_many)
    presets = str(tmp_path / "presets")
    assert cli.main(["distill", "pirate-direct", "--system", SYSTEM, "--via", "direct", "--layer", "6", "--presets", presets]) == 0
    assert "saved pirate-direct" in capsys.readouterr().out
    assert cli.main(["evaluate", "pirate-direct", "--held-out", "1", "--ttft-rounds", "1", "--behaviour-tokens", "4", "--presets", presets]) == 0
    out = capsys.readouterr().out
    assert "| KL recovery |" in out and "| pirate-direct | 1 | 0.5 |" in out
    (seen,) = calls
    assert seen["system"] == SYSTEM and seen["messages"] == d.held_out_messages(1) and seen["behaviour_tokens"] == 4
    ((name, (steer_,)),) = seen["candidates"]
    assert name == "pirate-direct" and steer_.strength == d.DIRECT_STRENGTH and steer_.mode == "all"
    # shipped prompt-pair presets name the prompt they stand in for; presets for one prompt share one baseline
    calls.clear()
    assert cli.main(["evaluate", "kind", "kind:0.2", "json", "--held-out", "1", "--presets", presets]) == 0
    assert [c["system"] for c in calls] == ["Be nice and helpful.", "Reply only with a JSON object, no other text."]
    assert [c["metric"] for c in calls] == ["sentiment", "starts_json"]
    assert [n for n, _ in calls[0]["candidates"]] == ["kind", "kind:0.2"] and calls[0]["candidates"][1][1][0].strength == 0.2
    assert cli.main(["evaluate", "kind", "--instead", "Kind Assistant is an AI assistant talking with You.", "--presets", presets]) == 0
    assert calls[-1]["instead"] == "Kind Assistant is an AI assistant talking with You." and calls[0]["instead"] is None
    # a recipe that names no system prompt needs --system
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\npositive: [Happy]\nnegative: [Sad]\nmethod: mean\nlayers: [6]\nstrength: 0.3\n")
    assert cli.main(["evaluate", str(plain), "--held-out", "1", "--presets", presets]) == 2
    assert "--system" in capsys.readouterr().err
    assert cli.main(["distill", "x", "--presets", presets]) == 2  # --system or --character is required
    assert cli.main(["distill", "x", "--system", "  ", "--presets", presets]) == 2
    assert "--system is empty" in capsys.readouterr().err


def test_a_template_without_a_system_role_gets_s_in_the_first_user_message(default_model):
    # Gemma 1/2 templates raise on a system message; S then opens the user's message, as chat front ends do
    import copy

    from extensions.steering.engine.context import ModelContext

    tokenizer = copy.deepcopy(default_model[1])
    ctx = ModelContext.of(default_model[0], tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    with_s = tokenizer.decode(d.chat_ids(ctx, "Hi there", "Be kind."))
    assert with_s == "<start_of_turn>user\nBe kind.\n\nHi there<end_of_turn>\n<start_of_turn>model\n"
    assert tokenizer.decode(d.chat_ids(ctx, "Hi there", None)) == "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
    assert tokenizer.decode(d.chat_ids(ctx, "Hi there", None, "empty")).endswith("user\nHi there<end_of_turn>\n<start_of_turn>model\n")
    tokenizer.chat_template = "{{ raise_exception('broken') }}"
    with pytest.raises(ValueError, match="cannot render a user message: broken"):
        d.chat_ids(ctx, "Hi there", None)


def test_distil_a_half_precision_model(default_model):
    # the webui loads models in bf16/fp16: fitting keeps float32 directions, the forward runs in the model's dtype
    import copy
    import math

    from extensions.steering.engine.context import ModelContext

    ctx = ModelContext.of(copy.deepcopy(default_model[0]).to(torch.bfloat16), default_model[1])
    vector = d.distill(ctx, SYSTEM, [6], steps=2, messages=d.training_messages(2), reply_tokens=3)
    assert vector.directions[6].dtype == torch.float32 and bool(torch.isfinite(vector.directions[6]).all()) and vector.norm(6) > 0
    result = d.evaluate(ctx, SYSTEM, vector, messages=d.held_out_messages(1), reply_tokens=3, behaviour_tokens=3, ttft_rounds=1)
    assert math.isfinite(result.kl_recovery) and result.kl_without > 0
