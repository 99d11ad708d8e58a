"""A language from one pair (engine/languages.py): a language name alone, asked for at the defaults, is built by
distilling "Always reply in X." (CLI build, Python, the tab's Build form), and its recipe and `show` say so."""
from __future__ import annotations

import pytest

from extensions.steering import cli
from extensions.steering.engine import languages, methods, metrics
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.wording import first_stage, plain_summary
from extensions.steering.ui import actions
from extensions.steering.usecases.build import BuildRequest


@pytest.mark.parametrize("text, name", [
    ("Spanish", "Spanish"), ("Español", "Spanish"), ("in French", "French"), ("the German language", "German"),
    ("Italiano", "Italian"), ("Deutsch", "German"),
    ("Shakespearean English", None), ("Spanish food", None), ("Portuguese", None), ("Cats", None), ("", None),
])
def test_a_language_is_named_only_by_its_name_alone(text, name):
    found = languages.language_named(text)
    assert (found.name if found else None) == name


def test_each_language_has_its_metric_and_instruction():
    assert sorted(language.metric for language in languages.LANGUAGES) == sorted(metrics.FUNCTION_WORDS)  # each list is a language's
    for language in languages.LANGUAGES:
        assert language.share() is metrics.metric(language.metric).score  # one definition: the registry's
        assert language.instruction == f"Always reply in {language.name}."
        assert not language.function_words & metrics.ENGLISH_WORDS  # a word English also uses would count English text
    assert languages.language_named("German").share()("Ich bin heute sehr müde und das ist nicht gut") == 1.0
    assert languages.language_named("Italian").share()("Oggi sono molto stanco, ma va bene") == 1.0
    assert languages.language_named("German").share()("I am very tired today and that is not good") == 0.0


def _pair(positive: str, negative: str, **given) -> Recipe:
    method = given.pop("method", methods.DEFAULT)
    return Recipe("lang", positive=[positive], negative=[negative], method=method,
                  expand=given.pop("expand", methods.default_expand(method, [positive], [negative])), **given)


def test_a_language_pair_at_the_defaults_becomes_its_distilled_instruction():
    recipe = languages.language_recipe(_pair("Español", "English"))
    assert recipe.method == "distill" and recipe.options.system == "Always reply in Spanish." and recipe.options.via == "kl"
    assert recipe.strength == 1.0 and recipe.mode == "all" and not recipe.positive
    assert "asked for as the pair “Español” − “English”" in recipe.description and "distilled from the instruction" in recipe.description
    assert recipe.stands_in_for.metric == "spanish"
    assert "as if told “Always reply in Spanish.” (distilled from that system prompt)" in plain_summary(recipe, [3, 6], False)
    assert first_stage(recipe) == "distilling “Always reply in Spanish.”"
    yaml_text = recipe.to_yaml()
    assert "Always reply in Spanish." in yaml_text and "method: distill" in yaml_text
    # a dose carries over as the distilled vector's strength
    assert languages.language_recipe(_pair("French", "English", strength=1.5, calibrated=True)).strength == 1.5


@pytest.mark.parametrize("given", [
    dict(method="pca"), dict(expand=None), dict(layers=[6]), dict(strength=0.3, calibrated=False), dict(mode="generated"),
])
def test_a_choice_of_the_users_keeps_the_pair_as_written(given):
    recipe = _pair("Spanish", "English", **given)
    assert languages.language_recipe(recipe) is recipe


def test_other_pairs_are_left_alone():
    for positive, negative in (("Cats", "Dogs"), ("Portuguese", "English"), ("Reply in Spanish please", "Reply in English")):
        recipe = _pair(positive, negative)
        assert languages.language_recipe(recipe) is recipe
    many = Recipe("x", positive=["Spanish", "Español"], negative=["English", "Inglés"], method="mean")
    assert languages.language_recipe(many) is many


def test_the_tabs_build_form_takes_the_same_route():
    recipe = actions.make_recipe("Spanish", "English", "mean", 6, "", "all", auto=True)
    assert recipe.method == "distill" and recipe.options.system == "Always reply in Spanish."
    assert actions.make_recipe("Spanish", "English", "mean", 6, "", "all", auto=False).method == "mean"  # a layer chosen


def test_a_language_name_alone_needs_no_negative_side():
    alone, against_english = BuildRequest("es", ["Spanish"], []), BuildRequest("es", ["Spanish"], ["English"])
    assert alone.recipe().to_dict() == against_english.recipe().to_dict()
    assert "asked for as the pair “Spanish” − “English”" in alone.recipe().description
    assert BuildRequest("es", ["in French"], [], method="pca").recipe().negative == ["English"]  # kept as written, against English
    assert actions.make_recipe("Spanish", "  \n", "mean", 6, "", "all", auto=True, name="es").to_dict() == against_english.recipe().to_dict()
    for positive in (["Cats"], ["Portuguese"], ["Spanish", "French"], ["Spanish food"], ["English"]):
        with pytest.raises(ValueError, match=r"^give at least one negative prompt \(only"):
            BuildRequest("x", positive, []).recipe()
    with pytest.raises(ValueError, match=r"^give at least one negative prompt \(only"):
        actions.make_recipe("Cats", "", "mean", 6, "", "all", auto=True)


def test_the_command_line_leaves_out_negative_only_for_a_language_name(tmp_path, capsys):
    """Up to the model's load (--model names no file, so reaching it would be a load error instead)."""
    common = ["--presets", str(tmp_path), "--model", str(tmp_path / "no-model")]
    # parsed and made into its recipe; refused only because the name is a shipped preset's
    assert cli.main(["build", "love", "--positive", "Spanish", *common]) == 2
    assert capsys.readouterr().err.startswith("error: a preset named 'love' exists")
    for argv in (["build", "cats", "--positive", "Cats"], ["build", "two", "--positive", "Spanish", "--positive", "French"],
                 ["check", "--positive", "Cats"], ["build", "cats", "--positive", "Cats", "--check"]):
        assert cli.main([*argv, *common]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: give at least one negative prompt (only") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_cli_build_distils_a_language_name_and_show_says_so(tmp_path, capsys):
    presets = str(tmp_path / "presets")
    assert cli.main(["build", "es", "--positive", "Spanish", "--presets", presets]) == 0  # the negative side: English
    out = capsys.readouterr().out
    assert "es: as if told “Always reply in Spanish.” (distilled from that system prompt)" in out and "saved es" in out
    recipe = PresetStore(tmp_path / "presets", shipped=None).recipe("es")
    assert recipe.method == "distill" and recipe.options.steps == 24 and recipe.options.cut_short is None
    assert cli.main(["show", "es", "--presets", presets]) == 0
    shown = capsys.readouterr().out
    assert "distilled from the instruction “Always reply in Spanish.”" in " ".join(shown.split())  # YAML folds long lines
    assert "asked for as the pair “Spanish” − “English”" in " ".join(shown.split())
    assert "system: Always reply in Spanish." in shown
