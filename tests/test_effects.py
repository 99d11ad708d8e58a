"""engine/effects (same-seed steered vs unsteered completions, scored, with the perplexity ratio) and the
metric registry, on a tiny random Llama and a byte tokenizer: the fast tier."""
from __future__ import annotations

import math

import pytest
import torch

from extensions.steering.engine import metrics
from extensions.steering.engine.apply import Steer
from extensions.steering.engine.context import ModelContext
from extensions.steering.engine.effects import Effect, EffectMeter, Samples, sample, sample_padded, sweep
from extensions.steering.engine.generation import Sampling, sample_batch
from extensions.steering.engine.metrics import next_token_logprobs, perplexity
from extensions.steering.engine.tokens import prompt_ids
from extensions.steering.engine.vector import SteeringVector
from tests.test_presets import _byte_tokenizer, tiny_llama

SAMPLING = Sampling(max_new_tokens=6)
PROMPTS = ["I hate you because", "The weather today"]


@pytest.fixture(scope="module")
def ctx():
    return ModelContext.of(tiny_llama(hidden=32, layers=3), _byte_tokenizer())


def vector(ctx, scale: float = 1.0) -> SteeringVector:
    direction = torch.randn(ctx.hidden_size, generator=torch.Generator().manual_seed(1))
    return SteeringVector({1: direction / direction.norm()}, {1: 1.0}) * scale


def big_steer(ctx) -> list[Steer]:
    return [Steer(vector(ctx), 50.0, "all")]


def share_of_e(text: str) -> float:
    return text.count("e") / len(text) if text else 0.0


def test_samples_are_the_seeded_batch_with_each_perplexity_under_the_unsteered_model(ctx):
    ids = prompt_ids(ctx, PROMPTS[0])
    found = sample(ctx, ids, [], 3, 7, SAMPLING)
    assert list(found.texts) == sample_batch(ctx, ids, 3, 7, SAMPLING)
    assert list(found.perplexities) == [perplexity(ctx, ids, t) for t in found.texts]
    steered = sample(ctx, ids, big_steer(ctx), 3, 7, SAMPLING)
    assert steered.texts != found.texts  # the steering was on while sampling ...
    assert list(steered.perplexities) == [perplexity(ctx, ids, t) for t in steered.texts]  # ... and off while reading
    other = prompt_ids(ctx, PROMPTS[1])
    read_after = sample(ctx, ids, [], 3, 7, SAMPLING, reference=other)
    assert read_after.texts == found.texts and list(read_after.perplexities) == [perplexity(ctx, other, t) for t in found.texts]
    assert sample(ctx, ids, [], 3, 7, SAMPLING, fluency=False).perplexities == ()


def test_an_effect_compares_the_same_seeds_and_keeps_the_unsteered_side(ctx, monkeypatch):
    meter = EffectMeter(ctx, SAMPLING, n=2, seed=3)
    prompts = [prompt_ids(ctx, p) for p in PROMPTS]
    calls = []
    real = sample_batch

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr("extensions.steering.engine.effects.sample_batch", counted)
    nothing = meter.measure(prompts, [Steer(vector(ctx), 0.0, "all")])
    assert nothing.steered.texts == nothing.unsteered.texts  # strength 0, same seeds: the same completions
    assert nothing.perplexity_ratio == 1.0 and nothing.scores(share_of_e)[0] == nothing.scores(share_of_e)[1]
    assert len(calls) == 4  # two prompts, each unsteered and steered
    pushed = meter.measure(prompts, big_steer(ctx))
    assert len(calls) == 6  # the unsteered completions were kept
    assert pushed.unsteered == nothing.unsteered and pushed.steered.texts != pushed.unsteered.texts
    assert len(pushed.steered.texts) == 4 and pushed.perplexity_ratio == pushed.steered.perplexity / pushed.unsteered.perplexity
    # the steered side may be given other ids (a system message), read after the plain prompt
    given = [prompt_ids(ctx, "Be brief. " + p) for p in PROMPTS]
    told = meter.measure(prompts, [], given)
    assert told.steered.texts[:2] == tuple(sample_batch(ctx, given[0], 2, 3, SAMPLING))
    assert told.steered.perplexities[0] == perplexity(ctx, prompts[0], told.steered.texts[0])
    with pytest.raises(ValueError, match="given has 1 prompts for 2"):
        meter.measure(prompts, [], given[:1])


def test_samples_add_and_summarise():
    found = Samples(("ee", "ab"), (2.0, float("nan"))) + Samples(("e",), (4.0,))
    assert found.texts == ("ee", "ab", "e") and found.score(share_of_e) == pytest.approx(2 / 3)
    assert found.perplexity == 3.0  # the completion with nothing to read is left out
    assert math.isnan(Samples().perplexity) and math.isnan(Samples().score(share_of_e))
    assert Effect(Samples(("a",), (2.0,)), Samples(("b",), (5.0,))).perplexity_ratio == 2.5


def test_padded_sampling_scores_every_prompt_in_one_batch(ctx):
    prompts = [prompt_ids(ctx, p) for p in PROMPTS]
    found = sample_padded(ctx, prompts, [], 2, 0, SAMPLING)
    assert len(found.texts) == 4 and all(p > 0 for p in found.perplexities)
    assert sample_padded(ctx, prompts, [], 2, 0, SAMPLING) == found  # seeded
    assert sample_padded(ctx, prompts, big_steer(ctx), 2, 0, SAMPLING).texts != found.texts


def test_a_padded_batch_reads_each_reply_as_it_reads_alone(ctx):
    """metrics.next_token_logprobs: prompts padded on the left, replies on the right, each row read as if alone; its
    log-probabilities of a reply's tokens are the reply's perplexity after its prompt."""
    prompts = [prompt_ids(ctx, p) for p in PROMPTS]
    texts = [" it rains", " ok"]
    replies = [ctx.tokens(t) for t in texts]
    width, last = max(map(len, prompts)), max(map(len, replies))
    rows = [[ctx.pad_id] * (width - len(p)) + p + r + [ctx.pad_id] * (last - len(r)) for p, r in zip(prompts, replies)]
    mask = [[0] * (width - len(p)) + [1] * (len(p) + len(r)) + [0] * (last - len(r)) for p, r in zip(prompts, replies)]
    with torch.inference_mode():
        batch = next_token_logprobs(ctx, torch.tensor(rows), torch.tensor(mask), last)
        for i, (p, r, text) in enumerate(zip(prompts, replies, texts)):
            alone = next_token_logprobs(ctx, torch.tensor([p + r]), torch.ones(1, len(p) + len(r), dtype=torch.long), len(r))
            assert torch.allclose(batch[i, : len(r)], alone[0], atol=1e-5)
            read = alone[0].gather(-1, torch.tensor(r)[:, None])
            assert math.exp(-float(read.mean())) == pytest.approx(perplexity(ctx, p, text), rel=1e-5)


def test_sweep_grid_is_one_seeded_completion_per_seed_per_cell(ctx):
    ids = prompt_ids(ctx, PROMPTS[0])
    seen, guarded = [], []

    class Guard:
        def __enter__(self):
            guarded.append(1)

        def __exit__(self, *exc):
            return None

    cells = sweep(ctx, lambda layer: vector(ctx), "all", ids, [1], [0.0, 50.0], [4, 5], SAMPLING, share_of_e,
                  lambda done, total, layer, strength: seen.append((done, total, layer, strength)), Guard)
    assert [(c.layer, c.strength) for c in cells] == [(1, 0.0), (1, 50.0)]
    assert cells[0].texts == (sample_batch(ctx, ids, 1, 4, SAMPLING)[0], sample_batch(ctx, ids, 1, 5, SAMPLING)[0])
    assert cells[0].effect == pytest.approx(sum(map(share_of_e, cells[0].texts)) / 2)
    assert cells[1].texts != cells[0].texts
    assert seen == [(0, 4, 1, 0.0), (1, 4, 1, 0.0), (2, 4, 1, 50.0), (3, 4, 1, 50.0)] and len(guarded) == 4


# -- the metric registry -------------------------------------------------------------------------------
def test_every_metric_is_registered_once_with_what_it_measures_and_its_direction():
    assert {"sentiment", "french", "spanish", "json", "starts_json", "disclaimer", "words", "pirate",
            "capitals", "bullets", "numbered", "emoji", "exclaim", "questions", "readable"} <= set(metrics.METRICS)
    for name, found in metrics.METRICS.items():
        assert found.name == name and found.measures and found.better in ("higher", "lower") and callable(found.score)
    assert metrics.metric("words").arrow == "↓" and metrics.metric("pirate").arrow == "↑"
    assert metrics.metric("capitals").score("ABcd") == 0.5 and metrics.metric("spanish").score("el perro y the cat") == pytest.approx(2 / 3)
    assert metrics.metric("bullets").score("Tips:\n- one\n- two") == 1.0 and metrics.metric("numbered").score("- one") == 0.0
    assert metrics.metric("exclaim").score("Go! Now!") == 1.0 and metrics.metric("questions").score("Why?") == 1.0


def test_registering_twice_or_asking_for_an_unknown_metric_is_refused(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    added = metrics.register("loudness", lambda text: float(text.count("!")), "exclamation marks", "lower")
    assert metrics.metric("loudness") is added and added.score("a!!") == 2.0
    with pytest.raises(ValueError, match="registered already"):
        metrics.register("loudness", len, "again")
    with pytest.raises(ValueError, match="better must be higher or lower"):
        metrics.register("odd", len, "characters", "sideways")
    with pytest.raises(ValueError, match="unknown metric 'nope'; choose one of sentiment"):
        metrics.metric("nope")


def test_a_metric_whose_package_is_missing_says_which(monkeypatch):
    missing = metrics.Metric("vibes", len, "characters", requires="no_such_package_here")
    assert not missing.available
    with pytest.raises(ValueError, match="the vibes metric needs the no_such_package_here package"):
        missing.check_available()
    assert metrics.metric("sentiment").requires == "vaderSentiment"


def test_the_sweep_offers_sentiment_only_where_it_can_be_computed_and_says_why_not(monkeypatch):
    from extensions.steering.ui import sweep

    assert sweep.effect_scorer(sweep.METRIC_SENTIMENT, "")[0] is metrics.metric("sentiment").score  # the registry's, not a copy
    monkeypatch.setattr(metrics.Metric, "available", property(lambda self: self.requires is None))
    assert sweep.sweep_metric_choices() == [sweep.METRIC_TOPIC]
    with pytest.raises(ValueError, match="needs the vaderSentiment package .*; choose topic words instead"):
        sweep.effect_scorer(sweep.METRIC_SENTIMENT, "")
