"""The command line on the default model: build, generate (json, compare), list/show/rename/delete, errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from extensions.steering.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_build_then_list_show_rename_delete(capsys, tmp_path):
    presets = str(tmp_path / "presets")
    code, out, _ = run(capsys, "build", "dogs", "--positive", "I love dogs", "--negative", "I love cats", "--presets", presets)
    # the defaults of a new mean preset: the layer chosen by measurement, the strength calibrated (dose 1)
    assert code == 0 and "saved dogs" in out and "layer chosen: " in out and "calibrated scale " in out and "dose 1 " in out
    first = out.splitlines()[0]  # plain words first, as the tab shows them; the method's details follow
    assert first.startswith("dogs: toward “I love dogs”, away from “I love cats”: strength 1 (1 = measured for this model), layer ")
    assert first.endswith("(picked by measuring this model)") and "KL" not in first and "mean" not in first
    code, out, _ = run(capsys, "list", "--presets", presets)
    assert code == 0 and "dogs" in out and "user" in out and "love" in out and "shipped" in out
    origins = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert origins["dogs"] == "user" and origins["love"] == "shipped"
    assert len({line.index(" shipped " if " shipped " in line else " user ") for line in out.splitlines()}) == 1  # one column, long names too
    code, out, _ = run(capsys, "show", "dogs", "--presets", presets)
    assert code == 0 and "I love cats" in out and "method: mean" in out and "strength: auto" in out and "layers: auto" in out
    assert "# cached for model LlamaForCausalLM" in out and "calibrated scale" in out and "KL budget" in out
    assert run(capsys, "rename", "dogs", "puppies", "--presets", presets)[0] == 0
    assert run(capsys, "delete", "puppies", "--presets", presets)[0] == 0
    code, _, err = run(capsys, "show", "puppies", "--presets", presets)
    assert code == 2 and err.startswith("error: no preset named 'puppies'")


@pytest.mark.slow
def test_generate_json_compare_from_the_same_seeds(capsys, tmp_path):
    argv = ["generate", "--prompt", "I hate you because", "--steer", "love:0.6", "--n", "2", "--seed", "5",
            "--max-new-tokens", "8", "--json", "--compare", "--presets", str(tmp_path)]
    code, out, _ = run(capsys, *argv)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 4
    assert [(r["steered"], r["seed"]) for r in rows] == [(True, 5), (False, 5), (True, 6), (False, 6)]
    assert all(isinstance(r["text"], str) and r["text"] for r in rows)
    assert rows[0]["text"] != rows[1]["text"]  # steering changed the completion from the same seed
    # The unsteered completion is reproducible: the same seed without --steer gives the same text.
    code, out, _ = run(capsys, "generate", "--prompt", "I hate you because", "--n", "1", "--seed", "5", "--max-new-tokens", "8", "--json")
    assert json.loads(out)["text"] == rows[1]["text"] and json.loads(out)["steered"] is False


@pytest.mark.slow
def test_chat_template_and_side_by_side(capsys, tmp_path):
    code, out, _ = run(capsys, "generate", "--prompt", "Hi!", "--chat", "--system", "Be brief.", "--steer", "kind",
                       "--max-new-tokens", "6", "--compare", "--presets", str(tmp_path))
    assert code == 0 and "steered, seed 0" in out and "unsteered, seed 0" in out


@pytest.mark.parametrize("argv, message", [
    (["show", "../etc"], "invalid preset name"),
    (["show", "nothing-here"], "no preset named"),
    (["generate", "--prompt", "hi", "--steer", "love:abc"], "the strength after ':' must be a number"),
    (["generate", "--prompt", "hi", "--steer", "missing.yaml"], "no recipe file"),
    (["generate", "--prompt", "hi", "--system", "x"], "--system needs --chat"),
    pytest.param(["generate", "--prompt", "   "], "the prompt is empty", marks=pytest.mark.slow),  # checked once the model is loaded
    (["generate", "--prompt", "hi", "--n", "0"], "--n must be at least 1"),
    (["generate", "--prompt", "hi", "--temperature", "nan"], "must be a finite number"),
    pytest.param(["build", "x", "--positive", "a", "--negative", "b", "--layer", "99"], "out of range", marks=pytest.mark.slow),  # the model's depth
    (["build", "../x", "--positive", "a", "--negative", "b"], "invalid preset name"),
    (["build", "love", "--positive", "a", "--negative", "b"], "exists"),
    (["build", "x", "--positive", "a", "--negative", "b", "--method", "actadd", "--mode", "all"], "per-position"),
    (["build", "x", "--positive", "a", "--negative", "b", "--strength", "0.3", "--dose", "2"], "the dose is relative to a calibrated strength: use it with strength auto"),
    (["build", "x", "--positive", "a", "--negative", "b", "--strength", "strong"], "argument --strength"),
    (["build", "x", "--positive", "a", "--negative", "b", "--dose", "-1"], "the dose must be above 0"),
    (["build", "x", "--positive", "a", "--negative", "b", "--dose", "inf"], "the dose must be a finite number"),
    (["build", "x", "--positive", "a", "--negative", "b", "--layer", "automatic"], "or auto"),
    (["build", "x", "--positive", "a", "--negative", "b", "--layer", "auto", "--layer", "6"], "auto alone"),
    (["generate", "--prompt", "hi", "--model", "/no/such/model"], "model not found"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_error_line_and_exit_2(capsys, tmp_path, argv, message):
    code, out, err = run(capsys, *argv, *([] if argv[0] == "frobnicate" else ["--presets", str(tmp_path / "p")]))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").rglob("*.yaml"))


@pytest.mark.slow
def test_build_a_fixed_strength_and_a_dose(capsys, tmp_path):
    presets = str(tmp_path / "presets")
    code, out, _ = run(capsys, "build", "fixed", "--positive", "Happy", "--negative", "Sad", "--layer", "6", "--coefficient", "0.3", "--presets", presets)
    assert code == 0 and "strength 0.3" in out and "calibrated" not in out
    assert "expanded (v1)" in out  # one short pair of words is expanded by default
    shown = run(capsys, "show", "fixed", "--presets", presets)[1]
    assert "strength: 0.3" in shown and "expand: v1" in shown
    code, out, _ = run(capsys, "build", "plain", "--positive", "Happy", "--negative", "Sad", "--layer", "6", "--strength", "0.3",
                       "--no-expand", "--presets", presets)
    assert code == 0 and "expanded" not in out
    assert "expand" not in run(capsys, "show", "plain", "--presets", presets)[1]
    code, out, _ = run(capsys, "build", "said", "--positive", "I talk about trains constantly", "--negative",
                       "I do not talk about trains constantly", "--layer", "6", "--strength", "0.3", "--presets", presets)
    assert code == 0 and "expanded (sentence-v1): each sentence told as the chat template's system message" in out
    assert "expand: sentence-v1" in run(capsys, "show", "said", "--presets", presets)[1]
    code, out, _ = run(capsys, "build", "dosed", "--positive", "Happy", "--negative", "Sad", "--layer", "6", "--dose", "1.5", "--presets", presets)
    assert code == 0 and "calibrated scale" in out and "dose 1.5 " in out
    code, out, _ = run(capsys, "show", "dosed", "--presets", presets)
    assert "strength: auto\ndose: 1.5\n" in out and "layers 6" in out


def test_python_dash_m_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "-m", "extensions.steering", "show", "love/.."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: invalid preset name")


@pytest.mark.parametrize("command", ["build", "generate", "list", "show", "rename", "delete", "export", "import", "distill", "evaluate", "ui"])
def test_every_help_page_prints(capsys, command):
    with pytest.raises(SystemExit) as stopped:
        main([command, "--help"])
    assert stopped.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--temperature", "1e-40"], "error: argument --temperature: the temperature must be 0 (greedy) or at least 0.01, got 1e-40"),
    (["--top-p", "0"], "error: argument --top-p: top-p must lie in (0, 1], got 0"),
    (["--seed", "18446744073709551616"], "error: argument --seed: the seed must be between 0 and 4294967295, got 18446744073709551616"),
    (["--seed", "4294967295", "--n", "2"], "error: the last seed (--seed + --n - 1) must be between 0 and 4294967295, got 4294967296"),
    (["--max-new-tokens", "1000000000"], "error: argument --max-new-tokens: max new tokens must be between 1 and 4096, got 1000000000"),
])
def test_generate_refuses_values_out_of_range_before_the_model_loads(capsys, monkeypatch, argv, message):
    from extensions.steering import cli

    loaded = []
    monkeypatch.setattr(cli, "context_for", lambda args: loaded.append(args))
    code, out, err = run(capsys, "generate", "--prompt", "hi", *argv)
    assert code == 2 and err == message + "\n" and out == "" and loaded == []


def test_evaluate_refuses_absurd_reply_lengths_before_the_model_loads(capsys):
    code, out, err = run(capsys, "evaluate", "love", "--system", "Be kind.", "--behaviour-tokens", "1000000000")
    assert code == 2 and err == "error: argument --behaviour-tokens: max new tokens must be between 1 and 4096, got 1000000000\n"


@pytest.mark.slow
def test_generate_refuses_a_prompt_longer_than_the_context_before_any_work(capsys, monkeypatch, tmp_path):
    from transformers import GenerationMixin

    from extensions.steering.engine.presets import PresetStore

    work = []
    monkeypatch.setattr(GenerationMixin, "generate", lambda *a, **k: work.append("generate"))
    monkeypatch.setattr(PresetStore, "vector", lambda *a, **k: work.append("vector"))
    code, out, err = run(capsys, "generate", "--prompt", "word " * 9000, "--steer", "love", "--max-new-tokens", "40",
                         "--presets", str(tmp_path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: the prompt is 9002 tokens long and max new tokens asks for 40 more, but the model reads at most 8192 positions")  # the sink token, 9000 words, the trailing space
    assert work == []  # refused before the steering vector was built, and before generating


@pytest.mark.slow
def test_build_shows_its_progress_on_stderr(capsys, tmp_path):
    pairs = [("I love this", "I hate this"), ("What a joy", "What a pain"), ("So kind", "So cruel")]
    argv = [arg for pos, neg in pairs for arg in ("--positive", pos, "--negative", neg)]
    code, out, err = run(capsys, "build", "many", *argv, "--layer", "6", "--strength", "0.3", "--presets", str(tmp_path))
    assert code == 0 and "saved many" in out
    assert "reading prompt pairs: 6/6" in err  # both sides of every pair, counted as they are read
