"""Methods as plugins (engine/methods/): the registry, each method's own options, defaults and checks, the
one way to get a recipe's vector (build_vector), and the tensor keys of existing recipes kept as they were."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
import yaml

from extensions.steering.engine import apply
from extensions.steering.engine import recipe as recipe_module
from extensions.steering.engine.build import build_actadd, build_from_pairs
from extensions.steering.engine.context import ModelContext
from extensions.steering.engine.distill.options import DIRECT_STRENGTH, DistillOptions
from extensions.steering.engine.methods import (
    DEFAULT,
    METHODS,
    PROMPT_METHODS,
    OptionsMethod,
    build_vector,
    default_expand,
    method_named,
    register,
)
from extensions.steering.engine.methods.imported import ImportedVector, vector_path
from extensions.steering.engine.presets import SHIPPED_DIR, PresetStore
from extensions.steering.engine.recipe import Recipe, StandIn, read_recipe
from extensions.steering.engine.validation import PresetError, mapping_to
from extensions.steering.engine.vector import SteeringVector
from tests.test_presets import _byte_tokenizer, tiny_llama

# Recipe.key() names every cached vector file and is checked against the key stored in it: a change would
# orphan every vector built or imported before. These are the keys the release before methods owned their
# options gave (measured on that commit, 1fda298).
SHIPPED_KEYS = {
    "concise": "259e34e7f72d", "french": "02969aa7b160", "json": "f1c0cbf87bdf", "kind-assistant-distilled": "ed519d0de230",
    "kind-distilled": "f94aaa3c2cd0", "kind": "6aae671e3d5e", "love": "450a6aa94362", "no-disclaimer": "9c7972bc3d44",
    "pirate-distilled": "1169a1021dcf",
}
# one recipe file per kind of part of the key (its own options, calibration, auto layers, expansion, reading)
OLD_FILES = {
    "b04f211ac546": "name: imp\nmethod: imported\nlayers: [3, 4]\nstrength: 1.0\nmode: all\nimported:\n  file: imp.safetensors\n"
                    "  hidden_size: 576\n  layer_count: 30\n  model_hint: llama\n  source: imp.gguf\n",
    "47ec7611e20a": "name: dist\nmethod: distill\nlayers: ['20%']\nstrength: 0.15\nmode: all\ndistill:\n  system: Be kind.\n  via: direct\n"
                    "  instead: Hi.\n  steps: 3\n  cut_short: {time_limit: 5, planned_steps: 24}\n",
    "8b1b1a06a1f4": "name: joy\nmethod: mean\npositive: [Joy]\nnegative: [Sorrow]\nlayers: auto\nstrength: auto\ndose: 1.5\nexpand: v1\n",
    "d7f3b9a1303a": "name: p\nmethod: pca\npositive: [a, b]\nnegative: [c, d]\nlayers: [6]\nstrength: 0.3\nreading: last\n",
    "a95cfb299cdc": "name: a\nmethod: actadd\npositive: Love\nnegative: Hate\nlayers: [6, 8]\nstrength: 4\nmode: actadd\n",
    "4ff4f71c33a0": "name: m\nmethod: mean\npositive: [x]\nnegative: [y]\nlayers: [5]\nstrength: auto\n",
}


@pytest.mark.parametrize("name", sorted(SHIPPED_KEYS))
def test_the_shipped_presets_keep_their_tensor_keys_and_read_back_unchanged(name, tmp_path):
    loaded = read_recipe(SHIPPED_DIR / f"{name}.yaml")
    assert loaded.key() == SHIPPED_KEYS[name]
    again = tmp_path / f"{name}.yaml"
    again.write_text(loaded.to_yaml())
    assert read_recipe(again) == loaded and read_recipe(again).key() == SHIPPED_KEYS[name]


@pytest.mark.parametrize("key, text", sorted(OLD_FILES.items()))
def test_recipe_files_of_every_method_keep_their_tensor_keys(key, text):
    assert Recipe.from_dict(yaml.safe_load(text), "old.yaml").key() == key


def test_every_shipped_preset_is_listed_in_the_pinned_keys():
    assert {path.stem for path in SHIPPED_DIR.glob("*.yaml")} == set(SHIPPED_KEYS)


# -- the registry -----------------------------------------------------------------------------------------
def test_the_registry_names_each_method_once_and_one_default_everywhere():
    assert list(METHODS) == ["actadd", "mean", "pca", "distill", "imported"]
    assert PROMPT_METHODS == ("actadd", "mean", "pca") and DEFAULT == "mean"
    assert Recipe("x", positive=["Love"], negative=["Hate"]).method == DEFAULT  # Python as the command line and the tab
    assert recipe_module.MODES is apply.MODES  # the modes are the hooks' own, named once
    with pytest.raises(ValueError, match="registered already"):
        register(METHODS["mean"])
    with pytest.raises(PresetError, match="unknown method 'magic'; choose one of actadd, mean, pca, distill, imported"):
        method_named("magic")
    with pytest.raises(PresetError, match="unknown method"):
        Recipe.from_dict({"name": "x", "method": ["mean"], "layers": [1], "strength": 1}, "odd.yaml")


@pytest.mark.parametrize("name, fields", [
    ("actadd", ("method", "layers", "strength", "positive", "negative")),
    ("mean", ("method", "layers", "strength", "positive", "negative")),
    ("distill", ("method", "layers", "strength", "distill")),
    ("imported", ("method", "layers", "strength", "imported")),
])
def test_each_method_says_what_a_file_of_it_must_hold(name, fields):
    assert METHODS[name].required_fields() == fields


@dataclass(frozen=True)
class Offset:
    """The options of a method registered by a test: one layer's direction along one hidden unit."""

    unit: int
    layer: int = 1

    @classmethod
    def from_dict(cls, data: Any) -> Offset:
        return mapping_to(cls, data, "offset")

    def to_dict(self) -> dict:
        return {"unit": self.unit, "layer": self.layer}

    def tensor_options(self) -> dict:
        return self.to_dict()


class OffsetMethod(OptionsMethod):
    name = "offset"
    summary = "one hidden unit, for the test of registering a method"
    options_key = "offset"
    options_type = Offset

    def default_layers(self, options: Offset) -> list[int | str]:
        return [options.layer]

    def build(self, recipe, ctx, layers, progress) -> SteeringVector:
        return SteeringVector({layer: torch.eye(ctx.hidden_size)[recipe.options.unit] for layer in layers})


@pytest.fixture
def offset_method():
    method = register(OffsetMethod())
    yield method
    del METHODS[method.name]


def test_a_registered_method_owns_its_options_file_key_defaults_and_builder(offset_method, tmp_path):
    store = PresetStore(tmp_path / "user", shipped=None)
    made = Recipe("o", method="offset", options={"unit": 3})
    assert made.options == Offset(3) and made.layers == [1] and made.strength == 1.0 and made.mode == "all"
    store.save(made)
    text = (tmp_path / "user" / "o.yaml").read_text()
    assert "offset:\n  unit: 3\n  layer: 1\n" in text and "options" not in text
    loaded = store.recipe("o")
    assert loaded == made and loaded.key() == made.key() != replace(made, options=Offset(4)).key()
    ctx = ModelContext.of(tiny_llama(), _byte_tokenizer())
    vector = store.vector(loaded, ctx)
    assert vector.layers == [1] and int(vector.directions[1][0].argmax()) == 3
    assert store.cached_vector(loaded, ctx) is not None  # cached like any built vector
    (tmp_path / "user" / "bad.yaml").write_text(text.replace("name: o", "name: bad").replace("method: offset", "method: mean"))
    with pytest.raises(PresetError, match="offset options belong to method offset, not mean"):
        store.recipe("bad")


# -- each method's own options -------------------------------------------------------------------------------
def test_one_options_slot_holds_the_methods_own_options():
    distilled = Recipe("d", method="distill", options={"system": "Be kind.", "via": "direct"})
    assert isinstance(distilled.options, DistillOptions) and distilled.options.via == "direct"
    assert distilled.strength == DIRECT_STRENGTH and distilled.layers == ["20%"]  # the distill method's defaults for direct
    assert Recipe("d", method="distill", options=DistillOptions("Be kind.")).layers == ["10%", "20%", "30%", "40%", "50%"]
    imported = Recipe("i", method="imported", layers=[2], options={"file": "i.safetensors", "hidden_size": 8, "layer_count": 4})
    assert imported.options == ImportedVector("i.safetensors", 8, 4)
    assert Recipe("m", positive=["a"], negative=["b"], method="mean").options is None
    for made, message in [
        (lambda: Recipe("m", positive=["a"], negative=["b"], options=DistillOptions("Hi")), "method mean takes no options"),
        (lambda: Recipe("d", method="distill"), r"method distill needs its options \(a distill: mapping\)"),
        (lambda: Recipe("d", method="distill", options={"system": "Hi", "colour": "red"}), "colour"),
        (lambda: Recipe("i", method="imported", layers=[2], options={"file": "../x.safetensors", "hidden_size": 8, "layer_count": 4}),
         "imported.file must be"),
    ]:
        with pytest.raises(PresetError, match=message):
            made()


def test_what_a_preset_stands_in_for_and_its_note_come_from_its_methods_options():
    cut = DistillOptions("Be a pirate.", instead="Jack is a sailor.", steps=3, cut_short={"time_limit": 5, "planned_steps": 24})
    pirate = Recipe("p", method="distill", options=cut, stands_in_for=StandIn(metric="pirate"))
    assert pirate.target() == StandIn("Be a pirate.", "pirate", "Jack is a sailor.")
    assert pirate.note() == cut.note() and "cut short by a time limit of 5 s after 3 of 24 steps" in pirate.note()
    kind = Recipe("k", positive=["Kind"], negative=["Cruel"], stands_in_for=StandIn("Be kind."))
    assert kind.target() == StandIn("Be kind.") and kind.note() is None


def test_the_prompt_methods_check_their_pairs_when_the_recipe_is_made():
    with pytest.raises(PresetError, match="3 positive and 2 negative prompts: give equal numbers, or one on a side"):
        Recipe("m", positive=["a", "b", "c"], negative=["d", "e"], layers=[1], strength=0.3)
    with pytest.raises(PresetError, match="expand turns one short pair into many"):
        Recipe("m", positive=["a", "b"], negative=["c", "d"], expand="v1")
    with pytest.raises(PresetError, match="expand turns one short pair into many"):
        Recipe("a", positive=["a"], negative=["b"], method="actadd", expand="v1")
    assert default_expand("mean", ["Joy"], ["Sorrow"]) == "v1" and default_expand("distill", ["Joy"], ["Sorrow"]) is None


# -- one way to a recipe's vector ----------------------------------------------------------------------------
def test_build_vector_gives_what_the_algorithms_give(tmp_path):
    ctx = ModelContext.of(tiny_llama(), _byte_tokenizer())
    pairs = [("Love", "Hate"), ("Kind", "Mean")]
    mean = Recipe("m", positive=[p for p, _ in pairs], negative=[n for _, n in pairs], layers=[1], strength=0.3)
    built = build_vector(mean, ctx)
    assert built.calibration is None
    assert torch.equal(built.vector.directions[1], build_from_pairs(ctx, pairs, [1], "mean").directions[1])
    one_side = Recipe("m", positive=["Love"], negative=["Hate", "Mean"], method="pca", layers=[2], strength=0.3)
    assert torch.equal(build_vector(one_side, ctx).vector.directions[2],
                       build_from_pairs(ctx, [("Love", "Hate"), ("Love", "Mean")], [2], "pca").directions[2])
    actadd = Recipe("a", positive=["Love"], negative=["Hate"], method="actadd", layers=[1])
    assert torch.equal(build_vector(actadd, ctx).vector.directions[1], build_actadd(ctx, "Love", "Hate", [1]).directions[1])
    store = PresetStore(tmp_path / "user", shipped=None)
    store.save(mean, build_vector(mean, ctx).vector, ctx)
    assert torch.equal(store.vector("m", ctx).directions[1], built.vector.directions[1])  # the cached variant: the same vector


def test_an_imported_vector_is_read_from_its_own_file(tmp_path):
    store = PresetStore(tmp_path / "user", shipped=None)
    ctx = ModelContext.of(tiny_llama(), _byte_tokenizer())
    vector = SteeringVector({1: torch.randn(ctx.hidden_size)})
    made = Recipe("i", method="imported", layers=[1], options=ImportedVector("i.safetensors", ctx.hidden_size, ctx.num_layers))
    path = store.save_imported(made, vector)
    loaded = store.recipe("i")
    assert vector_path(loaded) == path.parent / "vectors" / "i.safetensors"
    assert torch.equal(build_vector(loaded, ctx).vector.directions[1], vector.directions[1])
    store.rename("i", "j")  # its own file moves with it, and the recipe names the new one
    assert store.recipe("j").options.file == "j.safetensors" and torch.equal(store.vector("j", ctx).directions[1], vector.directions[1])
    wider = ModelContext.of(tiny_llama(hidden=48), _byte_tokenizer())
    with pytest.raises(PresetError, match="j was imported for another model .*its hidden size is 32, the model's 48"):
        store.vector("j", wider)
