"""The fault matrix: bad values in every command-line flag, tab field and stored file.

Each case asserts: one clear message naming what is wrong, exit 2 on the command line (a ValueError
for the page, which the tab shows as a visible warning), no traceback, nothing else on disk changed,
other presets still usable, and a derived cache rebuilt from its recipe.
"""
from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from extensions.steering import cli
from extensions.steering.engine.files import save_vector
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.vector import SteeringVector
from extensions.steering.runtime import SteeringRuntime
from extensions.steering.ui import actions

BAD_NUMBERS = ["", "nan", "inf", "-inf", "1e30", "-1e30", "x", "[1]"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A preset folder with one good user preset, as the command line finds it."""
    folder = tmp_path / "presets"
    monkeypatch.setenv("STEERING_PRESETS", str(folder))
    PresetStore(folder).save(Recipe("mine", positive=["Love"], negative=["Hate"], method="mean", layers=[6], strength=0.3, mode="all"))
    return folder


def run(capsys, *args) -> tuple[int, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.err


def assert_clean_error(code: int, err: str, *names: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("\r")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert name.lower() in err.lower(), (name, err)


# -- the command line --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("flag", ["--coefficient"])
def test_build_refuses_bad_numbers_before_loading_anything(home, capsys, flag, value):
    before = snapshot(home)
    code, err = run(capsys, "build", "new", "--positive", "a", "--negative", "b", f"{flag}={value}")
    assert_clean_error(code, err)
    assert snapshot(home) == before


@pytest.mark.parametrize("value", ["", "x", "1.5", "nan", "inf", "150%", "-"])
def test_build_refuses_bad_layers(home, capsys, value):
    code, err = run(capsys, "build", "new", "--positive", "a", "--negative", "b", f"--layer={value}")
    assert_clean_error(code, err, "layer")


@pytest.mark.parametrize("args,names", [
    (["build", "../escape", "--positive", "a", "--negative", "b"], ["preset name"]),
    (["build", "", "--positive", "a", "--negative", "b"], ["preset name"]),
    (["build", "love", "--positive", "a", "--negative", "b"], ["love", "exists"]),
    (["build", "mine", "--positive", "a", "--negative", "b"], ["mine", "exists"]),
    (["build", "new", "--positive", "a", "--negative", "b", "--method", "magic"], ["magic"]),
    (["build", "new", "--positive", " ", "--negative", "b"], ["positive"]),
    pytest.param(["build", "new", "--positive", "a", "--negative", "b", "--layer", "99"], ["layer 99", "30 layers"], marks=pytest.mark.slow),
    (["generate", "--prompt", "x", "--steer", "nope"], ["nope"]),
    (["generate", "--prompt", "x", "--steer", "mine:1e30"], ["out of range"]),
    (["generate", "--prompt", "x", "--steer", "mine:nan"], ["strength"]),
    (["generate", "--prompt", "x", "--steer", "../../etc/passwd"], ["passwd"]),
    (["generate", "--prompt", "x", "--n", "0"], ["--n"]),
    (["generate", "--prompt", "x", "--compare"], ["--compare"]),
    (["generate", "--prompt", "x", "--system", "s"], ["--chat"]),
    (["generate", "--prompt", "x", "--temperature", "nan"], ["finite"]),
    (["generate", "--prompt", "x", "--model", "/nowhere/model"], ["/nowhere/model"]),
    (["show", "nope"], ["nope"]),
    (["delete", "love"], ["love", "read-only"]),
    (["rename", "mine", "../x"], ["preset name"]),
    (["rename", "mine", "love"], ["love"]),
    (["export", "mine", "out.txt"], [".gguf"]),
    (["export", "nope", "out.gguf"], ["nope"]),
    (["import", "missing.gguf", "x"], ["missing.gguf"]),
])
def test_command_line_faults_are_one_line_and_change_nothing(home, capsys, tmp_path, monkeypatch, args, names):
    monkeypatch.chdir(tmp_path)
    before = snapshot(home)
    code, err = run(capsys, *args)
    assert_clean_error(code, err, *names)
    assert snapshot(home) == before


def test_presets_pointing_at_a_file_fails_before_the_model_loads(home, capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, err = run(capsys, "list", "--presets", str(tmp_path / "file"))
    assert_clean_error(code, err, "not a folder")


def test_a_random_bytes_gguf_model_names_the_file(home, capsys, tmp_path):
    model = tmp_path / "junk.gguf"
    model.write_bytes(bytes(range(256)) * 4)
    code, err = run(capsys, "generate", "--prompt", "x", "--model", str(model))
    assert_clean_error(code, err, "junk.gguf")


# -- stored files --------------------------------------------------------------------------------------------
DAMAGED_RECIPES = {
    "empty": "",
    "truncated": "# steering recipe\nname: bad\npositive:\n- Love\nnegative:\n- Hate\nmethod: mean\nlayers:\n- 6\nstrength: 0.",
    "nan strength": "name: bad\npositive: [a]\nnegative: [b]\nmethod: mean\nlayers: [6]\nstrength: .nan\n",
    "huge strength": "name: bad\npositive: [a]\nnegative: [b]\nmethod: mean\nlayers: [6]\nstrength: 1.0e+30\n",
    "inf layer": "name: bad\npositive: [a]\nnegative: [b]\nmethod: mean\nlayers: [.inf]\nstrength: 0.3\n",
    "wrong type": "name: bad\npositive: 3\nnegative: [b]\nmethod: mean\nlayers: [6]\nstrength: 0.3\n",
    "a list": "- a\n- b\n",
    "binary": "\x00\x01\x02\xff",
    "no method": "name: bad\npositive: [a]\nnegative: [b]\n",
}


@pytest.mark.parametrize("kind", list(DAMAGED_RECIPES))
def test_a_damaged_recipe_is_named_and_the_others_stay_usable(home, capsys, tmp_path, kind):
    (home / "bad.yaml").write_bytes(DAMAGED_RECIPES[kind].encode("latin-1"))
    code, err = run(capsys, "show", "bad")
    assert_clean_error(code, err, "bad.yaml")
    code = cli.main(["list"])
    out = capsys.readouterr().out
    assert code == 0 and "bad" in out and "damaged" in out and "mine" in out
    store = PresetStore(home)
    rt = SteeringRuntime(store, tmp_path / "data", lambda: None)
    rt.set_active([("bad", 1.0), ("mine", 0.3)])  # one bad preset never unsteers the others
    assert store.recipe("mine").strength == 0.3


def test_one_bad_preset_never_unsteers_a_reply(home, tmp_path, default_model):
    (home / "bad.yaml").write_text(DAMAGED_RECIPES["inf layer"])
    store = PresetStore(home)
    model, tokenizer = default_model
    rt = SteeringRuntime(store, tmp_path / "data", lambda: (model, tokenizer))
    rt.set_active([("bad", 1.0), ("mine", 0.3)])
    steers = rt.steers_for_state({"steering_chat": False})
    assert len(steers) == 1 and "bad.yaml" in rt.last_error and "invalid layer" in rt.last_error
    assert "bad cannot steer" in rt.status_line()


def test_a_damaged_or_foreign_tensor_cache_is_rebuilt_from_its_recipe(home, default_ctx):
    store = PresetStore(home)
    first = store.vector("mine", default_ctx)
    cache = next((home / "tensors" / "mine").glob("*.safetensors"))
    for damage in (b"", cache.read_bytes()[:100], b"\x80\x04pickle" * 10):
        cache.write_bytes(damage)
        assert torch.equal(store.vector("mine", default_ctx).directions[6], first.directions[6])
    save_vector(cache, SteeringVector({6: torch.ones(64)}))  # wrong hidden size for this model
    assert store.vector("mine", default_ctx).hidden_size == 576


@pytest.mark.parametrize("name,content", [
    ("active.json", "{not json"), ("active.json", '{"active": [["mine", 1e400]]}'), ("active.json", '{"active": "x/../y"}'),
    ("chats.json", "[1, 2"), ("chats.json", '{"chat/A/1": {"enabled": "yes", "strengths": {"mine": "nan"}}}'),
    ("characters.yaml", ": : :"), ("characters.yaml", "Alice: {presets: [[../x, 1]]}"),
])
def test_damaged_runtime_files_are_said_and_ignored(home, tmp_path, name, content):
    data = tmp_path / "data"
    data.mkdir()
    (data / name).write_text(content)
    rt = SteeringRuntime(PresetStore(home), data, lambda: None)
    chat = {"steering_chat": True, "mode": "chat", "character_menu": "Alice", "unique_id": "1"}
    assert rt.plan(chat) in ([], [("mine", 0.3)])
    rt.chat_view(chat)
    rt.status_line()
    assert (data / name).read_text() == content  # never overwritten by reading


@pytest.mark.parametrize("name", ["chats.json", "active.json"])
def test_a_damaged_runtime_file_is_kept_aside_when_a_new_one_is_saved(home, tmp_path, name):
    data = tmp_path / "data"
    data.mkdir()
    (data / name).write_text("{not json")
    rt = SteeringRuntime(PresetStore(home), data, lambda: None)
    chat = {"steering_chat": True, "mode": "chat", "character_menu": "Alice", "unique_id": "1"}
    rt.plan(chat)
    if name == "chats.json":
        rt.save_chat_view(chat, False, {})
    else:
        rt.set_active([("mine", 0.3)])
    assert (data / (name + ".unreadable")).read_text() == "{not json"  # what the user had is not lost
    assert "kept as" in rt.last_error and json.loads((data / name).read_text())


def test_a_full_disk_or_a_read_only_folder_keeps_the_old_preset(home, monkeypatch):
    store = PresetStore(home)
    before = snapshot(home)
    import extensions.steering.engine.files as files

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "atomic_write", full)
    monkeypatch.setattr("extensions.steering.engine.presets.atomic_write", full)
    with pytest.raises(OSError, match="No space"):
        store.save(Recipe("mine", positive=["Other"], negative=["Hate"], method="mean", layers=[6], strength=0.9, mode="all"), overwrite=True)
    assert snapshot(home) == before and store.recipe("mine").strength == 0.3


# -- the tab's fields ---------------------------------------------------------------------------------------
@pytest.fixture
def runtime(home, tmp_path, default_model):
    model, tokenizer = default_model
    return SteeringRuntime(PresetStore(home), tmp_path / "data", lambda: (model, tokenizer))


@pytest.mark.parametrize("field,value,message", [
    ("strength", "nan", "finite"), ("strength", "1e30", "out of range"), ("strength", "x", "number"),
    ("layer", "-1", "layer"), ("layer", "99", "out of range.*0-29"), ("layer", "1.5", "whole"), ("layer", "", "empty"),
    ("positives", "", "positive"), ("negatives", "  \n ", "negative"), ("method", "magic", "magic"),
])
def test_build_form_faults_are_messages_for_the_page(runtime, field, value, message):
    form = {"positives": "Love", "negatives": "Hate", "method": "mean", "layer": 6, "strength": "0.3", "mode": "auto"}
    form[field] = value
    with pytest.raises(ValueError, match=message):
        actions.build_draft(runtime, form["positives"], form["negatives"], form["method"], form["layer"], form["strength"], form["mode"])


@pytest.mark.parametrize("formula,message", [
    ("nan * mine", "finite"), ("1e400 * mine", "finite"), ("mine - - ", "preset name '-'"), ("../x", "preset name"), ("nope", "nope"),
])
def test_mixer_faults_are_messages_for_the_page(runtime, formula, message):
    with pytest.raises(ValueError, match=message):
        actions.use_mix_in_chats(runtime, formula)
    assert runtime.active == []


@pytest.mark.parametrize("strengths", [{"mine": float("nan")}, {"mine": 1e30}, {"mine": "x"}])
def test_chat_panel_strengths_are_checked(runtime, strengths):
    chat = {"steering_chat": True, "mode": "chat", "character_menu": "Alice", "unique_id": "1"}
    runtime.set_active([("mine", 0.3)])
    with pytest.raises(ValueError, match="strength"):
        runtime.save_chat_view(chat, True, strengths)
    assert runtime.chat_choice("chat/Alice/1").strengths == {}


def test_a_half_read_completions_generator_leaves_no_hooks(default_ctx):
    from extensions.steering.engine.apply import Steer
    from extensions.steering.engine.build import build_from_pairs
    from extensions.steering.engine.generation import Sampling, completions
    from extensions.steering.engine.tokens import prompt_ids

    vector = build_from_pairs(default_ctx, [("Love", "Hate")], [6], "mean")
    found = completions(default_ctx, prompt_ids(default_ctx, "I hate you because"), [Steer(vector, 0.3, "all")], [0, 1, 2],
                        Sampling(max_new_tokens=2), compare=True)
    assert next(found).steered  # the first completion, then the generator is left half-read
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in default_ctx.model.modules())
    assert hooks == 0
    found.close()
