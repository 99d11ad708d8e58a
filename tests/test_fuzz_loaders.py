"""Property-based fuzzing of every loader of files a stranger could send (hypothesis).

Mutated and random recipes, GGUF control vectors, safetensors vectors, character files and the runtime's
data files (chats.json, active.json, characters.yaml) are fed to their readers, through the command line
and the runtime where a user meets them. Each input must give a correct load or one clear error of ours
(PresetError, ControlVectorError, FileRefused: one bounded line naming the file), in bounded memory and
time, and leave every file as it was.

CI runs a small, derandomised profile (a few seconds per loader). For a longer run:
``STEERING_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz_loaders.py --hypothesis-show-statistics``
(random seeds then; a failure prints the input, which belongs in tests/fuzz_corpus/<loader>/ as a regression case).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from extensions.steering import cli
from extensions.steering.characters import read_character_file
from extensions.steering.engine.control_vectors import ControlVectorError, read_control_vector, write_control_vector
from extensions.steering.engine.files import load_vector, save_vector
from extensions.steering.engine.presets import SHIPPED_DIR, PresetStore
from extensions.steering.engine.recipe import Recipe, read_recipe
from extensions.steering.engine.untrusted import MAX_MESSAGE, FileRefused
from extensions.steering.engine.validation import PresetError
from extensions.steering.engine.vector import SteeringVector

EXAMPLES = int(os.environ.get("STEERING_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 60,
    derandomize=not EXAMPLES,  # CI: the same inputs every run; on demand: new ones
    deadline=timedelta(seconds=10),  # per input; generous for a loaded machine, far below a hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    database=None,
)
MEMORY = 64 << 20  # bytes any one load may allocate at its peak
CORPUS = Path(__file__).parent / "fuzz_corpus"
OUR_ERRORS = (PresetError, ControlVectorError, FileRefused)


# -- mutation -----------------------------------------------------------------------------------------
BIG = [0, 1, 7, 255, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**64 - 1]
TOKENS = [b"&a ", b"*a", b"[", b"]", b"{", b"}", b": ", b"- ", b"\n", b"!!python/object:os.system ", b"<<: *a\n", b"\x00", b"\xff",
          b"'", b'"', b"\\u0000", b"1e999", b"-.inf", b".nan", b"9" * 5000, b"~", b"? ", b"%YAML 1.1\n---\n", b"\t"]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A valid file changed by a few edits: bytes flipped, replaced, cut, repeated, a u64 overwritten."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "u64", "u32", "duplicate"]))
        if kind == "flip" and data:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[where:where] = draw(st.sampled_from(TOKENS) | st.binary(max_size=16))
        elif kind == "delete":
            del data[where:where + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[where:]
        elif kind in ("u64", "u32"):
            value = draw(st.sampled_from(BIG) | st.integers(0, 2**64 - 1))
            packed = struct.pack("<Q", value) if kind == "u64" else struct.pack("<I", value & 0xFFFFFFFF)
            data[where:where + len(packed)] = packed
        elif kind == "duplicate":
            data[where:where] = data[where:where + draw(st.integers(1, 256))] * draw(st.integers(2, 50))
    return bytes(data)


def values(leaves=None):
    """Random YAML-able data: what a hand-written or hostile file may hold."""
    scalars = leaves if leaves is not None else st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                        max_leaves=30)


def check(run):
    """Run ``run()`` within the memory bound; return its result, or the error if it is one of ours.
    Any other exception fails the test with its traceback."""
    tracemalloc.start()
    try:
        try:
            return run()
        except OUR_ERRORS as error:
            message = str(error)
            assert message and "\n" not in message and len(message) <= MAX_MESSAGE, message
            return error
        finally:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert peak < MEMORY, f"peak {peak / 2**20:.0f} MiB"


def folder_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def corpus(loader: str) -> list[bytes]:
    """The crashing inputs found so far (and the issue's), kept as regression cases."""
    folder = CORPUS / loader
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []


# -- the JSON nesting scan ----------------------------------------------------------------------------
def _depth(value) -> int:
    if isinstance(value, (list, dict)):
        return 1 + max(map(_depth, value.values() if isinstance(value, dict) else value), default=0)
    return 0


@FUZZ
@given(values(st.text(alphabet='[]{}"\\ ab\u00e9\ud7ff', max_size=8) | st.integers()), st.booleans(), st.integers(1, 9))
def test_json_depth_counts_only_the_brackets_outside_strings(value, ascii_only, chunk):
    from extensions.steering.engine.untrusted import json_depth

    assert json_depth(json.dumps(value, ensure_ascii=ascii_only), chunk) == _depth(value)


# -- recipes ------------------------------------------------------------------------------------------
RECIPE_SEEDS = [p.read_bytes() for p in sorted(SHIPPED_DIR.glob("*.yaml"))] + [
    Recipe("fz", ["Love"], ["Hate"], method="mean").to_yaml().encode(),
    Recipe("fz", ["Happy"], ["Sad"], method="actadd").to_yaml().encode(),
]
RECIPE_KEYS = ["name", "positive", "negative", "description", "method", "layers", "layer", "strength", "dose", "mode", "reading",
               "distill", "imported", "stands_in_for", "expand", "extra", "calibrated"]


@st.composite
def random_recipe(draw) -> bytes:
    """A recipe of random fields and values, some of them plausible, dumped as YAML."""
    data = draw(st.dictionaries(st.sampled_from(RECIPE_KEYS), values(), max_size=8))
    data.setdefault("positive", ["a"])
    return yaml.safe_dump(data, allow_unicode=True).encode()


def load_recipe(text: bytes) -> None:
    """read_recipe, and the command line's list and show over a folder holding it and one good preset."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        store = PresetStore(folder, shipped=None)
        store.save(Recipe("good", ["Love"], ["Hate"], method="mean", layers=[1], strength=0.3))
        (folder / "fz.yaml").write_bytes(text)
        before = folder_hash(folder)
        loaded = check(lambda: read_recipe(folder / "fz.yaml"))
        if isinstance(loaded, Recipe):  # a correct load: written again, it reads back the same
            again = folder / "again.yaml"
            again.write_text(loaded.to_yaml(), encoding="utf-8")
            assert read_recipe(again) == loaded
            again.unlink()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert check(lambda: cli.main(["list", "--presets", str(folder)])) == 0
            shown = check(lambda: cli.main(["show", "fz", "--presets", str(folder)]))
        lines = out.getvalue().splitlines()
        assert [line for line in lines if line.startswith("good ") and "mean" in line]  # the other preset as ever
        assert len([line for line in lines if line.startswith("fz ")]) == 1
        assert shown == 0 or (shown == 2 and err.getvalue().count("\n") == 1 and err.getvalue().startswith("error: "))
        assert folder_hash(folder) == before


@FUZZ
@given(mutated(RECIPE_SEEDS + corpus("recipe")))
@example(b"strength: [&a [1,1], [*a,*a], " + b"[" * 50_000 + b"]")
def test_mutated_recipes(text):
    load_recipe(text)


@FUZZ
@given(random_recipe())
def test_random_recipes(text):
    load_recipe(text)


# -- GGUF control vectors -----------------------------------------------------------------------------
def _gguf_seeds() -> list[bytes]:
    seeds = []
    with tempfile.TemporaryDirectory() as folder:
        for i, layers in enumerate(([2], [2, 3, 5], [4, 9])):
            vector = SteeringVector({layer: torch.randn(8 + 8 * i) for layer in layers}, {layers[0]: 3.0})
            seeds.append(write_control_vector(Path(folder) / f"{i}.gguf", vector, 0.5, "llama").read_bytes())
    return seeds


GGUF_SEEDS = _gguf_seeds()


def load_gguf(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fz.gguf"
        path.write_bytes(data)
        loaded = check(lambda: read_control_vector(path))
        if not isinstance(loaded, Exception):
            vector, info = loaded
            assert vector.layers and all(layer >= 2 for layer in vector.layers) and info.directions
            assert all(torch.isfinite(t).all() for t in vector.directions.values())
        else:
            assert str(path) in str(loaded)
        assert path.read_bytes() == data


@FUZZ
@given(mutated(GGUF_SEEDS + corpus("gguf")))
def test_mutated_gguf(data):
    load_gguf(data)


@FUZZ
@given(st.binary(max_size=64).map(lambda tail: b"GGUF" + struct.pack("<I", 3) + tail))
def test_random_gguf_headers(data):
    load_gguf(data)


# -- safetensors vectors ------------------------------------------------------------------------------
def _safetensors_seeds() -> list[bytes]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.safetensors"
        save_vector(path, SteeringVector({1: torch.randn(8), 3: torch.randn(2, 8)}, {1: 2.0}), {"recipe": "abc", "model": "m"})
        return [path.read_bytes()]


@st.composite
def safetensors_headers(draw) -> bytes:
    """A header of random JSON (a plausible tensor entry or anything), with an honest or a lying length."""
    entry = {"dtype": draw(st.sampled_from(["F32", "F16", "I64", "BOOL", "x"])), "shape": draw(st.lists(st.integers(-1, 2**40), max_size=3)),
             "data_offsets": draw(st.lists(st.integers(-1, 2**40), max_size=3))}
    header = draw(st.sampled_from([{"layer.1": entry}, {"__metadata__": draw(values())}]) | values())
    raw = yaml.safe_dump(header).encode() if draw(st.booleans()) else json.dumps(header, default=str).encode()
    length = draw(st.sampled_from([len(raw), 2**63, len(raw) + 1, 0]))
    return struct.pack("<Q", length) + raw + draw(st.binary(max_size=64))


def load_safetensors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fz.safetensors"
        path.write_bytes(data)
        loaded = check(lambda: load_vector(path))
        if isinstance(loaded, Exception):
            assert str(path) in str(loaded)
        assert path.read_bytes() == data


@FUZZ
@given(mutated(_safetensors_seeds() + corpus("safetensors")) | safetensors_headers())
def test_safetensors_vectors(data):
    load_safetensors(data)


# -- characters and the runtime's data files ----------------------------------------------------------
@pytest.fixture(scope="module")
def served(default_model, tmp_path_factory):
    """A tiny model, the default tokenizer and a store whose preset 'good' is built for them already
    (so that no background build writes while an input is served)."""
    from extensions.steering.engine.context import ModelContext
    from tests.test_runtime import tiny_llama

    model, tokenizer = tiny_llama(), default_model[1]
    store = PresetStore(tmp_path_factory.mktemp("presets"), shipped=None)
    store.save(Recipe("good", ["Love"], ["Hate"], method="mean", layers=[1], strength=0.3))
    store.vector("good", ModelContext.of(model, tokenizer))
    return model, tokenizer, store


def steering_values():
    names = st.sampled_from(["good", "other", "../x", ""]) | st.text(max_size=8)
    strengths = st.none() | st.floats() | st.integers() | st.text(max_size=5)
    return st.one_of(names, st.dictionaries(names, strengths, max_size=4), st.lists(names | st.tuples(names, strengths), max_size=4),
                     values())


@st.composite
def character_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".yaml", ".json"]))
    data = {"name": "Alice", "context": draw(st.text(max_size=20) | values()), "steering": draw(steering_values())}
    text = yaml.safe_dump(data).encode() if suffix == ".yaml" else json.dumps(data, default=str).encode()
    seeds = [text] + corpus("character")
    return suffix, draw(st.sampled_from([text]) | mutated(seeds))


@st.composite
def data_files(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(["active.json", "chats.json", "characters.yaml"]))
    if name == "active.json":
        value = {"active": draw(steering_values())}
    elif name == "chats.json":
        value = {draw(st.text(max_size=20)): {"enabled": draw(values()), "strengths": draw(values())} for _ in range(2)}
    else:
        value = {"Alice": {"presets": draw(steering_values()), "from_file": draw(values())}}
    text = yaml.safe_dump(value).encode() if name.endswith(".yaml") else json.dumps(value, default=str).encode()
    return name, draw(st.sampled_from([text]) | mutated([text] + corpus("data")))


def serve(character: tuple[str, bytes] | None, data: tuple[str, bytes] | None, served) -> None:
    """A runtime over the files: plan() and the chat panel's view answer, problems said in one line."""
    from extensions.steering.runtime import SteeringRuntime

    model, tokenizer, store = served
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "characters").mkdir()
        (folder / "data").mkdir()
        if character:
            (folder / "characters" / f"Alice{character[0]}").write_bytes(character[1])
        if data:
            (folder / "data" / data[0]).write_bytes(data[1])
        before = folder_hash(store.folder), folder_hash(folder / "characters")
        state = {"steering_chat": True, "mode": "chat", "character_menu": "Alice", "unique_id": "20260101-10-00-00"}

        def run():
            rt = SteeringRuntime(store, folder / "data", lambda: (model, tokenizer), lambda: "Transformers",
                                 characters_dir=folder / "characters")
            items = rt.plan(state)
            view = rt.chat_view(state)
            rt.wait_prepared()
            return rt, items, view

        served = check(run)
        assert not isinstance(served, Exception), served  # a file is reported, never raised into the webui
        rt, items, _ = served
        assert all(isinstance(name, str) and isinstance(strength, float) for name, strength in items)
        assert rt.last_error is None or ("\n" not in rt.last_error and len(rt.last_error) <= 2 * MAX_MESSAGE)
        if character:
            read = check(lambda: read_character_file(folder / "characters" / f"Alice{character[0]}"))
            assert not isinstance(read, Exception) or "Alice" in str(read)
        assert (folder_hash(store.folder), folder_hash(folder / "characters")) == before


@FUZZ
@given(character_files())
def test_character_files(served, character):
    serve(character, None, served)


@FUZZ
@given(data_files())
def test_data_files(served, data):
    serve(None, data, served)


# -- the corpus: crashing inputs found so far, and the reproductions --------------------------
@pytest.mark.parametrize("case", sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*")))
def test_corpus(case, served):
    """Every kept input, fed to its loader as a regression case (data/ files are named <what>--<target file>)."""
    path = CORPUS / case
    loader, data = path.parent.name, path.read_bytes()
    if loader == "recipe":
        load_recipe(data)
    elif loader == "gguf":
        load_gguf(data)
    elif loader == "safetensors":
        load_safetensors(data)
    elif loader == "character":
        serve((path.suffix, data), None, served)
    else:
        serve(None, (path.name.split("--")[-1], data), served)
