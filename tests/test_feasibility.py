"""The pre-build check (engine/feasibility.py): what a pair asks for, the told model's replies, the one-line answer,
and the command line's `check` and `build --check`. Real checks on the default model, a few pairs only."""
from __future__ import annotations

import json

import pytest

from extensions.steering import cli
from extensions.steering.engine import feasibility as f
from extensions.steering.engine import metrics
from extensions.steering.engine.presets import PresetStore
from extensions.steering.ui import actions


# -- what a pair asks for ----------------------------------------------------------------------------------
@pytest.mark.parametrize("positive, negative, kind, name", [
    ("Emojis", "No emojis", "format", "emoji"),
    ("Smiley faces", "No symbols", "format", "emoji"),
    ("Bullet points", "Paragraphs", "format", "lists"),
    ("All capital letters", "Lowercase letters", "format", "capital letters"),
    ("Enthusiastic exclamations", "Flat statements", "format", "exclamation marks"),
    ("Spanish", "English", "language", "Spanish"),
    ("Español", "English", "language", "Spanish"),
    ("Deutsch", "English", "language", "German"),
    ("Portuguese", "English", "language", "Portuguese"),
    ("Joy", "Sorrow", "mood", "a more positive mood"),
    ("Furious", "Peaceful", "mood", "a more negative mood"),
    ("Outer space", "The ocean", "topic", "outer / space"),
    ("I talk about weddings constantly", "I do not talk about weddings constantly", "topic", "wedding"),
])
def test_what_a_pair_asks_for_is_read_off_its_text(positive, negative, kind, name):
    found = f.behaviour_of(positive, negative)
    assert (found.kind, found.name) == (kind, name)


def test_each_kind_scores_a_reply_by_what_it_asks_for():
    assert f.behaviour_of("Emojis", "No emojis").score("Great day 😀") == 1.0
    assert f.behaviour_of("Emojis", "No emojis").score("Great day") == 0.0
    assert f.behaviour_of("Bullet points", "Prose").score("Try this:\n- one\n- two") == 1.0
    assert f.behaviour_of("All capital letters", "Lowercase").score("I AM SHOUTING now") == 1.0
    assert f.behaviour_of("Spanish", "English").score("Hola, ¿cómo está usted? Es un día muy bien") > 0.8
    assert f.behaviour_of("Cats", "Dogs").score("My cat sleeps.") == 1.0 and f.behaviour_of("Cats", "Dogs").score("A dog.") == 0.0
    furious = f.behaviour_of("Furious", "Peaceful")
    assert furious.direction == -1 and furious.needed(0.5) == f.MOOD_TOLD_GAP  # against the negative side told
    assert f.behaviour_of("Spanish", "English").needed(0.1) == pytest.approx(0.4)  # a language: half of the function words
    assert f.behaviour_of("Cats", "Dogs").needed(0.0) == pytest.approx(0.25) and f.behaviour_of("Emojis", "Text").needed(0.0) == pytest.approx(0.3)


# the expected scores are those of the check's own format scores before it took them from the registry (one-off
# comparison on 200 035 replies, none differing): the verdicts of the check stay as they were
@pytest.mark.parametrize("positive, scored", [
    ("Emojis", {"Great day 😀": 1, "☀ sun": 1, "⭐": 1, "♥": 1, "✅ done": 1, "🫠": 1, "Great day :)": 0, "": 0}),
    ("Bullet points", {"- one\n- two": 1, "1. first": 1, "2) second": 1, "Line\n  - indented item": 1, " * x": 1, "• bullet": 1,
                       "10. ten": 1, "-x": 0, "a - b": 0, "3.14 is pi": 0, "": 0}),
    ("All capital letters", {"I AM SHOUTING now": 1, "AB cd": 1, "ÉCOLE": 1, "HeLlo": 0, "HeLLo": 1, "Abc": 0, "12345": 0, "": 0}),
    ("Exclamations", {"Wow! Great!": 1, "!!": 1, "Wow!": 0, "": 0}),
    ("Questions", {"What?": 1, "¿Qué?": 1, "Fine.": 0, "": 0}),
])
def test_a_format_is_scored_by_the_registered_metric_as_before(positive, scored):
    behaviour = f.behaviour_of(positive, "Plain text")
    assert behaviour.kind == "format"
    assert any(behaviour.score is metrics.metric(name).score for _, said, name in f.FORMATS if said == behaviour.name)
    assert {reply: behaviour.score(reply) for reply in scored} == scored


def test_a_pair_that_is_no_pair_is_refused_before_the_model_is_touched():
    with pytest.raises(ValueError, match="the same: nothing to contrast"):
        f.check_pair(None, "Cats", " Cats ")
    with pytest.raises(ValueError, match="both sides"):
        f.check_pair(None, "Cats", "")


# -- on the default model -----------------------------------------------------------------------------------
def test_a_language_the_check_cannot_read_is_answered_without_generating(default_ctx):
    found = f.check_pair(default_ctx, "Portuguese", "English")
    assert not found.likely and found.kind == "language"
    assert found.line.startswith("unlikely from one pair: a vector read from a pair has not reached a language")
    assert -1 <= found.consistency <= 1


def test_the_model_that_writes_no_emoji_when_told_gets_a_plain_no(default_ctx):
    found = f.check_pair(default_ctx, "Emojis", "No emojis")
    assert found.kind == "format" and not found.follows and not found.likely
    assert found.line.startswith("unlikely to work: this model does not write emoji even when asked")
    assert "try a larger model" in found.line
    assert found.replies == len(f.PROMPTS) and found.told_as in {framing.format("Emojis") for framing in f.TOLD_FRAMINGS}
    assert found.effect == pytest.approx(found.told - found.untold) and found.effect < found.needed
    assert "untold" in found.details() and "consistency" in found.details()


def test_a_mood_is_judged_against_its_negative_side_told(default_ctx):
    found = f.check_pair(default_ctx, "Cheerful", "Miserable")
    assert found.kind == "mood" and found.told_negative is not None and found.needed == f.MOOD_TOLD_GAP
    assert found.effect == pytest.approx(found.told - found.told_negative)
    assert "told 'Cheerful' rather than 'Miserable'" in found.line and "the negative side told" in found.details()
    assert found.follows == (found.effect >= f.MOOD_TOLD_GAP - 1e-9) and found.likely == found.follows


# -- the command line and the tab ----------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_check_prints_one_line_and_the_numbers_on_request(capsys):
    assert cli.main(["check", "--positive", "Portuguese", "--negative", "English", "--details"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("unlikely from one pair") and out[1].startswith("kind language (Portuguese)")
    assert cli.main(["check", "--positive", "Portuguese", "--negative", "English", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["likely"] is False and data["kind"] == "language" and data["line"].startswith("unlikely")
    assert cli.main(["check", "--positive", "Cats", "--negative", "Cats"]) == 2
    assert "nothing to contrast" in capsys.readouterr().err


@pytest.mark.slow
def test_build_check_says_it_before_building(tmp_path, capsys):
    presets = str(tmp_path / "presets")
    assert cli.main(["build", "pt", "--positive", "Portuguese", "--negative", "English", "--check", "--presets", presets]) == 0
    out = capsys.readouterr().out
    assert out.startswith("check: unlikely from one pair") and "saved pt" in out  # the user asked to build: it still builds
    assert PresetStore(tmp_path / "presets", shipped=None).exists("pt")
    assert cli.main(["build", "x", "--positive", "a", "--positive", "b", "--negative", "c", "--negative", "d", "--check",
                     "--presets", presets]) == 2
    assert "--check looks at one pair" in capsys.readouterr().err


def test_the_build_panel_checks_the_forms_one_pair(tmp_path, default_model):
    from extensions.steering.runtime import SteeringRuntime

    runtime = SteeringRuntime(PresetStore(tmp_path / "presets", shipped=None), tmp_path / "state", model_source=lambda: default_model)
    assert actions.check_form(runtime, "Portuguese\n", "English").line.startswith("unlikely from one pair")
    with pytest.raises(ValueError, match="one pair"):
        actions.check_form(runtime, "a\nb", "c\nd")
