"""Files a stranger could send: every reader refuses what breaks a limit in one line naming the file and
the limit, quickly and in bounded memory, and nothing else on disk changes (issue 20's reproductions)."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
import yaml

from extensions.steering import cli
from extensions.steering.characters import read_character_file
from extensions.steering.engine import untrusted
from extensions.steering.engine.control_vectors import ControlVectorError, read_control_vector, write_control_vector
from extensions.steering.engine.files import load_vector, save_vector
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.recipe import Recipe, read_recipe
from extensions.steering.engine.untrusted import FileRefused
from extensions.steering.engine.validation import PresetError
from extensions.steering.engine.vector import SteeringVector


# -- hostile files, as the issue wrote them ------------------------------------------------------------
def _s(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def hang_gguf(count: int = 2**62, item_type: int = 0) -> bytes:
    """The issue's 102-byte control vector whose metadata declares an array of ``count`` items."""
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + _s(b"general.architecture") + struct.pack("<I", 8) + _s(b"controlvector") + _s(b"x")
    return head + struct.pack("<IIQ", 9, item_type, count)


def alias_bomb() -> str:
    """Nine levels of nine aliases: 1 KB of YAML, 387 420 489 values once expanded."""
    letters = "abcdefghi"
    levels = ["&a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"] + [f"&{letters[k]} [" + ",".join([f"*{letters[k - 1]}"] * 9) + "]" for k in range(1, 9)]
    return "[" + ", ".join(levels) + "]"


DEEP = "[" * 50_000


def folder_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


HANG = 5  # seconds: a bound far above any of these loads (milliseconds) and far below a hang (the issue's minutes)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    started = time.perf_counter()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert time.perf_counter() - started < 2 * HANG, f"{argv} took {time.perf_counter() - started:.0f} s"
    return code, out, err


def one_line_error(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, (word, err)


def good_recipe(name: str) -> Recipe:
    return Recipe(name, positive=["Love"], negative=["Hate"], method="mean", layers=[1], strength=0.3, mode="all")


@pytest.fixture
def store(tmp_path) -> PresetStore:
    store = PresetStore(tmp_path / "presets", shipped=None)
    store.save(good_recipe("good"))
    return store


# -- GGUF ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("item_type", [0, 8, 9, 10])  # bytes, texts, arrays, u64
def test_a_gguf_array_of_2_62_items_is_refused_at_once_in_bounded_memory(tmp_path, item_type):
    path = tmp_path / "hang.gguf"
    path.write_bytes(hang_gguf(item_type=item_type))
    assert path.stat().st_size == 102
    tracemalloc.start()
    with pytest.raises(ControlVectorError) as caught:
        read_control_vector(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert "4,611,686,018,427,387,904 items, over the 65,536 an array in a control vector may hold" in str(caught.value)
    assert peak < 1 << 20


def test_a_5_mb_gguf_with_a_5_million_item_array_is_refused_by_the_metadata_limit(tmp_path):
    path = tmp_path / "big.gguf"
    path.write_bytes(hang_gguf(5_000_000) + bytes(5_000_000))
    started = time.perf_counter()
    tracemalloc.start()
    with pytest.raises(ControlVectorError, match="5,000,000 items, over the 65,536"):
        read_control_vector(path)
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()
    # within the item limit, the array still may not make the metadata larger than a control vector's
    path.write_bytes(hang_gguf(60_000, item_type=8) + _s(b"x" * 20) * 60_000)
    with pytest.raises(ControlVectorError, match="metadata over the 1 MiB a control vector may hold"):
        read_control_vector(path)
    assert time.perf_counter() - started < HANG


def test_gguf_counts_and_lengths_are_checked_against_the_bytes_present(tmp_path):
    """Tensor and metadata counts, text lengths: never trusted beyond what the file holds."""
    path = tmp_path / "counts.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**40, 2**40) + _s(b"general.architecture")[:12])
    with pytest.raises(ControlVectorError, match="1,099,511,627,776 metadata pairs and 1,099,511,627,776 tensors, more than its 36 bytes"):
        read_control_vector(path)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**63) + b"key" + bytes(16))
    with pytest.raises(ControlVectorError, match="damaged or truncated GGUF file: a metadata key needs"):
        read_control_vector(path)


def test_a_control_vector_over_64_mib_is_refused_unread(tmp_path):
    path = write_control_vector(tmp_path / "big.gguf", SteeringVector({2: torch.randn(8)}), 1.0, "llama")
    with open(path, "r+b") as handle:
        handle.truncate(65 << 20)  # sparse: nothing is written
    with pytest.raises(ControlVectorError, match="big.gguf: 65 MiB, over the 64 MiB a control vector may hold"):
        read_control_vector(path)


def test_two_names_for_one_direction_add_up_and_non_ascii_digits_are_refused(tmp_path):
    """direction.5 and direction.05 are one layer to llama.cpp, which adds both; 'direction.٥' it refuses."""
    import numpy as np

    from tests.test_control_vectors import write_raw  # the test-only raw GGUF writer

    both = write_raw(tmp_path / "both.gguf", {"direction.5": np.ones(16, np.float32), "direction.05": np.full(16, 2, np.float32)})
    vector, info = read_control_vector(both)
    assert vector.layers == [6] and torch.equal(vector.directions[6][0], torch.full((16,), 3.0))
    arabic = write_raw(tmp_path / "arabic.gguf", {"direction.\u0665": np.ones(16, np.float32)})
    with pytest.raises(ControlVectorError, match="is not a direction.N"):
        read_control_vector(arabic)


def test_import_of_a_hostile_gguf_through_the_command_line_and_the_tab(tmp_path, capsys, store, default_model):
    from extensions.steering.runtime import SteeringRuntime
    from extensions.steering.ui import actions

    path = tmp_path / "hang.gguf"
    path.write_bytes(hang_gguf())
    before = folder_hash(store.folder)
    code, _, err = run(capsys, "import", str(path), "x", "--presets", str(store.folder))
    assert code == 2
    one_line_error(err, "hang.gguf", "over the 65,536 an array in a control vector may hold")
    model, tokenizer = default_model
    rt = SteeringRuntime(store, tmp_path / "data", lambda: (model, tokenizer))
    with pytest.raises(ControlVectorError, match="over the 65,536"):
        actions.import_gguf(rt, str(path), "x")
    assert folder_hash(store.folder) == before


# -- YAML and JSON ------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["strength", "description"])
def test_an_alias_bomb_in_a_recipe_is_refused_by_show_and_list_keeps_the_others(tmp_path, capsys, store, field):
    bad = store.folder / "bomb.yaml"
    bad.write_text(f"name: bomb\npositive: [a]\nnegative: [b]\nmethod: mean\nlayers: [1]\nmode: all\n{field}: {alias_bomb()}\n")
    before = folder_hash(store.folder)
    code, _, err = run(capsys, "show", "bomb", "--presets", str(store.folder))
    assert code == 2
    one_line_error(err, "bomb.yaml", "more than the 100,000 values a recipe may hold")
    code, out, _ = run(capsys, "list", "--presets", str(store.folder))
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and "damaged: " in lines["bomb"] and "100,000 values" in lines["bomb"] and len(lines["bomb"]) < 300
    assert "mean" in lines["good"] and "shipped" in lines["love"]  # the others as ever
    assert sum("damaged" in line for line in lines.values()) == 1
    assert folder_hash(store.folder) == before


def test_deep_nesting_in_a_recipe_is_refused_and_list_keeps_the_others(capsys, store):
    (store.folder / "deep.yaml").write_text(f"name: deep\ndescription: {DEEP}\n")
    code, out, _ = run(capsys, "list", "--presets", str(store.folder))
    assert code == 0 and "deep " in out and "nested deeper than the 64 levels a recipe may have" in out and "good " in out
    code, _, err = run(capsys, "show", "deep", "--presets", str(store.folder))
    assert code == 2
    one_line_error(err, "deep.yaml", "nested deeper than the 64 levels")


def test_a_50_mb_recipe_is_refused_unread_and_list_keeps_the_others(capsys, store):
    big = store.folder / "big.yaml"
    with open(big, "w") as handle:
        handle.write("name: big\npositive: [a]\nnegative: [b]\nmethod: mean\nlayers: [1]\nstrength: 0.3\nmode: all\ndescription: '")
        handle.write("x" * 50_000_000 + "'\n")
    code, out, _ = run(capsys, "list", "--presets", str(store.folder))
    assert code == 0 and "good " in out
    (line,) = [line for line in out.splitlines() if line.startswith("big ")]
    assert "over the 8 MiB a recipe may hold" in line and len(line) < 300


@pytest.mark.parametrize("where", ["recipe", "delete", "rename"])
def test_a_damaged_recipe_can_still_be_deleted_but_not_renamed(capsys, store, where):
    (store.folder / "deep.yaml").write_text(f"name: deep\ndescription: {DEEP}\n")
    if where == "delete":
        assert run(capsys, "delete", "deep", "--presets", str(store.folder))[0] == 0
        assert not (store.folder / "deep.yaml").exists() and store.exists("good")
    elif where == "rename":
        code, _, err = run(capsys, "rename", "deep", "deeper", "--presets", str(store.folder))
        assert code == 2 and (store.folder / "deep.yaml").exists()
        one_line_error(err, "nested deeper")
    else:
        with pytest.raises(PresetError, match="nested deeper"):
            store.recipe("deep")


def test_yaml_limits_are_generous_for_real_files(tmp_path):
    """A recipe of 10 000 prompt pairs, anchors used a few times, 60 levels of nesting: all load."""
    many = good_recipe("many")
    many.positive = [f"I love thing number {i}" for i in range(10_000)]
    many.negative = [f"I hate thing number {i}" for i in range(10_000)]
    path = tmp_path / "many.yaml"
    path.write_text(many.to_yaml())
    assert read_recipe(path).positive == many.positive
    assert untrusted.parse_yaml("a: &x [1, 2]\nb: *x\nc: *x\n", "f", untrusted.RECIPE) == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}
    assert untrusted.parse_yaml("[" * 60 + "]" * 60, "f", untrusted.RECIPE) is not None
    assert untrusted.parse_json("[" * 64 + "]" * 64, "f", untrusted.DATA_FILE) is not None
    with pytest.raises(FileRefused, match="f: nested deeper than the 64 levels a data file may have"):
        untrusted.parse_json("[" * 65 + "]" * 65, "f", untrusted.DATA_FILE)
    # brackets inside texts are not nesting
    assert untrusted.parse_json(json.dumps({"a": "[" * 1000}), "f", untrusted.DATA_FILE) == {"a": "[" * 1000}


def test_yaml_and_json_errors_of_other_kinds_are_one_refusal():
    for text in ("a: " + "1" * 5000, "a: 2020-13-45", "a: *nowhere", "{", "a: !!python/object:os.system x", "a: &x [1, *x]"):
        with pytest.raises(FileRefused, match="^f: damaged YAML"):
            untrusted.parse_yaml(text, "f", untrusted.RECIPE)
    for text in ("1" * 5000, "{", "[1,]", '"\\ud800'):
        with pytest.raises(FileRefused, match="^f: damaged JSON"):
            untrusted.parse_json(text, "f", untrusted.DATA_FILE)


def test_messages_quoting_a_file_stay_one_short_line(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("name: long\npositive: [a]\nnegative: [b]\nmethod: mean\nlayers: [1]\nmode: all\nstrength: [" + "9, " * 100_000 + "]\n")
    with pytest.raises(PresetError) as caught:
        read_recipe(path)
    assert len(str(caught.value)) <= untrusted.MAX_MESSAGE and "\n" not in str(caught.value) and "long.yaml" in str(caught.value)


# -- characters and the runtime's data files -----------------------------------------------------------
def runtime(store: PresetStore, data: Path, tokenizer, characters: Path | None = None):
    from extensions.steering.runtime import SteeringRuntime
    from tests.test_runtime import tiny_llama

    model = tiny_llama()
    return SteeringRuntime(store, data, lambda: (model, tokenizer), lambda: "Transformers", characters_dir=characters)


@pytest.fixture
def rt(tmp_path, store, default_model):
    (tmp_path / "characters").mkdir()
    return runtime(store, tmp_path / "data", default_model[1], tmp_path / "characters")


def chat_state(character: str = "Alice") -> dict:
    return {"steering_chat": True, "mode": "chat", "character_menu": character, "unique_id": "20260101-10-00-00"}


@pytest.mark.parametrize("steering", [f"{{good: {alias_bomb()}}}", DEEP, f"[{alias_bomb()}]"])
def test_a_hostile_character_steering_key_is_reported_and_plan_returns_at_once(tmp_path, rt, steering, monkeypatch):
    from extensions.steering.runtime import attachments

    character = tmp_path / "characters" / "Alice.yaml"
    character.write_text(f"name: Alice\ncontext: A friend.\nsteering: {steering}\n")
    before = folder_hash(tmp_path)
    reads = []
    monkeypatch.setattr(attachments, "read_character_file", lambda path: reads.append(path) or read_character_file(path))
    started = time.perf_counter()
    assert rt.plan(chat_state()) == [] and rt.plan(chat_state()) == []
    view = rt.chat_view(chat_state())  # the chat panel answers too, and says why the character does not steer
    assert view.rows == [] and "Alice.yaml" in view.last_problem
    assert time.perf_counter() - started < HANG
    assert len(reads) == 1  # refused once, not read again at every reply while it is unchanged
    assert "Alice.yaml" in rt.last_error and "\n" not in rt.last_error
    assert "character file may" in rt.last_error
    assert folder_hash(tmp_path) == before


def test_a_character_steering_list_is_bounded(tmp_path, rt):
    (tmp_path / "characters" / "Alice.yaml").write_text("name: Alice\ncontext: A friend.\nsteering: [" + ", ".join(["good"] * 10_000) + "]\n")
    started = time.perf_counter()
    assert rt.plan(chat_state()) == []
    assert time.perf_counter() - started < HANG and "more than the 64 one reply may combine" in rt.last_error


@pytest.mark.parametrize("name, text", [("active.json", DEEP), ("chats.json", DEEP), ("characters.yaml", f"Alice: {alias_bomb()}"),
                                        ("active.json", "{" * 100)])
def test_a_hostile_data_file_is_reported_and_the_runtime_still_serves(tmp_path, store, default_model, name, text):
    data = tmp_path / "data"
    data.mkdir()
    (data / name).write_text(text)
    rt = runtime(store, data, default_model[1])
    started = time.perf_counter()
    assert rt.plan(chat_state()) == [] and rt.active == []
    assert time.perf_counter() - started < HANG
    assert name in rt.last_error and "\n" not in rt.last_error
    rt.set_active([("good", 0.3)])  # and it keeps serving: a new choice is saved over the refused file
    assert rt.active == [("good", 0.3)]


def test_read_character_file_refuses_with_a_value_error(tmp_path):
    path = tmp_path / "Bob.json"
    path.write_text(DEEP)
    with pytest.raises(ValueError, match="Bob.json: nested deeper than the 64 levels a character file may have"):
        read_character_file(path)


# -- safetensors headers ------------------------------------------------------------------------------
def test_safetensors_header_lengths_are_checked_against_the_file_and_the_cap(tmp_path):
    path = tmp_path / "v.safetensors"
    save_vector(path, SteeringVector({2: torch.randn(8)}))
    data = path.read_bytes()
    for length, message in ((2**63, "over the 8 MiB a safetensors header may hold"), (len(data), "declares a .* header but holds")):
        path.write_bytes(struct.pack("<Q", length) + data[8:])
        with pytest.raises(PresetError, match=f"v.safetensors: damaged tensor file: .*{message}"):
            load_vector(path)
    header = b'{"__metadata__": {"residual_norms": "' + b"[" * 10_000 + b'"}}'
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(PresetError, match="nested deeper"):
        load_vector(path)


# -- a preset touches only its own files --------------------------------------------------------------
def imported_pair(store: PresetStore) -> Path:
    """Preset 'theirs', imported (its vector cannot be rebuilt), and 'mine', whose recipe names theirs."""
    from extensions.steering.engine.recipe import ImportedVector

    theirs = Recipe("theirs", method="imported", layers=[2], strength=1.0, mode="all", imported=ImportedVector("theirs.safetensors", 8, 4))
    store.save_imported(theirs, SteeringVector({2: torch.randn(8)}))
    mine = store.folder / "mine.yaml"
    mine.write_text(store._user_path("theirs").read_text().replace("name: theirs", "name: mine"))
    return store.folder / "vectors" / "theirs.safetensors"


def test_a_recipe_naming_another_presets_vector_cannot_delete_move_or_use_it(capsys, store):
    vector = imported_pair(store)
    kept = vector.read_bytes()
    code, _, err = run(capsys, "rename", "mine", "other", "--presets", str(store.folder))
    assert code == 2
    one_line_error(err, "mine.yaml", "'theirs.safetensors' is not this preset's own vector file ('mine.safetensors')")
    with pytest.raises(PresetError, match="not this preset's own vector file"):
        store.recipe("mine").imported_vector_path()
    assert run(capsys, "delete", "mine", "--presets", str(store.folder))[0] == 0
    assert vector.read_bytes() == kept and store.exists("theirs") and not store.exists("mine")
    # its own vector moves with a rename, as before
    assert run(capsys, "rename", "theirs", "ours", "--presets", str(store.folder))[0] == 0
    assert (store.folder / "vectors" / "ours.safetensors").read_bytes() == kept and not vector.exists()


def test_file_modes_are_those_of_a_plain_file(tmp_path, store):
    """Recipes, cached and imported vectors, control vectors and data files: 0666 less the umask, all alike."""
    from extensions.steering.runtime.files import DataFiles
    from extensions.steering.runtime.problems import Problems

    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    imported_pair(store)
    save_vector(tmp_path / "cached.safetensors", SteeringVector({2: torch.randn(8)}))
    write_control_vector(tmp_path / "v.gguf", SteeringVector({2: torch.randn(8)}), 1.0, "llama")
    DataFiles(tmp_path / "data", Problems()).write("active.json", {"active": []})
    written = [*store.folder.rglob("*.yaml"), *store.folder.rglob("*.safetensors"), tmp_path / "cached.safetensors",
               tmp_path / "v.gguf", tmp_path / "data" / "active.json"]
    assert len(written) == 7
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(expected) for p in written}


def test_yaml_parses_like_safe_load(tmp_path):
    """The bounded loader reads exactly what yaml.safe_load reads (the shipped recipes as the sample)."""
    from extensions.steering.engine.presets import SHIPPED_DIR

    for path in SHIPPED_DIR.glob("*.yaml"):
        text = path.read_text()
        assert untrusted.parse_yaml(text, path, untrusted.RECIPE) == yaml.safe_load(text)


def test_a_recipes_text_reaches_the_terminal_escaped(capsys, store):
    """A description holding a terminal escape sequence (clear the screen) or line breaks is listed as one
    line with the controls shown, not obeyed."""
    (store.folder / "loud.yaml").write_text('name: loud\npositive: [a]\nnegative: [b]\nmethod: mean\nlayers: [1]\nstrength: 0.3\n'
                                            'mode: all\ndescription: "\\e[2J\\e]0;owned\\a next\\nline"\n')
    assert read_recipe(store.folder / "loud.yaml").description.startswith("\x1b[2J")
    code, out, _ = run(capsys, "list", "--presets", str(store.folder))
    (line,) = [line for line in out.splitlines() if line.startswith("loud ")]
    assert code == 0 and "\x1b" not in out and "\x07" not in out and line.endswith("\\x1b[2J\\x1b]0;owned\\x07 next line")


def test_the_tab_refuses_hostile_recipes_in_one_line_and_lists_the_others(store):
    from extensions.steering.ui import actions

    (store.folder / "bomb.yaml").write_text(f"name: bomb\npositive: [a]\nnegative: [b]\nstrength: {alias_bomb()}\n")
    (store.folder / "deep.yaml").write_text(f"name: deep\ndescription: {DEEP}\n")
    before = folder_hash(store.folder)
    assert {"bomb", "deep", "good"} <= set(actions.preset_names(store))
    for name, limit in (("bomb", "100,000 values"), ("deep", "64 levels")):
        for attempt in (lambda: actions.preset_text(store, name), lambda: actions.mix_items(store, name),
                        lambda: actions.rename_preset(store, name, "x")):
            with pytest.raises(PresetError, match=limit):
                attempt()
    assert "method: mean" in actions.preset_text(store, "good")
    assert folder_hash(store.folder) == before
