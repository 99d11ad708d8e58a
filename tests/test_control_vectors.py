"""GGUF control vectors (engine/control_vectors.py): round trips, conventions, damaged files, and the
same steering as llama.cpp's own llama-server.

The llama-server tests need a mainline llama-server binary: STEERING_LLAMA_SERVER=/path/to/llama-server.
The test of a vector made by llama-cvector-generator needs its output file: STEERING_CVECTOR_FILE=/path.gguf
(made on the default model's GGUF, see test_cvector_generator_file_steers_like_llama_server).
The repeng test runs in the peer environment: .peerenv (benchmarks/requirements-peers.txt) or PEER_PYTHON.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from extensions.steering.engine import Steer, SteeringHandle, SteeringVector
from extensions.steering.engine.control_vectors import (
    ControlVectorError,
    fit_to_model,
    model_dimensions,
    read_control_vector,
    to_direction_index,
    to_layer,
    write_control_vector,
)
from extensions.steering.engine.models import default_gguf

D = 16


def vec(layers=(3, 5), rows: int = 1, seed: int = 0, norms: dict | None = None) -> SteeringVector:
    generator = torch.Generator().manual_seed(seed)
    return SteeringVector({l: torch.randn(rows, D, generator=generator) for l in layers}, dict(norms or {}))


def gguf_tensors(path: Path) -> dict[str, np.ndarray]:
    from gguf import GGUFReader

    return {t.name: np.array(t.data) for t in GGUFReader(str(path)).tensors}


def write_raw(path: Path, tensors: dict[str, np.ndarray], arch: str = "controlvector") -> Path:
    """A GGUF file written directly with gguf, for files our writer would never make."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", "llama")
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# -- round trip and conventions ----------------------------------------------------------------------


def test_round_trip_is_exact(tmp_path):
    v = vec(norms={3: 12.5, 5: 20.0})
    path = write_control_vector(tmp_path / "v.gguf", v, 1.0, "llama")
    back, info = read_control_vector(path)
    assert back.layers == v.layers
    assert all(torch.equal(back.directions[l], v.directions[l]) for l in v.layers)
    assert back.residual_norms == v.residual_norms
    assert info.model_hint == "llama" and info.layer_count == 2 and info.baked_strength == 1.0
    assert info.directions == (2, 4)


def test_our_layer_l_is_llama_cpp_direction_l_minus_1(tmp_path):
    v = vec(layers=(2, 8, 29))
    path = write_control_vector(tmp_path / "v.gguf", v, 1.0, "llama")
    assert sorted(gguf_tensors(path)) == ["direction.1", "direction.28", "direction.7"]
    assert np.array_equal(gguf_tensors(path)["direction.7"], v.directions[8][0].numpy())
    assert to_direction_index(8) == 7 and to_layer(7) == 8


def test_file_has_the_layout_llama_cpp_reads(tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader

    path = write_control_vector(tmp_path / "v.gguf", vec(), 0.5, "llama")
    reader = GGUFReader(str(path))
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "controlvector"
    assert "controlvector.model_hint" in reader.fields and "controlvector.layer_count" in reader.fields
    for tensor in reader.tensors:
        assert tensor.tensor_type == GGMLQuantizationType.F32 and [int(d) for d in tensor.shape] == [D]


def test_strength_is_baked_in(tmp_path):
    v = vec()
    back, info = read_control_vector(write_control_vector(tmp_path / "v.gguf", v, -2.5, "llama"))
    assert info.baked_strength == -2.5
    for layer in v.layers:
        assert torch.equal(back.directions[layer], v.directions[layer] * -2.5)


@pytest.mark.parametrize("layer", [0, 1])
def test_layers_llama_cpp_cannot_steer_are_refused(tmp_path, layer):
    with pytest.raises(ControlVectorError, match=rf"layer\(s\) {layer} cannot be exported.*our layers 2 and up"):
        write_control_vector(tmp_path / "v.gguf", vec(layers=(layer, 4)), 1.0, "llama")
    assert not any(tmp_path.iterdir())


def test_per_position_actadd_vector_is_refused(tmp_path):
    with pytest.raises(ControlVectorError, match=r"per-position \(ActAdd\) vector with 3 rows.*mean_direction"):
        write_control_vector(tmp_path / "v.gguf", vec(rows=3), 4.0, "llama")
    # its mean direction can go
    write_control_vector(tmp_path / "v.gguf", vec(rows=3).mean_direction(), 4.0, "llama")


@pytest.mark.parametrize("mode, message", [("generated", "only generated tokens"), ("actadd", "per-position"), ("sideways", "unknown mode")])
def test_modes_llama_cpp_cannot_do_are_refused(tmp_path, mode, message):
    with pytest.raises(ControlVectorError, match=message):
        write_control_vector(tmp_path / "v.gguf", vec(), 1.0, "llama", mode=mode)


@pytest.mark.parametrize("strength", [float("nan"), float("inf")])
def test_non_finite_strength_is_refused(tmp_path, strength):
    with pytest.raises(ControlVectorError, match="finite"):
        write_control_vector(tmp_path / "v.gguf", vec(), strength, "llama")


def test_write_is_atomic_and_readable_by_others(tmp_path):
    path = tmp_path / "sub" / "v.gguf"
    old_umask = os.umask(0o022)
    try:
        write_control_vector(path, vec(), 1.0, "llama")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["v.gguf"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_control_vector(tmp_path / "v.gguf", vec(), 1.0, "llama")
    before = path.read_bytes()
    import gguf

    def boom(self):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", lambda self, **kw: boom(self))
    with pytest.raises(OSError, match="disk full"):
        write_control_vector(path, vec(seed=1), 1.0, "llama")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.gguf"]


def test_f16_directions_are_read(tmp_path):
    data = np.linspace(-1, 1, D).astype(np.float16)
    back, _ = read_control_vector(write_raw(tmp_path / "h.gguf", {"direction.3": data}))
    assert back.layers == [4] and torch.equal(back.directions[4][0], torch.from_numpy(data.astype(np.float32)))


# -- files that are not control vectors -------------------------------------------------------------


def good_file(tmp_path) -> Path:
    return write_control_vector(tmp_path / "good.gguf", vec(), 1.0, "llama")


def damaged(tmp_path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: damaged(p, "empty.gguf", b""), "the file is empty"),
        (lambda p: damaged(p, "random.gguf", np.random.default_rng(0).bytes(4096)), "not a GGUF file"),
        (lambda p: damaged(p, "text.gguf", b"direction.1 = [1, 2, 3]\n"), "not a GGUF file"),
        (lambda p: damaged(p, "header.gguf", good_file(p).read_bytes()[:40]), "damaged or truncated"),
        (lambda p: damaged(p, "half.gguf", good_file(p).read_bytes()[:-D * 2]), "truncated"),
        (lambda p: damaged(p, "garbled.gguf", b"GGUF" + np.random.default_rng(1).bytes(2000)), "damaged or truncated"),
        (lambda p: p / "missing.gguf", "cannot read it"),
        (lambda p: p, "cannot read it"),  # a folder
        (lambda p: write_raw(p / "model.gguf", {"token_embd.weight": np.ones((4, D), np.float32)}, arch="llama"), "architecture 'llama', not 'controlvector'"),
        (lambda p: write_raw(p / "zero.gguf", {"direction.0": np.ones(D, np.float32)}), "direction.0 is invalid"),
        (lambda p: write_raw(p / "other.gguf", {"direction.1": np.ones(D, np.float32), "bias": np.ones(D, np.float32)}), "'bias' is not a direction.N"),
        (lambda p: write_raw(p / "ragged.gguf", {"direction.1": np.ones(D, np.float32), "direction.2": np.ones(D + 1, np.float32)}), "has 17 values, the other directions 16"),
        (lambda p: write_raw(p / "matrix.gguf", {"direction.1": np.ones((2, D), np.float32)}), "not one row"),
        (lambda p: write_raw(p / "ints.gguf", {"direction.1": np.ones(D, np.int32)}), "not F32 or F16"),
        (lambda p: write_raw(p / "nan.gguf", {"direction.1": np.full(D, np.nan, np.float32)}), "NaN or infinite"),
        (lambda p: write_raw(p / "none.gguf", {}), "no direction tensors"),
    ],
    ids=["empty", "random", "text", "header-only", "truncated", "garbled", "missing", "folder", "model", "direction0",
         "foreign-tensor", "ragged", "matrix", "ints", "nan", "no-tensors"],
)
def test_bad_files_give_a_clear_error_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ControlVectorError, match=message) as caught:
        read_control_vector(path)
    assert str(path) in str(caught.value)


def test_every_truncation_gives_a_clear_error(tmp_path):
    data = good_file(tmp_path).read_bytes()
    for cut in range(1, len(data), 7):
        path = damaged(tmp_path, "cut.gguf", data[:cut])
        with pytest.raises(ControlVectorError):
            read_control_vector(path)


@pytest.mark.slow
def test_the_default_model_gguf_is_not_a_control_vector():
    path = default_gguf()
    with pytest.raises(ControlVectorError, match=r"architecture 'llama', not 'controlvector' \(a model file\?\)"):
        read_control_vector(path)


@pytest.mark.slow
def test_model_dimensions_of_the_default_gguf(tmp_path):
    assert model_dimensions(default_gguf()) == ("llama", 576, 30)
    with pytest.raises(ControlVectorError, match="not a GGUF model"):
        model_dimensions(good_file(tmp_path))


# -- fitting a vector to a model ---------------------------------------------------------------------


def test_fit_keeps_what_the_model_has():
    v = vec(layers=(2, 10, 29))
    fitted, dropped = fit_to_model(v, D, 30)
    assert fitted.layers == [2, 10, 29] and dropped == []


def test_fit_leaves_out_the_last_block_output():
    """llama-cvector-generator writes direction.1 .. direction.(n-1); the last is the output of the last block."""
    fitted, dropped = fit_to_model(vec(layers=(2, 29, 30)), D, 30)
    assert fitted.layers == [2, 29] and dropped == [30]


def test_fit_refuses_another_hidden_size():
    with pytest.raises(ControlVectorError, match="happy.gguf was made for another model: its hidden size is 16, the model's 576"):
        fit_to_model(vec(), 576, 30, source="happy.gguf")


def test_fit_refuses_a_deeper_model_vector():
    with pytest.raises(ControlVectorError, match=r"direction.39 \(made for a model with at least 40 blocks\), but the model has 30 blocks"):
        fit_to_model(vec(layers=(5, 40)), D, 30)


def test_fit_refuses_only_the_last_block_output():
    with pytest.raises(ControlVectorError, match="only the output of the model's last block"):
        fit_to_model(vec(layers=(30,)), D, 30)


# -- the default model: the exported file steers as the vector did -----------------------------------


@pytest.fixture(scope="module")
def love(default_ctx, tmp_path_factory):
    """The shipped ``love`` preset built on the default model, and its recipe's strength."""
    from extensions.steering.engine.presets import PresetStore

    store = PresetStore(tmp_path_factory.mktemp("presets"))
    recipe = store.recipe("love")
    return store.vector(recipe, default_ctx), recipe.strength


def chat_ids(ctx, text: str) -> list[int]:
    from extensions.steering.engine.tokens import prompt_ids

    return prompt_ids(ctx, text, chat=True)


@torch.inference_mode()
def logits_with(ctx, ids: list[int], steers: list[Steer], first_position: bool = False) -> torch.Tensor:
    input_ids = torch.tensor([ids])
    if not steers:
        return ctx.model(input_ids=input_ids).logits[0]
    with SteeringHandle(ctx, steers, steer_first_position=first_position):
        return ctx.model(input_ids=input_ids).logits[0]


@pytest.mark.parametrize("strength", [0.35, -0.8])
def test_exported_vector_at_1_steers_as_ours_at_its_strength(default_ctx, love, tmp_path, strength):
    vector, _ = love
    path = write_control_vector(tmp_path / "love.gguf", vector, strength, default_ctx.model.config.model_type)
    back, info = read_control_vector(path)
    fitted, dropped = fit_to_model(back, default_ctx.hidden_size, default_ctx.num_layers, source=str(path))
    assert dropped == [] and fitted.layers == vector.layers == [6, 8] and info.directions == (5, 7)
    ids = chat_ids(default_ctx, "Tell me about your neighbour.")
    ours = logits_with(default_ctx, ids, [Steer(vector, strength)])
    theirs = logits_with(default_ctx, ids, [Steer(fitted, 1.0)])
    unsteered = logits_with(default_ctx, ids, [])
    assert (ours - unsteered).abs().max() > 1.0  # it does steer
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


# -- against llama.cpp's own llama-server ------------------------------------------------------------

from llama_server import PIRATE_VS_LIBRARIAN, cvector_generator_file, f32_copy, llama_server, needs_generator, needs_server  # noqa: E402


def server_logprobs(ids: list[int], flags: list[str], log: Path, model: Path | None = None) -> dict[int, dict[int, float]]:
    """llama-server's top next-token log-probabilities after every prefix of ``ids`` (2 tokens and up)."""
    with llama_server(flags, log, model) as server:
        return {end: server.next_token_logprobs(ids[:end]) for end in range(2, len(ids) + 1)}


def delta_pairs(ctx, ids: list[int], base: dict, steered: dict, steers: list[Steer], first_position: bool = True):
    """Matched (ours, llama.cpp) changes in next-token log-probability after every prefix in ``base``,
    over the tokens in llama.cpp's top lists both unsteered and steered."""
    ours_base = torch.log_softmax(logits_with(ctx, ids, []).double(), -1)
    ours_steered = torch.log_softmax(logits_with(ctx, ids, steers, first_position=first_position).double(), -1)
    mine, theirs = [], []
    for end in sorted(base):
        for token in sorted(set(base[end]) & set(steered[end])):
            theirs.append(steered[end][token] - base[end][token])
            mine.append(float(ours_steered[end - 1, token] - ours_base[end - 1, token]))
    return np.array(mine), np.array(theirs)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def f32_gguf(tmp_path_factory) -> Path:
    return f32_copy(default_gguf(), tmp_path_factory.mktemp("f32") / "SmolLM2-135M-Instruct.F32.gguf")


# weights: the shipped Q4_1 file (llama.cpp also quantises activations in its Q4_1 matmuls: unsteered
# log-probabilities already differ from ours by up to ~1.4), and its dequantised F32 copy (the same
# arithmetic as ours: unsteered within ~0.02), where the convention shows without noise.
@needs_server
@pytest.mark.parametrize("weights, least, margin", [("q4_1", 0.97, 0.02), ("f32", 0.9999, 0.01)])
def test_love_export_steers_llama_server_as_it_steers_us(default_ctx, love, tmp_path, request, weights, least, margin):
    """The next-token log-probability changes llama-server makes with the exported ``love`` preset
    correlate with ours; our layer convention beats the off-by-one ones (direction.N == our layer N + 1),
    and llama.cpp steers position 0 too (ours with steer_first_position=True matches it better)."""
    vector, strength = love
    model = request.getfixturevalue("f32_gguf") if weights == "f32" else None
    path = write_control_vector(tmp_path / "love.gguf", vector, strength, "llama")
    ids = chat_ids(default_ctx, "I hate you because")
    base = server_logprobs(ids, [], tmp_path / "base.log", model)
    steered = server_logprobs(ids, ["--control-vector-scaled", f"{path}:1.0"], tmp_path / "steered.log", model)
    found = {}
    for shift in (-1, 0, 1):
        moved = SteeringVector({l + shift: t for l, t in vector.directions.items()})
        found[shift] = correlation(*delta_pairs(default_ctx, ids, base, steered, [Steer(moved, strength)]))
    sink_left_alone = correlation(*delta_pairs(default_ctx, ids, base, steered, [Steer(vector, strength)], first_position=False))
    print(f"\n{weights}: llama-server vs ours, Δ next-token logprob correlation by layer shift {found}; "
          f"with position 0 left alone {sink_left_alone:.4f}")
    assert found[0] >= least
    assert found[0] > max(found[-1], found[1]) + margin
    assert found[0] > sink_left_alone


CVECTOR_FILE = os.environ.get("STEERING_CVECTOR_FILE")


@needs_server
@pytest.mark.skipif(not CVECTOR_FILE, reason="set STEERING_CVECTOR_FILE to a llama-cvector-generator output made on the default model's GGUF")
def test_cvector_generator_file_steers_like_llama_server(default_ctx, tmp_path):
    """A vector llama-cvector-generator made (its happy/sad example prompts, --method mean) read into
    our engine moves the next-token log-probabilities as llama-server moves them with the same file,
    and both make "I hate you because" completions happier.

    Made with llama.cpp's own example prompts (3 pairs, 45 s on 2 CPU cores)::

        llama-cvector-generator -m <default GGUF> --method mean -o happy.gguf \\
            --positive-file tools/cvector-generator/positive.txt --negative-file tools/cvector-generator/negative.txt

    It writes direction.1 .. direction.29 (unit norm each); the last (the output of the last block) has
    no layer here, so llama-server is limited to the same range. Scale: STEERING_CVECTOR_SCALE (4).
    """
    from extensions.steering.engine.metrics import sentiment

    scale = float(os.environ.get("STEERING_CVECTOR_SCALE", "4"))
    vector, info = read_control_vector(CVECTOR_FILE)
    fitted, dropped = fit_to_model(vector, default_ctx.hidden_size, default_ctx.num_layers, source=CVECTOR_FILE)
    # what we cannot reach (the last block's output) is left out on llama.cpp's side too
    last = to_direction_index(max(fitted.layers))
    flags = ["--control-vector-scaled", f"{CVECTOR_FILE}:{scale}", "--control-vector-layer-range", "1", str(last)]
    ids = [default_ctx.sink_id, *default_ctx.tokens("I hate you because")]
    prefixes = range(2, len(ids) + 1)
    with llama_server([], tmp_path / "base.log") as server:
        base = {end: server.next_token_logprobs(ids[:end]) for end in prefixes}
        base_text = server.greedy(ids, 24)
    with llama_server(flags, tmp_path / "steered.log") as server:
        steered = {end: server.next_token_logprobs(ids[:end]) for end in prefixes}
        steered_text = server.greedy(ids, 24)
    steers = [Steer(fitted, scale)]
    mine, theirs = delta_pairs(default_ctx, ids, base, steered, steers)
    corr = correlation(mine, theirs)
    from extensions.steering.engine.generation import Sampling, complete

    greedy = Sampling(max_new_tokens=24, temperature=0)
    ours_base = complete(default_ctx, ids, 0, greedy)
    with SteeringHandle(default_ctx, steers, steer_first_position=True):
        ours_steered = complete(default_ctx, ids, 0, greedy)
    scores = {name: sentiment(text) for name, text in
              [("llama.cpp", base_text), ("llama.cpp steered", steered_text), ("ours", ours_base), ("ours steered", ours_steered)]}
    print(f"\n{info.directions[0]}..{info.directions[-1]} (dropped our layers {dropped}); Δlogprob correlation {corr:.4f}; "
          f"VADER {scores}\n{steered_text!r}\n{ours_steered!r}")
    assert dropped == [default_ctx.num_layers]
    assert corr >= 0.95
    assert scores["llama.cpp steered"] > scores["llama.cpp"] and scores["ours steered"] > scores["ours"]


# -- repeng (peer environment) -----------------------------------------------------------------------

PEER_PYTHON = os.environ.get("PEER_PYTHON") or str(Path(__file__).resolve().parents[1] / ".peerenv" / "bin" / "python")
REPENG_SCRIPT = r"""
import json, sys
import numpy
if not hasattr(numpy, "float_"):  # repeng 0.4.0 names np.float_ in annotations; numpy 2 removed it
    numpy.float_ = numpy.float64
import torch
from repeng import ControlModel, ControlVector

ours, theirs, out, ids = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
imported = ControlVector.import_gguf(ours)
ControlVector(model_type="llama", directions={3: numpy.linspace(-1, 1, 576, dtype=numpy.float32),
                                              9: numpy.full(576, 0.25, numpy.float32)}).export_gguf(theirs)
from extensions.steering.engine.models import load_model
model, _ = load_model()
control = ControlModel(model, list(imported.directions))
control.set_control(imported, 1.0)
with torch.inference_mode():
    logits = control(input_ids=torch.tensor([ids])).logits[0]
control.reset()
json.dump({"model_type": imported.model_type,
           "directions": {str(k): numpy.asarray(v, dtype=numpy.float64).tolist() for k, v in imported.directions.items()},
           "logits": logits.double().tolist()}, open(out, "w"))
"""


@pytest.mark.skipif(not Path(PEER_PYTHON).is_file(), reason="no peer environment with repeng (benchmarks/requirements-peers.txt makes .peerenv; or set PEER_PYTHON)")
def test_repeng_reads_ours_and_we_read_repengs(default_ctx, love, tmp_path):
    """repeng 0.4.0's import_gguf reads our file, and steers the default model with it exactly as we
    do (its direction N is the output of block N, as in llama.cpp); we read its export_gguf output."""
    vector, strength = love
    ours = write_control_vector(tmp_path / "ours.gguf", vector, strength, "llama")
    ids = chat_ids(default_ctx, "Tell me about your neighbour.")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "TQDM_DISABLE": "1"}
    done = subprocess.run([PEER_PYTHON, "-c", REPENG_SCRIPT, str(ours), str(tmp_path / "theirs.gguf"), str(tmp_path / "out.json"), json.dumps(ids)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["model_type"] == "llama"
    assert sorted(map(int, result["directions"])) == [to_direction_index(l) for l in vector.layers]
    for layer in vector.layers:
        np.testing.assert_array_equal(np.array(result["directions"][str(to_direction_index(layer))], np.float32),
                                      (vector.directions[layer][0] * strength).numpy())
    ours_logits = logits_with(default_ctx, ids, [Steer(vector, strength)], first_position=True)
    torch.testing.assert_close(torch.tensor(result["logits"], dtype=torch.float32), ours_logits, rtol=0, atol=1e-4)  # measured: identical
    theirs, info = read_control_vector(tmp_path / "theirs.gguf")
    assert theirs.layers == [4, 10] and info.model_hint == "llama" and info.layer_count == 2
    assert np.array_equal(theirs.directions[4][0].numpy(), np.linspace(-1, 1, 576, dtype=np.float32))
    assert torch.equal(theirs.directions[10][0], torch.full((576,), 0.25))


@needs_generator
def test_a_cvector_generator_vector_agrees_with_llama_server_in_the_documented_scale_range(default_ctx, tmp_path):
    """docs/llama-cpp.md: a llama-cvector-generator vector (pirate vs librarian, mean) imported here and
    served whole by llama-server (as a user runs it: the last direction and position 0 included) steers
    greedy replies alike at scale 2: every reply readable on both sides, and pirate words per reply
    within 0.5 of each other (measured: 1.00 there, 0.75 here; benchmarks/llama_high_scale.py)."""
    from extensions.steering.engine.generation import Sampling, complete
    from extensions.steering.engine.metrics import PIRATE_WORDS, readable, words
    from extensions.steering.engine.tokens import prompt_ids

    prompts = ("Tell me about your day.", "What is your favourite food?", "How do I make a cup of tea?",
               "What should I do this weekend?")
    path = cvector_generator_file(os.environ["STEERING_CVECTOR_GENERATOR"], tmp_path, *PIRATE_VS_LIBRARIAN)
    vector, _ = read_control_vector(path)
    imported, dropped = fit_to_model(vector, default_ctx.hidden_size, default_ctx.num_layers, str(path))
    assert dropped == [default_ctx.num_layers]  # direction.29: the output of the last block
    ids = [prompt_ids(default_ctx, prompt, chat=True) for prompt in prompts]
    scale, greedy = 2.0, Sampling(max_new_tokens=40, temperature=0)
    with llama_server(["--control-vector-scaled", f"{path}:{scale:g}"], tmp_path / "server.log") as server:
        theirs = [server.greedy(prompt, greedy.max_new_tokens) for prompt in ids]
    with SteeringHandle(default_ctx, [Steer(imported, scale)]):
        ours = [complete(default_ctx, prompt, 0, greedy) for prompt in ids]
    plain = [complete(default_ctx, prompt, 0, greedy) for prompt in ids]

    def pirate(texts: list[str]) -> float:
        return sum(word in PIRATE_WORDS for text in texts for word in words(text)) / len(texts)

    print(f"\nscale {scale:g}: pirate words/reply llama-server {pirate(theirs):.2f}, ours {pirate(ours):.2f}, unsteered {pirate(plain):.2f}")
    assert all(map(readable, theirs)) and all(map(readable, ours)), (theirs, ours)
    assert pirate(ours) > pirate(plain) and pirate(theirs) > pirate(plain)
    assert abs(pirate(theirs) - pirate(ours)) <= 0.5, (theirs, ours)
