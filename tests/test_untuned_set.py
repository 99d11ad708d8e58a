"""The held-out set of issue 12 (benchmarks/untuned_set.yaml) parses and is complete (no model is loaded), and
benchmarks/chat_dose.py reads its sets and measures its ladder's fluency (that on the default model)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from extensions.steering.engine.methods import METHODS
from extensions.steering.engine.recipe import Recipe

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def untuned():
    sys.path.insert(0, str(BENCHMARKS))  # the benchmarks import their helpers as `common`
    try:
        import untuned
    finally:
        sys.path.remove(str(BENCHMARKS))
    return untuned


def test_the_set_has_twelve_contrasts_six_personas_and_the_weddings_reference(untuned):
    data = untuned.load_set()  # checks every entry's metric, words, direction, prompts
    contrasts, personas = data["contrasts"], data["personas"]
    assert len(contrasts) >= 12 and len(personas) >= 6
    assert {"mood", "topic", "style", "language", "format"} <= {c["kind"] for c in contrasts}
    assert [r["positive"] for r in data["reference"]] == ["I talk about weddings constantly"]
    names = [e["name"] for group in ("contrasts", "reference", "personas") for e in data[group]]
    assert len(names) == len(set(names))
    assert "before any tuning" in untuned.SET.read_text().split("\n\n")[0].lower()


def test_metrics_score_what_they_name(untuned):
    spanish = untuned.score_of({"metric": "spanish"})
    assert spanish("Hola, ¿cómo estás? Estoy muy bien, gracias por la pregunta.") > 0.8
    assert spanish("I am fine, thank you for the question.") == 0.0
    bullets = untuned.score_of({"metric": "bullets"})
    assert bullets("Sure:\n- one\n- two") == 1.0 and bullets("One - two - three.") == 0.0
    assert untuned.score_of({"metric": "emoji"})("Great day 😀") == 1.0
    assert untuned.score_of({"metric": "words", "words": ["cat"]})("The cat sat.") == 1.0


def test_verdicts_follow_the_issue_thresholds(untuned):
    assert untuned.verdict({"metric": "sentiment", "direction": "down"}, 0.3, 0.05)[2]
    assert not untuned.verdict({"metric": "sentiment", "direction": "up"}, 0.3, 0.45)[2]
    assert untuned.verdict({"metric": "words", "direction": "up"}, 0.0, 0.3)[2]
    assert not untuned.verdict({"metric": "words", "direction": "up", "threshold": 0.5}, 0.0, 0.4)[2]
    assert untuned.verdict({"metric": "spanish", "direction": "up"}, 0.0, 0.5)[2]


def test_the_second_set_is_fresh_and_parses(untuned):
    path = BENCHMARKS / "untuned_set_2.yaml"
    data = untuned.load_set(path)
    assert len(data["contrasts"]) == 12 and {"mood", "topic", "style", "language", "format"} <= {c["kind"] for c in data["contrasts"]}
    first = untuned.load_set()
    named = {c["name"] for c in first["contrasts"] + first["reference"]}
    assert not named & {c["name"] for c in data["contrasts"]}  # none of the first set's contrasts again
    assert "before any number was measured" in path.read_text().split("\n\n")[0].lower()


@pytest.fixture(scope="module")
def chat_dose(untuned):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import chat_dose
    finally:
        sys.path.remove(str(BENCHMARKS))
    return chat_dose


@pytest.mark.parametrize("name", ["tuning/tuning_set.yaml", "untuned_set.yaml", "untuned_set_2.yaml"])
def test_chat_dose_measures_every_contrast_of_a_set_in_chat_form(untuned, chat_dose, name):
    """benchmarks/chat_dose.py: a held-out set's contrasts (raw ones too) and the tuning set's, each with the set's
    chat prompts in the chat template and a metric untuned.py scores and judges."""
    path = BENCHMARKS / name
    raw = untuned.yaml.safe_load(path.read_text())
    specs = chat_dose.chat_contrasts(path, 2)
    assert [s["name"] for s in specs] == [c["name"] for c in raw["contrasts"]]
    for spec in specs:
        assert spec["chat"] and spec["prompts"] == raw.get("chat_prompts", raw.get("prompts"))[:2]
        assert -1.0 <= untuned.score_of(spec)("Ahoy matey, the football match was great! Bonjour, c'est très bien.") <= 1.0


def test_chat_dose_judges_the_tuning_sets_own_metrics(untuned, chat_dose):
    specs = {s["name"]: s for s in chat_dose.chat_contrasts(BENCHMARKS / "tuning" / "tuning_set.yaml", None)}
    assert untuned.verdict(specs["french"], 0.1, 0.5)[2] and not untuned.verdict(specs["french"], 0.1, 0.45)[2]  # >= 50 % of function words
    assert untuned.score_of(specs["pirate"])("Arr, ahoy matey!") == 1.0 and untuned.score_of(specs["pirate"])("Hello there.") == 0.0
    assert untuned.score_of(specs["capitals"])("I AM SHOUTING") == 1.0 and untuned.score_of(specs["numbered"])("Steps:\n1. Go") == 1.0
    assert untuned.verdict(specs["gloomy"], 0.5, 0.2)[2]  # gloomy moves sentiment down


def test_the_ladder_reads_no_steering_as_fluent_as_the_unsteered_replies(chat_dose, default_ctx):
    recipe = Recipe(name="happy", positive=["Happy", "I am glad"], negative=["Sad", "I am upset"], method="mean")
    vector = METHODS["mean"].build(recipe, default_ctx, [10], None)
    fluency = chat_dose.ChatFluency(default_ctx)
    assert fluency(vector, 0.0, "all") == 1.0
    assert fluency(vector, 50.0, "all") != 1.0  # a vector far beyond any budget changes the replies


def test_a_loop_is_a_reply_whose_trigrams_repeat(chat_dose):
    assert chat_dose.repeats([1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]) > chat_dose.LOOP
    assert chat_dose.repeats(list(range(12))) == 0.0 and chat_dose.repeats([7, 7]) == 0.0


def test_the_effect_climb_stops_where_the_behaviour_shows_within_the_bound(chat_dose):
    """benchmarks/chat_dose.py --stop (docs/chat-dose.md, sixth round): the first budget whose check replies moved,
    unless their perplexity passed the bound on the way; the engine's budget when nothing moved within it."""
    ladder = lambda *points: {budget: {"moved": moved, "perplexity_ratio": ratio} for budget, moved, ratio in points}
    climb = ladder(("0.25", False, 1.3), ("0.35", True, 1.47), ("0.5", True, 1.58))
    assert chat_dose.effect_stop(climb, 1.5) == 0.35
    assert chat_dose.effect_stop(ladder(("0.25", False, 1.6), ("0.35", True, 1.4)), 1.5) == 0.25  # the bound ends it first
    assert chat_dose.effect_stop(ladder(("0.25", False, 1.0), ("0.35", False, 1.1)), 2) == 0.25  # nothing moved
    assert chat_dose.effect_stop(ladder(("1", True, 1.2), ("0.5", False, 1.1)), 2) == 1.0  # read in budget order


def test_the_check_replies_are_judged_by_the_held_out_bar(chat_dose):
    from extensions.steering.engine.feasibility import behaviour_of

    mood, topic = behaviour_of("Furious", "Peaceful"), behaviour_of("The ocean", "The desert")
    assert mood.kind == "mood" and mood.direction == -1 and topic.kind == "topic"
    assert chat_dose.effect_moved(mood, 0.8, 0.55) and not chat_dose.effect_moved(mood, 0.8, 0.65)
    assert chat_dose.effect_moved(topic, 0.0, 0.5) and not chat_dose.effect_moved(topic, 0.0, 0.25)  # 2 of 4, not 1 of 4
    assert not chat_dose.effect_moved(topic, 0.25, 0.45) and chat_dose.effect_moved(topic, 0.25, 0.5)  # 25 points up, too


def test_a_stronger_opening_at_boost_one_is_the_plain_greedy_reply(chat_dose, default_ctx):
    """chat_dose.py --opening measures a schedule with its own greedy loop: at boost 1 it must give exactly the
    greedy reply the other measurements take, and a boost must change it."""
    from extensions.steering.engine.apply import Steer
    from extensions.steering.engine.effects import EffectMeter
    from extensions.steering.engine.generation import Sampling
    from extensions.steering.engine.tokens import prompt_ids

    spec = next(s for s in chat_dose.chat_contrasts(BENCHMARKS / "tuning" / "tuning_set.yaml", 1) if s["name"] == "football")
    recipe = chat_dose.new_recipe(spec)
    built = chat_dose.methods.build_vector(recipe, default_ctx)
    ids = prompt_ids(default_ctx, spec["prompts"][0], True)
    meter = EffectMeter(default_ctx, Sampling(max_new_tokens=24, temperature=0), 1, 0)
    plain = meter.steered(ids, [Steer(built.vector, recipe.strength, recipe.mode)]).texts[0]
    assert chat_dose.opening_reply(default_ctx, ids, built.vector, recipe.strength, recipe.mode, 1.0, 8, 24) == plain
    assert chat_dose.opening_reply(default_ctx, ids, built.vector, recipe.strength, recipe.mode, 2.0, 8, 24) != plain


def test_a_fading_opening_falls_from_the_boost_to_one_over_its_tokens(chat_dose):
    assert chat_dose.opening_setting("16:1.5") == (16, 1.5, False)
    assert chat_dose.opening_setting("16:2:fade") == (16, 2.0, True)
    with pytest.raises(SystemExit, match="K:B:fade"):
        chat_dose.opening_setting("16:2:slow")
    fading = [chat_dose.opening_multiplier(step, 2.0, 16, True) for step in range(20)]
    assert fading[0] == 2.0 and fading[8] == 1.5 and fading[16:] == [1.0] * 4
    assert all(a > b for a, b in zip(fading[:16], fading[1:17]))
    flat = [chat_dose.opening_multiplier(step, 2.0, 16, False) for step in range(20)]
    assert flat[:17] == [2.0] * 17 and flat[17:] == [1.0] * 3
