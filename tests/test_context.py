"""ModelContext: made once per model; ``layers_path`` given once and honoured by every entry point.

The model here is the default model wrapped so that its blocks are reachable only through
``layers_path`` (nothing finds them by itself): building, saving, fingerprinting, applying and
distilling must all go through the path, through the engine, the runtime, the tab's actions and
the command line.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from extensions.steering import cli
from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.context import ModelContext
from extensions.steering.engine.layers import UnsupportedModelError
from extensions.steering.engine.methods import build_vector
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.recipe import Recipe
from extensions.steering.runtime import SteeringRuntime
from extensions.steering.ui import actions

PATH = "inner.model.layers"
PROMPT = "I went to the park and"


class Wrapped(nn.Module):
    """A causal LM whose decoder blocks sit where no known path and no config lead."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.inner.generate(*args, **kwargs)


@pytest.fixture(scope="module")
def wrapped(default_model):
    return Wrapped(default_model[0]), default_model[1]


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def love(name: str = "love-w") -> Recipe:
    return Recipe(name, positive=["Love"], negative=["Hate"], method="mean", layers=["20%"], strength=0.5, mode="all")


def greedy(model, ids: list[int], tokens: int = 8) -> list[int]:
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=tokens,
                             do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_the_path_is_needed_and_taken_once(wrapped, default_ctx):
    model, tokenizer = wrapped
    with pytest.raises(UnsupportedModelError, match="layers_path"):
        ModelContext.of(model, tokenizer)
    ctx = ModelContext.of(model, tokenizer, PATH)
    assert ctx.layers.blocks is default_ctx.layers.blocks and ctx.num_layers == 30 and ctx.layers.path == PATH
    assert ctx.fingerprint == ctx.fingerprint and len(ctx.fingerprint) == 16


def test_build_save_fingerprint_and_apply_through_the_path(wrapped, default_ctx, tmp_path):
    model, tokenizer = wrapped
    ctx = ModelContext.of(model, tokenizer, PATH)
    store = PresetStore(tmp_path / "presets", shipped=None)
    vector = build_vector(love(), ctx).vector
    assert vector.layers == [6]
    store.save(love(), vector, ctx)
    assert torch.equal(store.cached_vector(love(), ctx).directions[6], vector.directions[6])
    # the same weights and blocks: the wrapped model's vector is the plain model's
    assert torch.allclose(build_vector(love(), default_ctx).vector.directions[6], vector.directions[6], atol=1e-5)
    ids = actions.Request.check(PROMPT, 0, 8, False).ids(ctx)
    plain = greedy(model, ids)
    with steer(ctx, [Steer(vector, 0.5, "all")]):
        steered = greedy(model, ids)
    assert steered != plain and hooks(model) == 0


def test_the_runtime_and_the_tab_honour_the_path(wrapped, tmp_path):
    model, tokenizer = wrapped
    store = PresetStore(tmp_path / "presets", shipped=None)
    store.save(love())
    rt = SteeringRuntime(store, tmp_path / "data", lambda: (model, tokenizer), lambda: "Transformers", layers_path=PATH)
    rt.set_active([("love-w", 0.5)])
    assert "steering can run" in rt.status_line() and rt.current_model().layers.path == PATH
    ids = torch.tensor([actions.Request.check(PROMPT, 0, 8, False).ids(rt.current_model())])
    plain = greedy(model, ids[0].tolist())
    assert rt.begin_generation({"steering_chat": False}, ids) == [("love-w", 0.5)]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert out[0, ids.shape[1]:].tolist() != plain and rt.last_error is None and hooks(model) == 0
    # the tab: layer count, build, try, save, load
    assert actions.num_layers(rt) == 30
    draft = actions.build_draft(rt, "Love", "Hate", "mean", 6, "0.5", "auto")
    compared = actions.try_draft(rt, draft, PROMPT, 0, 8, False)
    assert compared.steered != compared.unsteered
    actions.save_draft(rt, draft, "tab-w", False)
    assert actions.load_preset(rt, "tab-w").vector.layers == [6]
    assert hooks(model) == 0


def test_a_wrong_path_is_said_plainly_and_nothing_is_steered(wrapped, tmp_path):
    model, tokenizer = wrapped
    store = PresetStore(tmp_path / "presets", shipped=None)
    store.save(love())
    rt = SteeringRuntime(store, tmp_path / "data", lambda: (model, tokenizer), lambda: "Transformers", layers_path="inner.nowhere")
    rt.set_active([("love-w", 0.5)])
    assert "steering can run" not in rt.status_line() and "inner.nowhere" in rt.status_line()
    assert rt.begin_generation({"steering_chat": False}, torch.tensor([[1, 2, 3]])) == []
    assert "inner.nowhere" in rt.last_error and "generate" not in model.__dict__


@pytest.mark.slow
def test_the_command_line_takes_the_path(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STEERING_PRESETS", str(tmp_path / "presets"))
    args = ["generate", "--prompt", PROMPT, "--steer", "love", "--max-new-tokens", "4", "--temperature", "0"]
    assert cli.main([*args, "--layers-path", "model.layers"]) == 0
    with_path = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == with_path
    assert cli.main([*args, "--layers-path", "model.nowhere"]) == 2
    assert "model.nowhere" in capsys.readouterr().err
