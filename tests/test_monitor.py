"""The reading of each reply (engine/monitor.py): on the default model, read while generating and in one
pass alike, before any steering at its layer, cached, leaving nothing behind; on tiny random models of
several architectures; through the runtime (chat panel, per request, private per session) and the CLI."""
from __future__ import annotations

import json
import math
import statistics
from contextlib import contextmanager

import pytest
import torch

from extensions.steering.engine import monitor as monitor_module
from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.context import ModelContext
from extensions.steering.engine.generation import Sampling, completions, prompt_ids
from extensions.steering.engine.monitor import Gauge, Monitor, Reading, labels
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.vector import SteeringVector
from extensions.steering.runtime import SteeringRuntime
from extensions.steering.runtime.readings import STATE_MONITOR, STATE_REQUEST

PROMPT = "I hate you because"


def hooks_on(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def love(default_ctx, tmp_path_factory):
    return PresetStore(tmp_path_factory.mktemp("presets")).vector("love", default_ctx)


@pytest.fixture(scope="module")
def love_monitor(default_ctx, love):
    return Monitor.of(default_ctx, {"love": love})


def sample(ctx, ids, seed, tokens):
    torch.manual_seed(seed)
    row = torch.tensor([ids], device=ctx.device)
    return ctx.model.generate(input_ids=row, attention_mask=torch.ones_like(row), do_sample=True, temperature=0.7, top_p=0.9,
                              top_k=0, max_new_tokens=tokens, pad_token_id=ctx.pad_id)[0, len(ids):].tolist()


# -- the default model -----------------------------------------------------------------------------------
def test_a_love_steered_completion_reads_higher_than_an_unsteered_one(default_ctx, love, love_monitor):
    ids = prompt_ids(default_ctx, PROMPT)
    seeds, sampling = range(6), Sampling(max_new_tokens=24)
    plain = [c.readings[0].z for c in completions(default_ctx, ids, [], seeds, sampling, monitor=love_monitor)]
    steered = [c.readings[0].z for c in completions(default_ctx, ids, [Steer(love, 0.7, "all")], seeds, sampling, monitor=love_monitor)]
    assert all(math.isfinite(z) for z in plain + steered)
    assert statistics.mean(steered) > statistics.mean(plain) + 0.2


def test_the_recorded_reading_is_the_one_pass_reading_of_the_same_tokens_before_steering(default_ctx, love, love_monitor):
    """love steers the very layer it is read at (6) and a later one (8): the reading while steering equals an
    unsteered pass over the same tokens, so it reads the reply, not the vector added."""
    model = default_ctx.model
    ids = prompt_ids(default_ctx, PROMPT)
    before = {layer: t.clone() for layer, t in love.directions.items()}
    steers = [Steer(love, 0.7, "all")]
    with torch.inference_mode():
        with steer(default_ctx, steers), love_monitor.record() as recording:
            reply = sample(default_ctx, ids, 3, 16)
        assert not recording.active and hooks_on(model) == 0
        recorded = recording.readings()[0]
        offline = love_monitor.read(ids, reply[:-1])[0]
    assert recorded.tokens == offline.tokens == len(reply) - 1
    assert recorded.z == pytest.approx(offline.z, abs=1e-4) and recorded.projection == pytest.approx(offline.projection, abs=1e-4)
    assert all(torch.equal(love.directions[layer], t) for layer, t in before.items()) and steers[0].strength == 0.7
    # a steered pass over the same tokens reads the same too: nothing at or after the layer reaches it
    with torch.inference_mode(), steer(default_ctx, steers):
        assert love_monitor.read(ids, reply[:-1])[0].z == pytest.approx(offline.z, abs=1e-4)
    # steering an earlier layer (4) is part of what is read
    earlier = SteeringVector({4: love.directions[6][0] * 8})
    with torch.inference_mode(), steer(default_ctx, [Steer(earlier, 1.0, "all")]):
        assert love_monitor.read(ids, reply[:-1])[0].z > offline.z + 0.5


def test_a_recording_leaves_no_hook_after_a_generation_that_raises(default_ctx, love_monitor):
    model = default_ctx.model
    ids = torch.tensor([prompt_ids(default_ctx, PROMPT)])

    def broken(input_ids, scores, **kwargs):
        if input_ids.shape[1] > ids.shape[1] + 1:
            raise RuntimeError("stop here")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    with pytest.raises(RuntimeError, match="stop here"), torch.inference_mode(), love_monitor.record():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                       pad_token_id=default_ctx.pad_id, stopping_criteria=[broken])
    assert hooks_on(model) == 0


def test_cache_less_steps_and_a_closed_gate_are_read_right(default_ctx, love_monitor):
    """A cache-less generate re-reads the whole sequence each step: only the new position counts."""
    ids = prompt_ids(default_ctx, PROMPT)
    row = torch.tensor([ids])
    with torch.inference_mode(), love_monitor.record() as recording:
        out = default_ctx.model.generate(input_ids=row, attention_mask=torch.ones_like(row), max_new_tokens=6, do_sample=False,
                                         use_cache=False, pad_token_id=default_ctx.pad_id)
    reply = out[0, len(ids):].tolist()
    assert recording.readings()[0].z == pytest.approx(love_monitor.read(ids, reply[:-1])[0].z, abs=1e-4)
    closed = love_monitor.record(gate=lambda: False)  # a gate that lets nothing through reads nothing
    with torch.inference_mode(), closed:
        default_ctx.model.generate(input_ids=row, attention_mask=torch.ones_like(row), max_new_tokens=3, do_sample=False, pad_token_id=default_ctx.pad_id)
    assert closed.readings()[0].tokens == 0 and math.isnan(closed.readings()[0].z)
    assert closed.readings()[0].to_dict()["z"] is None and "no reply tokens" in closed.readings()[0].label()


def test_baselines_are_measured_once_and_kept_on_disk(default_ctx, love, tmp_path, monkeypatch):
    measured = []
    real = monitor_module._measure
    monkeypatch.setattr(monitor_module, "_measure", lambda ctx, gauges: measured.append(len(gauges)) or real(ctx, gauges))
    monkeypatch.setattr(monitor_module, "_BASELINES", {})
    first = Monitor.of(default_ctx, {"love": love}, tmp_path)
    again = Monitor.of(default_ctx, {"love again": love}, tmp_path)  # the same direction under another name
    assert measured == [1] and again.baselines[0] is first.baselines[0]
    monkeypatch.setattr(monitor_module, "_BASELINES", {})  # a new process: from the file
    from_disk = Monitor.of(default_ctx, {"love": love}, tmp_path)
    assert measured == [1] and from_disk.baselines[0].mean == first.baselines[0].mean
    assert torch.equal(from_disk.baselines[0].readout, first.baselines[0].readout)
    (file,) = tmp_path.glob("*.safetensors")
    file.write_bytes(b"damaged")
    monkeypatch.setattr(monitor_module, "_BASELINES", {})
    remade = Monitor.of(default_ctx, {"love": love}, tmp_path)  # a damaged file is measured again
    assert measured == [1, 1] and remade.baselines[0].std == pytest.approx(first.baselines[0].std)


def test_baselines_and_readings_are_deterministic(default_ctx, love, love_monitor, monkeypatch):
    monkeypatch.setattr(monitor_module, "_BASELINES", {})
    fresh = Monitor.of(default_ctx, {"love": love})
    assert fresh.baselines[0].mean == love_monitor.baselines[0].mean and fresh.baselines[0].std == love_monitor.baselines[0].std
    ids = prompt_ids(default_ctx, PROMPT)
    reply = default_ctx.tokens(" you are kind and I love you")
    assert fresh.read(ids, reply)[0].z == love_monitor.read(ids, reply)[0].z


def test_bad_vectors_are_refused_with_a_reason(default_ctx, love):
    with pytest.raises(ValueError, match="hidden size"):
        Monitor(default_ctx, [Gauge("x", 6, torch.ones(8) / 8 ** 0.5)], [monitor_module.Baseline(torch.ones(8), 0.0, 1.0, 1)])
    with pytest.raises(ValueError, match="zero"):
        Gauge.of("zero", SteeringVector({6: torch.zeros(love.hidden_size)}))
    with pytest.raises(ValueError, match="nothing to read"):
        Monitor(default_ctx, [], [])
    assert labels([Reading("love", 6, 1.83, 2.0, 10), Reading("kind", 8, -0.24, 0.1, 10)]) == "love +1.8σ, kind -0.2σ"


# -- tiny random models: shapes on any architecture -----------------------------------------------------------
def _tiny(name):
    from test_layers import ARCHITECTURES

    factory, _ = ARCHITECTURES[name]
    torch.manual_seed(0)
    return factory().eval()


class _Tokenizer:
    """Just what the probe needs of a tokenizer: no chat template, a BOS, ids of text."""

    chat_template = None
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + ord(c) % 100 for c in text]}


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma3_multimodal", "qwen3_moe"])
def test_tiny_models_of_every_kind_are_read(name):
    model = _tiny(name)
    ctx = ModelContext.of(model, _Tokenizer())
    hidden = ctx.hidden_size
    torch.manual_seed(1)
    vector = SteeringVector({1: torch.randn(3, hidden), 2: torch.randn(hidden)})  # per-position rows: their mean direction
    mon = Monitor.of(ctx, {"a": vector, "b": SteeringVector({2: torch.randn(hidden)})})
    assert mon.layers == [1, 2] and mon.baselines[0].readout.shape == (hidden,)
    ids = [1, 5, 17, 33, 2, 99, 41]
    with torch.inference_mode(), mon.record() as recording:
        row = torch.tensor([ids])
        out = model.generate(input_ids=row, attention_mask=torch.ones_like(row), max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    read = recording.readings()
    assert [r.name for r in read] == ["a", "b"] and [r.layer for r in read] == [1, 2] and all(r.tokens == 3 for r in read)
    offline = mon.read(ids, out[0, len(ids):-1].tolist())
    assert [r.z for r in read] == pytest.approx([r.z for r in offline], abs=1e-3)
    assert hooks_on(model) == 0


def test_a_batch_is_read_row_by_row(default_ctx, love_monitor):
    ids = prompt_ids(default_ctx, PROMPT)
    rows = torch.tensor([ids, ids])
    with torch.inference_mode(), love_monitor.record() as recording:
        torch.manual_seed(0)
        out = default_ctx.model.generate(input_ids=rows, attention_mask=torch.ones_like(rows), max_new_tokens=6, min_new_tokens=6, do_sample=True,
                                         top_k=0, pad_token_id=default_ctx.pad_id)
    for index in range(2):
        expected = love_monitor.read(ids, out[index, len(ids):-1].tolist())[0]
        assert recording.readings(row=index)[0].z == pytest.approx(expected.z, abs=1e-4)
    assert recording.readings(row=1, tokens=2)[0].tokens == 2


# -- the runtime: armed with each request, shown in the chat panel, kept per request id ---------------------------
def _runtime(tmp_path, default_model, multi_user=False):
    store = PresetStore(tmp_path / "presets")
    return SteeringRuntime(store, tmp_path / "data", lambda: default_model, lambda: "Transformers", multi_user=multi_user)


def _chat(**extra):
    return {"steering_chat": True, "mode": "chat", "character_menu": "Alice", "unique_id": "20260101-10-00-00", **extra}


def _generate(ctx, ids, tokens=6):
    return ctx.model.generate(inputs=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False, pad_token_id=ctx.pad_id)


@contextmanager
def love_hooks_counted(ctx):
    """(block, hooks on it) while a generate call runs (seen at its first forward)."""
    found = []

    def look(module, args):
        if not found:
            found.extend((i, len(block._forward_pre_hooks)) for i, block in enumerate(ctx.layers.blocks) if block._forward_pre_hooks)

    handle = ctx.model.register_forward_pre_hook(look)
    try:
        yield found
    finally:
        handle.remove()


def test_each_steered_reply_is_read_and_shown_under_it_in_its_own_chat(tmp_path, default_model, default_ctx):
    rt = _runtime(tmp_path, default_model)
    rt.set_active([("love", 0.35)])
    ids = torch.tensor([prompt_ids(default_ctx, PROMPT)])
    state = _chat(**{STATE_REQUEST: "request-1", STATE_MONITOR: ["kind"]})
    assert rt.begin_generation(state, ids) == [("love", 0.35)]
    assert hooks_on(default_ctx.model) == 0
    out = _generate(rt.current_model(), ids)
    assert hooks_on(default_ctx.model) == 0 and "generate" not in default_ctx.model.__dict__
    found = [Reading(**reading) for reading in rt.take_report("request-1")["monitor"]]  # as the API's response carries them
    assert [r.name for r in found] == ["love", "kind"] and "monitor" not in rt.take_report("request-1")  # taken once
    monitor = Monitor.of(default_ctx, {"love": rt.vector("love"), "kind": rt.vector("kind")})
    expected = monitor.read(ids[0].tolist(), out[0, ids.shape[1]:-1].tolist())
    assert [r.z for r in found] == pytest.approx([r.z for r in expected], abs=1e-4)
    view = rt.chat_view(_chat())
    assert view.readings == labels(found) and f"Last reply: {labels(found)}" in view.text()
    assert rt.chat_view(_chat(unique_id="another-chat")).readings is None  # another chat shows its own
    rt.begin_generation({"steering_chat": False}, ids)  # the Notebook tab: steered, and no one to show a reading to
    with love_hooks_counted(default_ctx) as counted:
        _generate(default_ctx, ids)
    assert counted == [(6, 1), (8, 1)]  # the steering's hooks, no reading's
    rt.begin_generation(_chat(), ids)
    with love_hooks_counted(default_ctx) as counted:
        _generate(default_ctx, ids)
    assert counted == [(6, 2), (8, 1)]  # a chat's reply: read at layer 6 too


def test_a_request_that_only_reads_is_read_and_not_steered(tmp_path, default_model, default_ctx):
    rt = _runtime(tmp_path, default_model)
    ids = torch.tensor([prompt_ids(default_ctx, PROMPT)])
    plain = _generate(default_ctx, ids)
    assert rt.begin_generation({STATE_MONITOR: "love", STATE_REQUEST: "r2"}, ids) == []
    assert torch.equal(_generate(default_ctx, ids), plain)
    assert [r["name"] for r in rt.take_report("r2")["monitor"]] == ["love"]
    rt.begin_generation({STATE_MONITOR: ["no-such-preset"], STATE_REQUEST: "r3"}, ids)  # said once, never a broken reply
    assert "generate" not in default_ctx.model.__dict__ and "no-such-preset" in rt.last_error
    assert rt.begin_generation({STATE_MONITOR: ["love"] * 17}, ids) == [] and "reads at most 16 presets" in rt.last_error
    rt.set_active([("love", 0.35)])
    assert rt.begin_generation({STATE_MONITOR: ["../x"]}, ids) == [("love", 0.35)]  # a bad list never costs the reply its steering
    assert "invalid preset name" in rt.last_error
    rt.end_generation()


def test_with_multi_user_a_session_sees_only_its_own_reading(tmp_path, default_model, default_ctx):
    rt = _runtime(tmp_path, default_model, multi_user=True)
    rt.set_active([("love", 0.35)])
    ids = torch.tensor([prompt_ids(default_ctx, PROMPT)])
    mine, theirs = _chat(steering_session="session-a"), _chat(steering_session="session-b")
    rt.begin_generation(mine, ids)
    _generate(default_ctx, ids)
    assert rt.chat_view(mine).readings and "love" in rt.chat_view(mine).text()
    assert rt.chat_view(theirs).readings is None and "Last reply" not in rt.chat_view(theirs).text()


# -- the command line ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_generate_monitor_reads_each_completion(capsys, tmp_path):
    from extensions.steering.cli import main

    argv = ["generate", "--prompt", PROMPT, "--steer", "love:0.7", "--monitor", "kind", "--n", "2", "--max-new-tokens", "8",
            "--json", "--compare", "--presets", str(tmp_path)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4 and all([r["name"] for r in row["readings"]] == ["love", "kind"] for row in rows)
    assert all(isinstance(row["readings"][0]["z"], float) and 1 <= row["readings"][0]["tokens"] <= 7 for row in rows)
    assert list((tmp_path / "baselines").glob("*.safetensors"))
    assert main(["generate", "--prompt", PROMPT, "--monitor", "love", "--max-new-tokens", "4", "--presets", str(tmp_path)]) == 0
    assert "--- seed 0 [love " in capsys.readouterr().out
    assert main(["generate", "--prompt", PROMPT, "--monitor", "nothing-here", "--presets", str(tmp_path)]) == 2
    assert "no preset named 'nothing-here'" in capsys.readouterr().err
    assert main(["generate", "--prompt", PROMPT, "--monitor", " , ", "--presets", str(tmp_path)]) == 2
    assert "--monitor needs preset names" in capsys.readouterr().err
