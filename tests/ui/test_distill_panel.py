"""The "system prompt to vector" panel on gradio's 4.37 API (the UI environment; skipped elsewhere)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio", reason="gradio is not installed here (the UI environment has it: .ci/ui-setup.sh)")
if not gradio.__version__.startswith("4."):
    pytest.skip(f"the panel targets the webui's gradio 4.37 API; this is gradio {gradio.__version__}", allow_module_level=True)

from extensions.steering.engine import distill  # noqa: E402
from extensions.steering.engine.distill import Evaluation  # noqa: E402
from extensions.steering.engine.presets import PresetStore  # noqa: E402
from extensions.steering.runtime import SteeringRuntime  # noqa: E402
from extensions.steering.ui import distill_panel  # noqa: E402


def no_progress(*args, **kwargs):
    pass


@pytest.fixture
def runtime(tmp_path, default_model):
    characters = tmp_path / "characters"
    characters.mkdir()
    (characters / "Pirate.yaml").write_text("name: Jack\ngreeting: Ahoy\ncontext: '{{char}} is a pirate. He says Arr and matey.'\n")
    return SteeringRuntime(PresetStore(tmp_path / "presets", shipped=None), tmp_path / "state",
                           model_source=lambda: default_model, characters_dir=characters)


def test_the_panel_builds_on_gradio_437(runtime):
    with gradio.Blocks():
        panel = distill_panel.create_distill_panel(runtime)
    assert panel.refresh()["choices"] == ["", "Pirate"]
    assert panel.build.elem_id == "steering-distill-build"


def test_picking_a_character_fills_its_context(runtime):
    context, name, message = distill_panel.pick_character(runtime, "Pirate")
    assert context == "Jack is a pirate. He says Arr and matey." and name == "Pirate-distilled" and message == ""
    assert distill_panel.pick_character(runtime, "")[0] == ""


def test_bad_input_is_a_message_not_a_traceback(runtime):
    message, table = distill_panel.run_distill(runtime, "", "Be kind.", "../x", "kl", 10, "", 2, False, no_progress)
    assert message.startswith("⚠") and "invalid preset name" in message
    message, _ = distill_panel.run_distill(runtime, "", "", "ok", "kl", 10, "", 2, False, no_progress)
    assert "system prompt" in message


FAKE_RESULT = dict(
    held_out=1, kl_without=0.2, kl_steered=0.1, kl_recovery=0.5, metric="pirate", instead=None, behaviour_with_system=1.0,
    behaviour_without=0.0, behaviour_steered=1.0, readable_with_system=1.0, readable_without=1.0, readable_steered=1.0,
    system_tokens=12, prompt_tokens_with_system=40.0, prompt_tokens_without=28.0, tokens_saved=0.0,
    ttft_with_system_ms=10.0, ttft_steered_ms=9.0, ttft_ratio=0.9,
)


def test_distilling_a_character_attaches_and_measures(runtime, monkeypatch):
    # the real build (direct: one forward); the measurement is the engine's, tested on its own (tests/test_distill.py)
    seen = {}

    def fake_evaluate(ctx, system, vector, strength, mode, messages, **options):
        seen.update(system=system, strength=strength, mode=mode, messages=messages, layers=vector.layers)
        return Evaluation(**FAKE_RESULT)

    monkeypatch.setattr(distill, "evaluate", fake_evaluate)
    message, table = distill_panel.run_distill(runtime, "Pirate", "Jack is a pirate. He says Arr and matey.", "Pirate-distilled",
                                               "direct", 0, "6", 1, False, no_progress)
    assert message.startswith("✔") and "KL recovery" in message and "Attached to Pirate" in message
    assert table["value"][0][0] == "Pirate-distilled" and table["headers"][2] == "KL recovery"
    assert runtime.attachments("Pirate") == [("Pirate-distilled", distill.DIRECT_STRENGTH)]
    assert runtime.store.recipe("Pirate-distilled").method == "distill"
    assert seen["system"] == "Jack is a pirate. He says Arr and matey." and seen["layers"] == [6] and len(seen["messages"]) == 1


def test_measuring_a_saved_preset_uses_the_prompt_it_names(runtime, monkeypatch):
    from extensions.steering.engine.recipe import Recipe

    seen = {}

    def fake_evaluate(ctx, system, vector, strength, mode, messages, metric, **options):
        seen.update(system=system, strength=strength, metric=metric, messages=messages)
        return Evaluation(**dict(FAKE_RESULT, metric=metric))

    monkeypatch.setattr(distill, "evaluate", fake_evaluate)
    runtime.store.save(Recipe(name="nice", positive=["Lovely!"], negative=["Awful."], method="mean", layers=[6], strength=0.2,
                              stands_in_for={"system": "Be nice.", "metric": "sentiment"}))
    runtime.store.save(Recipe(name="plain", positive=["Lovely!"], negative=["Awful."], method="mean", layers=[6]))
    message, table = distill_panel.run_measure(runtime, "nice", "", 2, no_progress)
    assert message.startswith("✔") and "KL recovery" in message and table["value"][0][0] == "nice"
    assert seen == {"system": "Be nice.", "strength": 0.2, "metric": "sentiment", "messages": seen["messages"]} and len(seen["messages"]) == 2
    message, _ = distill_panel.run_measure(runtime, "nice", "Be rude.", 1, no_progress)
    assert message.startswith("✔") and seen["system"] == "Be rude."
    message, table = distill_panel.run_measure(runtime, "plain", "  ", 1, no_progress)
    assert message.startswith("⚠") and "names no system prompt" in message and table == {"__type__": "update"}
    message, _ = distill_panel.run_measure(runtime, None, "Be nice.", 1, no_progress)
    assert message.startswith("⚠") and "choose a preset" in message


def test_the_summary_says_when_the_vector_costs_tokens():
    line = distill_panel.actions.tokens_line
    assert line(25) == "25 prompt tokens saved per request"
    assert line(-11).startswith("11 prompt tokens more per request")


def test_the_context_a_character_keeps_is_fitted_and_measured(runtime, monkeypatch):
    seen = {}

    def fake_evaluate(ctx, system, vector, strength, mode, messages, **options):
        seen.update(options)
        return Evaluation(**dict(FAKE_RESULT, instead=options.get("instead")))

    monkeypatch.setattr(distill, "evaluate", fake_evaluate)
    kept = "Jack is a sailor talking with You."
    message, _ = distill_panel.run_distill(runtime, "Pirate", "Jack is a pirate. He says Arr and matey.", "Jack-kept",
                                           "direct", 0, "6", 1, False, no_progress, f"  {kept} ")
    assert message.startswith("✔") and f"set that character's context to '{kept}'" in message
    assert runtime.store.recipe("Jack-kept").options.instead == kept and seen["instead"] == kept
