"""The Steering tab's actions on the real default model (no gradio needed)."""
from __future__ import annotations

import pytest

from extensions.steering.engine.methods import METHODS, PROMPT_LAYERS
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.validation import PresetError, resolve_layer
from extensions.steering.runtime import SteeringRuntime, SteeringUnavailable
from extensions.steering.ui import actions, sweep

PROMPT = "I hate you because"
S = METHODS["actadd"].strength  # the strength of a one-pair vector built with an empty strength
TOKENS = 6


@pytest.fixture
def store(tmp_path):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "Shipped.yaml").write_text(Recipe("Shipped", ["Calm"], ["Angry"], method="actadd").to_yaml())
    return PresetStore(tmp_path / "presets", shipped=shipped)


@pytest.fixture
def runtime(store, tmp_path, default_model):
    return SteeringRuntime(store, tmp_path / "data", model_source=lambda: default_model)


@pytest.fixture
def draft(runtime):
    return actions.build_draft(runtime, "Love", "Hate", "actadd", 6, None, "auto")


def files_under(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def unchanged(folder):
    """Context: assert nothing under ``folder`` was written, changed or removed."""
    class Check:
        def __enter__(self):
            self.before = files_under(folder)

        def __exit__(self, *exc):
            assert files_under(folder) == self.before
    return Check()


# -- defaults --------------------------------------------------------------------------------------
def test_defaults_come_from_the_engine():
    assert actions.default_layer(30) == resolve_layer(PROMPT_LAYERS[0], 30)
    assert "mean auto" in actions.default_strengths() and METHODS["mean"].calibrated
    assert f"actadd {METHODS['actadd'].strength:g}" in actions.default_strengths()
    assert actions.sweep_strengths_around(4) == [0, 2, 4, 8]
    assert actions.DEFAULT_METHOD in actions.method_choices() and actions.mode_choices()[0] == actions.AUTO


def test_num_layers_of_the_default_model(runtime):
    assert actions.num_layers(runtime) == 30


# -- building --------------------------------------------------------------------------------------
def test_build_one_pair_is_actadd(draft):
    assert draft.recipe.method == "actadd" and draft.recipe.mode == "actadd"
    assert draft.recipe.strength == Recipe("x", ["a"], ["b"], method="actadd").strength
    assert draft.vector.layers == [6] and draft.vector.per_position
    assert "built, not saved" in draft.summary() and "layer 6" in draft.summary()


def test_default_method_is_the_command_lines(runtime):
    draft = actions.build_draft(runtime, "Love", "Hate", None, 6, "", "auto")
    assert draft.recipe.method == actions.DEFAULT_METHOD == "mean" and draft.recipe.mode == "all"
    # an empty strength is the method's default: for mean, calibrated (strength auto) at dose 1
    assert draft.recipe.calibrated and draft.recipe.strength == 1.0 and not draft.vector.per_position


def test_build_many_pairs_reports_progress(runtime):
    seen = []
    draft = actions.build_draft(
        runtime, "I love it\nWhat a joy\nSo kind", "I hate it\nWhat a pain\nSo cruel", None, 5, "", "auto",
        progress=lambda fraction, text: seen.append((fraction, text)),
    )
    assert draft.recipe.method == "mean" and draft.recipe.mode == "all"
    assert draft.recipe.strength == Recipe("x", ["a"], ["b"], method="mean").strength
    assert not draft.vector.per_position and draft.vector.layers == [5]
    assert seen and seen[-1][0] == 1.0 and "pairs" in seen[-1][1]
    assert seen[-1][1].endswith("; now calibrating the strength")  # what the wait after the last pair is for


def test_auto_measures_the_layer_and_calibrates_at_the_dose(runtime, store):
    draft = actions.build_draft(runtime, "Love", "Hate", "mean", 6, "", "auto", True, 0.5)
    recipe, found = draft.recipe, draft.calibration
    assert recipe.auto_layers and recipe.calibrated and recipe.strength == 0.5
    assert recipe.expand is not None  # one short pair is expanded, as on the command line
    assert found is not None and draft.vector.layers == list(found.layers)
    summary = draft.summary()
    assert "dose 0.5 (calibrated)" in summary and "chosen by measurement" in summary and f"expanded {recipe.expand}" in summary
    form = actions.recipe_form(recipe, 30)
    assert form["auto"] is True and form["dose"] == 0.5 and form["strength"] == "auto"
    actions.save_draft(runtime, draft, "Auto", False)
    [(_, meta)] = store.cache_entries(store.recipe("Auto"))
    assert float(meta["calibration_scale"]) == pytest.approx(found.scale, rel=1e-5)  # the tab's calibration is the one saved


def test_a_fixed_layer_with_strength_auto_and_a_fixed_strength(runtime):
    calibrated = actions.make_recipe("Love", "Hate", "mean", 6, "auto", "auto", False, 2)
    assert calibrated.layers == [6] and calibrated.calibrated and calibrated.strength == 2
    fixed = actions.make_recipe("Love", "Hate", "mean", 6, "0.3", "auto", False, 2)
    assert not fixed.calibrated and fixed.strength == 0.3
    kept = actions.make_recipe("I love this\nJoy", "I hate this\nPain", "mean", 6, "0.3", "auto")
    assert kept.expand is None  # the user's own pairs are read as written
    said = actions.make_recipe("I talk about trains constantly", "I do not talk about trains constantly", "mean", 6, "", "auto", True)
    assert said.expand == "sentence-v1" and said.calibrated  # one sentence a side: told as the system message, as on the command line
    with pytest.raises(ValueError, match="dose must be above 0"):
        actions.make_recipe("Love", "Hate", "mean", 6, "auto", "auto", False, 0)


@pytest.mark.parametrize("layers, strength, calibrated", [
    (["auto"], 0.4, None),  # the command line's `build --strength 0.4`: a measured layer, a fixed strength
    (["auto"], 2.0, True),
    ([6], 2.0, True),
    ([6], 0.3, None),
])
def test_a_loaded_recipe_fills_the_form_so_building_gives_it_again(layers, strength, calibrated):
    recipe = Recipe("r", ["Love"], ["Hate"], method="mean", layers=layers, strength=strength, calibrated=calibrated, mode="all")
    form = actions.recipe_form(recipe, 30)
    again = actions.make_recipe(form["positives"], form["negatives"], form["method"], form["layer"], form["strength"],
                                form["mode"], form["auto"], form["dose"])
    assert (again.layers, again.strength, again.calibrated) == (recipe.layers, recipe.strength, recipe.calibrated)


@pytest.mark.parametrize(
    "positives, negatives, method, layer, strength, mode, message",
    [
        ("", "Hate", "mean", 6, 4, "auto", "positive prompt"),
        ("Love", "  \n ", "mean", 6, 4, "auto", "negative prompt"),
        ("Love", "Hate", "mean", 30, 4, "auto", "out of range"),
        ("Love", "Hate", "mean", -1, 4, "auto", "layer must be at least 0"),
        ("Love", "Hate", "mean", 2.5, 4, "auto", "whole number"),
        ("Love", "Hate", "mean", None, 4, "auto", "layer is empty"),
        ("Love", "Hate", "mean", 6, float("nan"), "auto", "finite"),
        ("Love", "Hate", "mean", 6, "inf", "auto", "finite"),
        ("Love", "Hate", "mean", 6, "strong", "auto", "must be a number"),
        ("Love", "Hate", "magic", 6, 4, "auto", "unknown method"),
        ("Love\nJoy", "Hate\nPain", "mean", 6, 4, "actadd", "mode actadd needs per-position rows"),
        ("Love\nJoy", "Hate\nPain", "actadd", 6, 4, "auto", "actadd takes one"),
        ("A\nB\nC", "D\nE", "mean", 6, 4, "auto", "equal numbers"),
    ],
)
def test_build_refuses_bad_input(runtime, store, positives, negatives, method, layer, strength, mode, message):
    with unchanged(store.folder), pytest.raises(ValueError, match=message):
        actions.build_draft(runtime, positives, negatives, method, layer, strength, mode)


def test_build_without_a_model_says_so(store, tmp_path):
    runtime = SteeringRuntime(store, tmp_path / "data", model_source=lambda: None)
    with pytest.raises(SteeringUnavailable, match="No model is loaded"):
        actions.build_draft(runtime, "Love", "Hate", "mean", 6, 4, "auto")


# -- trying ----------------------------------------------------------------------------------------
def test_try_gives_steered_and_unsteered_from_one_seed(runtime, draft):
    first = actions.try_draft(runtime, draft, PROMPT, 3, TOKENS, False)
    again = actions.try_draft(runtime, draft, PROMPT, 3, TOKENS, False)
    assert first == again and first.seed == 3
    assert first.steered != first.unsteered


def test_try_refuses_bad_input(runtime, draft):
    with pytest.raises(ValueError, match="build a vector"):
        actions.try_draft(runtime, None, PROMPT, 0, TOKENS, False)
    with pytest.raises(ValueError, match="prompt is empty"):
        actions.try_draft(runtime, draft, "  ", 0, TOKENS, False)
    with pytest.raises(ValueError, match="seed"):
        actions.try_draft(runtime, draft, PROMPT, float("nan"), TOKENS, False)
    with pytest.raises(ValueError, match="max new tokens"):
        actions.try_draft(runtime, draft, PROMPT, 0, 0, False)
    with pytest.raises(ValueError, match="longer prompt"):
        actions.try_draft(runtime, draft, "Hi", 0, TOKENS, False)


# -- sweeping --------------------------------------------------------------------------------------
def test_tiny_sweep_grid_and_plot(runtime, draft):
    seen = []
    result = sweep.sweep(runtime, draft, PROMPT, "0, 8", "6", sweep.METRIC_SENTIMENT, "", 0, 1, TOKENS, False,
                           progress=lambda fraction, text: seen.append(fraction))
    headers, rows = result.table()
    assert headers == ["strength", "layer 6"] and [row[0] for row in rows] == ["0", "8"]
    assert all(-1 <= cell.effect <= 1 for cell in result.cells)
    unsteered = actions.try_draft(runtime, draft, PROMPT, 0, TOKENS, False).unsteered
    assert result.cell(6, 0.0).texts[0] == unsteered  # strength 0 is no steering
    assert seen == [0.0, 0.5]
    figure = result.figure()
    assert len(figure.axes[0].lines) == 1 and figure.axes[0].get_xlabel() == "strength"


def test_sweep_over_layers_with_topic_words(runtime, draft):
    result = sweep.sweep(runtime, draft, PROMPT, "4", "3, 6", sweep.METRIC_TOPIC, "love, hate", 0, 2, 4, False)
    assert result.layers == [3, 6] and all(len(cell.texts) == 2 for cell in result.cells)
    assert all(cell.effect >= 0 for cell in result.cells)
    assert len(result.figure().axes[0].lines) == 2


@pytest.mark.parametrize(
    "strengths, layers, metric, words, samples, message",
    [
        ("0, nan", "6", sweep.METRIC_SENTIMENT, "", 1, "finite"),
        ("0, x", "6", sweep.METRIC_SENTIMENT, "", 1, "must be a number"),
        ("0", "99", sweep.METRIC_SENTIMENT, "", 1, "between 0 and 29"),
        ("0", "", sweep.METRIC_SENTIMENT, "", 1, "at least one layer"),
        ("0", "150%", sweep.METRIC_SENTIMENT, "", 1, "between 0% and 100%"),
        ("0", "6", sweep.METRIC_TOPIC, " ", 1, "needs some words"),
        ("0", "6", "loudness", "", 1, "unknown metric"),
        ("0", "6", sweep.METRIC_SENTIMENT, "", 0, "samples"),
        ("0 1 2 3 4 5 6 7", "1 2 3 4 5 6", sweep.METRIC_SENTIMENT, "", 3, "completions"),
    ],
)
def test_sweep_refuses_bad_input(runtime, draft, store, strengths, layers, metric, words, samples, message):
    with unchanged(store.folder), pytest.raises(ValueError, match=message):
        sweep.sweep(runtime, draft, PROMPT, strengths, layers, metric, words, 0, samples, TOKENS, False)


# -- presets ---------------------------------------------------------------------------------------
def test_save_view_load_rename_delete(runtime, store, draft):
    path = actions.save_draft(runtime, draft, "Love", False)
    assert path.endswith("Love.yaml") and "Love" in actions.preset_names(store)
    assert list((store.folder / "tensors" / "Love").glob("*.safetensors"))  # the built vector is kept
    text = actions.preset_text(store, "Love")
    assert "user preset" in text and "positive:\n- Love" in text and f"strength: {S:g}" in text
    loaded = actions.load_preset(runtime, "Love")
    assert loaded.recipe.name == "Love" and "preset Love" in loaded.summary()
    assert actions.recipe_form(loaded.recipe, 30)["layer"] == 6
    actions.rename_preset(store, "Love", "Kind")
    assert "Kind" in actions.preset_names(store) and "Love" not in actions.preset_names(store)
    actions.delete_preset(store, "Kind")
    assert actions.preset_names(store) == ["Shipped"]
    assert files_under(store.folder) == {}


def test_shipped_preset_is_visible_and_read_only(runtime, store, draft):
    assert "shipped, read-only" in actions.preset_text(store, "Shipped")
    with unchanged(store.folder):
        for attempt in (lambda: actions.save_draft(runtime, draft, "Shipped", True),
                        lambda: actions.rename_preset(store, "Shipped", "Mine"),
                        lambda: actions.delete_preset(store, "Shipped")):
            with pytest.raises(PresetError, match="read-only"):
                attempt()


@pytest.mark.parametrize("name", ["../evil", "", "  ", "a/b", ".hidden", "x" * 65, None])
def test_bad_names_write_nothing(runtime, store, draft, name):
    actions.save_draft(runtime, draft, "Love", False)
    with unchanged(store.folder):
        for attempt in (lambda: actions.save_draft(runtime, draft, name, True),
                        lambda: actions.rename_preset(store, "Love", name),
                        lambda: actions.rename_preset(store, name, "Kind"),
                        lambda: actions.delete_preset(store, name),
                        lambda: actions.preset_text(store, name)):
            with pytest.raises(ValueError):
                attempt()
    assert not (store.folder.parent / "evil.yaml").exists()


def test_save_refuses_existing_name_unless_overwrite(runtime, store, draft):
    actions.save_draft(runtime, draft, "Love", False)
    with unchanged(store.folder), pytest.raises(PresetError, match="exists"):
        actions.save_draft(runtime, draft, "Love", False)
    actions.save_draft(runtime, draft, "Love", True)
    with pytest.raises(ValueError, match="build a vector"):
        actions.save_draft(runtime, None, "Other", False)


def test_damaged_preset_is_reported_and_left_alone(runtime, store):
    store.folder.mkdir(parents=True)
    (store.folder / "Broken.yaml").write_text("positive: [unclosed\n")
    with unchanged(store.folder):
        for attempt in (lambda: actions.preset_text(store, "Broken"),
                        lambda: actions.load_preset(runtime, "Broken"),
                        lambda: actions.rename_preset(store, "Broken", "Fixed"),
                        lambda: actions.mix_items(store, "Broken")):
            with pytest.raises(PresetError, match="damaged YAML"):
                attempt()
    actions.delete_preset(store, "Broken")  # a damaged preset can still be removed
    assert files_under(store.folder) == {}


# -- the mixer -------------------------------------------------------------------------------------
def test_add_to_mix():
    assert actions.add_to_mix("", "Love", 1) == "Love"
    assert actions.add_to_mix("Love", "Hate", -1) == "Love - Hate"
    assert actions.add_to_mix("Love - Hate", "dogs", 0.5) == "Love - Hate + 0.5 × dogs"
    with pytest.raises(ValueError, match="finite"):
        actions.add_to_mix("Love", "dogs", float("nan"))
    with pytest.raises(ValueError, match="choose a preset"):
        actions.add_to_mix("Love", None, 1)


def test_a_saved_preset_is_used_in_all_chats_beside_the_others(runtime, store, draft):
    actions.save_draft(runtime, draft, "Love", False)
    runtime.set_active([("Shipped", 0.2)])
    assert actions.use_preset_in_chats(runtime, "Love") == [("Shipped", 0.2), ("Love", S)]
    assert actions.use_preset_in_chats(runtime, "Love") == [("Shipped", 0.2), ("Love", S)]  # once, not twice
    with pytest.raises(ValueError, match="no preset named"):
        actions.use_preset_in_chats(runtime, "Nobody")
    runtime.set_active([])


def test_the_plain_line_and_the_layers_around(draft):
    assert draft.plain().startswith("built, not saved yet: toward “Love”, away from “Hate”: strength ")
    assert "KL" not in draft.plain() and draft.recipe.method not in draft.plain()
    assert actions.sweep_layers_around(24, 30) == "22, 24, 26"
    assert actions.sweep_layers_around(0, 30) == "0, 2" and actions.sweep_layers_around(29, 30) == "27, 29"


def test_mix_try_use_attach(runtime, store, draft):
    actions.save_draft(runtime, draft, "Love", False)
    items, comparison = actions.try_mix(runtime, "0.5 × Love + Shipped", PROMPT, 0, TOKENS, False)
    assert items == [("Love", S / 2), ("Shipped", S)] and comparison.steered != comparison.unsteered
    assert actions.use_mix_in_chats(runtime, "Love - 0.25 × Love") == [("Love", S * 0.75)]
    assert actions.use_mix_in_chats(runtime, "Love") == [("Love", S)]
    assert list(runtime.active) == [("Love", S)] and f"Love ×{S:g}" in actions.status_text(runtime)
    assert actions.attach_mix(runtime, "Assistant", "-1 × Love") == [("Love", -S)]
    assert list(runtime.attachments("Assistant")) == [("Love", -S)]


def test_mix_refuses_bad_input(runtime, store, draft):
    actions.save_draft(runtime, draft, "Love", False)
    before = list(runtime.active)
    with unchanged(store.folder):
        with pytest.raises(PresetError, match="no preset named"):
            actions.use_mix_in_chats(runtime, "Love + Nobody")
        with pytest.raises(ValueError, match="empty"):
            actions.try_mix(runtime, "", PROMPT, 0, TOKENS, False)
        with pytest.raises(ValueError, match="character"):
            actions.attach_mix(runtime, " ", "Love")
        with pytest.raises(ValueError, match="finite"):
            actions.attach_mix(runtime, "Assistant", "nan × Love")
    assert list(runtime.active) == before and list(runtime.attachments("Assistant")) == []


def test_status_text_never_raises(runtime, store, tmp_path):
    class Broken:
        active = []

        def status_line(self, session=None):
            raise RuntimeError("boom")

    assert "status unavailable: boom" in actions.status_text(Broken())
    assert "steering can run" in actions.status_text(runtime)


def test_try_and_sweep_refuse_values_out_of_range_before_generating(runtime, draft, monkeypatch):
    from transformers import GenerationMixin

    calls = []
    monkeypatch.setattr(GenerationMixin, "generate", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(runtime, "vector", lambda name: calls.append(name))
    refusals = [
        (lambda: actions.try_draft(runtime, draft, PROMPT, 2**64, TOKENS, False), "the seed must be between 0 and 4294967295, got 18446744073709551616"),
        (lambda: actions.try_draft(runtime, draft, PROMPT, 0, 10**9, False), "max new tokens must be between 1 and 4096, got 1000000000"),
        (lambda: actions.try_draft(runtime, draft, "word " * 9000, 0, TOKENS, False), "the prompt is 9002 tokens long and max new tokens asks for 6 more, but the model reads at most 8192 positions"),
        (lambda: actions.try_mix(runtime, "Shipped", "word " * 9000, 0, TOKENS, False), "at most 8192 positions"),
        (lambda: sweep.sweep(runtime, draft, "word " * 9000, "0, 8", "6", sweep.METRIC_TOPIC, "love", 0, 1, TOKENS, False), "at most 8192 positions"),
        (lambda: sweep.sweep(runtime, draft, PROMPT, "0, 8", "6", sweep.METRIC_TOPIC, "love", 2**32 - 1, 2, TOKENS, False),
         "the last seed (seed + samples - 1) must be between 0 and 4294967295, got 4294967296"),
    ]
    for action, message in refusals:
        with pytest.raises(ValueError) as refused:
            action()
        assert message in str(refused.value)
    assert calls == []


def test_attaching_to_a_character_name_no_file_can_have_is_refused(runtime, tmp_path):
    with unchanged(tmp_path / "data"):
        with pytest.raises(ValueError, match="a character name has at most 255 bytes \\(it names a file\\); this one has 400"):
            actions.attach_mix(runtime, "é" * 200, "Shipped")
