"""Presets out to GGUF control vectors and back in, through the command line, on the default model."""
from __future__ import annotations

import pytest
import torch

from extensions.steering import cli
from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.control_vectors import write_control_vector
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.vector import SteeringVector


@pytest.fixture
def presets(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_PRESETS", str(tmp_path / "presets"))
    return PresetStore(tmp_path / "presets")


def logits(ctx, text: str) -> torch.Tensor:
    ids = torch.tensor([[ctx.sink_id, *ctx.tokens(text)]])
    with torch.no_grad():
        return ctx.model(input_ids=ids).logits[0]


def test_a_calibrated_preset_exports_its_calibrated_strength_times_the_dose(presets, default_ctx, tmp_path, capsys):
    assert cli.main(["build", "calm", "--positive", "Calm", "--negative", "Angry", "--layer", "6", "--dose", "1.5", "--no-expand"]) == 0
    out = tmp_path / "calm.gguf"
    assert cli.main(["export", "calm", str(out)]) == 0
    assert cli.main(["import", str(out), "calm-back"]) == 0
    capsys.readouterr()
    cached = presets.vector("calm", default_ctx)  # the vector times its calibrated scale
    back = presets.vector("calm-back", default_ctx)
    with steer(default_ctx, [Steer(cached, 1.5, "all")]):
        expected = logits(default_ctx, "I hate you because")
    with steer(default_ctx, [Steer(back, 1.0, "all")]):
        got = logits(default_ctx, "I hate you because")
    assert torch.allclose(expected, got, atol=1e-4)  # llama.cpp's scale 1 is the preset at its dose


def test_export_then_import_steers_exactly_as_the_preset(presets, default_ctx, tmp_path, capsys):
    out = tmp_path / "love.gguf"
    assert cli.main(["export", "love", str(out), "--strength", "0.3"]) == 0
    assert "--control-vector-scaled" in capsys.readouterr().out
    assert cli.main(["import", str(out), "love-back"]) == 0
    imported = presets.recipe("love-back")
    assert imported.method == "imported" and imported.strength == 1.0 and imported.mode == "all"
    original = presets.vector("love", default_ctx)
    back = presets.vector("love-back", default_ctx)
    with steer(default_ctx, [Steer(original, 0.3, "all")]):
        expected = logits(default_ctx, "I hate you because")
    with steer(default_ctx, [Steer(back, 1.0, "all")]):
        got = logits(default_ctx, "I hate you because")
    assert torch.equal(expected, got)  # ours -> GGUF -> ours is exact
    assert (tmp_path / "presets" / "vectors" / "love-back.safetensors").is_file()
    assert cli.main(["rename", "love-back", "amour"]) == 0
    assert not (tmp_path / "presets" / "vectors" / "love-back.safetensors").exists()
    assert torch.equal(presets.vector("amour", default_ctx).directions[6], back.directions[6])
    assert cli.main(["delete", "amour"]) == 0
    assert not list((tmp_path / "presets" / "vectors").iterdir())


def test_what_llama_cpp_cannot_do_is_refused_with_a_message(presets, default_ctx, tmp_path, capsys):
    from extensions.steering.engine.recipe import Recipe

    presets.save(Recipe("front", positive=["Love"], negative=["Hate"], method="actadd", layers=[6], strength=4.0))
    presets.save(Recipe("later", positive=["Love"], negative=["Hate"], method="mean", layers=[6], strength=0.3, mode="generated"))
    for name, words in (("front", "per-position"), ("later", "generated")):
        assert cli.main(["export", name, str(tmp_path / f"{name}.gguf")]) == 2
        assert words in capsys.readouterr().err and not (tmp_path / f"{name}.gguf").exists()
    (tmp_path / "exists.gguf").write_text("mine")
    assert cli.main(["export", "love", str(tmp_path / "exists.gguf")]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "exists.gguf").read_text() == "mine"


@pytest.mark.slow
def test_a_control_vector_for_another_model_is_refused_naming_both(presets, tmp_path, capsys):
    wide = tmp_path / "wide.gguf"
    write_control_vector(wide, SteeringVector({5: torch.ones(64)}), 1.0, "llama")
    assert cli.main(["import", str(wide), "wide"]) == 2
    err = capsys.readouterr().err
    assert "64" in err and "576" in err and not presets.exists("wide")
    deep = tmp_path / "deep.gguf"
    write_control_vector(deep, SteeringVector({40: torch.ones(576)}), 1.0, "llama")
    assert cli.main(["import", str(deep), "deep"]) == 2
    assert "30 blocks" in capsys.readouterr().err and not presets.exists("deep")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(200)))
    assert cli.main(["import", str(junk), "junk"]) == 2
    assert "junk.gguf" in capsys.readouterr().err and not presets.exists("junk")


def test_the_tab_exports_and_imports(presets, default_model, tmp_path):
    from extensions.steering.runtime import SteeringRuntime
    from extensions.steering.ui import actions

    model, tokenizer = default_model
    rt = SteeringRuntime(presets, tmp_path / "data", lambda: (model, tokenizer))
    exported = actions.export_gguf(rt, "love", "0.3")
    assert exported.path.is_file() and exported.strength == 0.3 and "--control-vector-scaled" in exported.summary()
    imported = actions.import_gguf(rt, str(exported.path), "love-tab")
    assert imported.recipe.method == "imported" and "love-tab" in actions.preset_names(rt.store)
    with pytest.raises(ValueError, match="exists"):
        actions.import_gguf(rt, str(exported.path), "love-tab")
    with pytest.raises(ValueError, match="choose a .gguf"):
        actions.import_gguf(rt, None, "x")
    with pytest.raises(ValueError, match="out of range"):
        actions.export_gguf(rt, "love", "1e30")
