"""Presets: recipes, names, atomic writes, the tensor cache per model, damaged files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from extensions.steering.engine.context import ModelContext
from extensions.steering.engine.files import load_vector, save_vector
from extensions.steering.engine.presets import SHIPPED_DIR, PresetStore
from extensions.steering.engine.recipe import Recipe, read_recipe
from extensions.steering.engine.validation import PresetError, check_name, resolve_layer
from extensions.steering.engine.vector import SteeringVector


def tiny_llama(hidden: int = 32, layers: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128)
    return AutoModelForCausalLM.from_config(config).eval()


def recipe(name: str = "mine", **changes) -> Recipe:
    fields = dict(name=name, positive=["Love"], negative=["Hate"], method="mean", layers=[1], strength=0.3, mode="all")
    fields.update(changes)
    return Recipe(**fields)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


@pytest.mark.parametrize("name", ["..", "../evil", "a/b", "/etc/passwd", ".hidden", "bad\x00name", "tab\tname", "", " lead", "x" * 65, "a..b"])
def test_names_that_could_escape_or_hide_are_refused(name):
    with pytest.raises(PresetError, match="invalid preset name"):
        check_name(name)


def test_good_names_pass():
    for name in ("love", "no-disclaimer", "Kind v2", "a.b_c"):
        assert check_name(name) == name


def test_layers_as_index_negative_or_share_of_depth():
    assert resolve_layer(6, 30) == 6
    assert resolve_layer(-1, 30) == 29
    assert resolve_layer("20%", 30) == 6
    assert resolve_layer("100%", 30) == 29
    for bad in (30, "120%", "x%", 1.5, float("inf"), float("nan"), "", None):
        with pytest.raises(ValueError, match="layer"):
            resolve_layer(bad, 30)


def test_recipe_defaults_and_validation():
    assert Recipe(name="a", positive=["x"], negative=["y"], method="actadd").mode == "actadd"
    assert Recipe(name="a", positive=["x"], negative=["y"], method="mean").mode == "all"
    for changes, message in [
        (dict(positive=[]), "positive"),
        (dict(strength=float("nan")), "finite"),
        (dict(mode="sideways"), "unknown mode"),
        (dict(method="magic"), "unknown method"),
        (dict(method="actadd", positive=["a", "b"], negative=["c", "d"], mode="actadd"), "actadd takes one"),
        (dict(mode="actadd"), "mode actadd needs per-position rows"),
    ]:
        with pytest.raises(PresetError, match=message):
            recipe(**changes)


def test_a_truncated_or_infinite_recipe_never_loads_as_the_defaults(tmp_path):
    store = PresetStore(tmp_path / "user")
    store.save(recipe("mine"))
    path = tmp_path / "user" / "mine.yaml"
    text = path.read_text()
    for cut in range(1, len(text) - 1, 7):  # every truncation either fails clearly or keeps every field
        path.write_text(text[:cut])
        try:
            loaded = store.recipe("mine")
        except PresetError as error:
            assert "mine.yaml" in str(error)
            continue
        assert (loaded.method, loaded.layers, loaded.strength, loaded.positive) == ("mean", [1], 0.3, ["Love"])
    path.write_text(text.replace("- 1", "- .inf"))
    with pytest.raises(PresetError, match=r"mine\.yaml: invalid layer"):
        store.recipe("mine")
    path.write_text(text.replace("strength: 0.3", "strength: 1.0e+30"))
    with pytest.raises(PresetError, match="out of range"):
        store.recipe("mine")


def test_stand_in_metadata_never_changes_the_tensor_key_and_old_extra_files_load(tmp_path):
    from extensions.steering.engine.recipe import StandIn

    plain = recipe("mine")
    assert recipe("mine", stands_in_for=StandIn("Be kind.", "sentiment")).key() == plain.key()
    old = tmp_path / "old.yaml"
    old.write_text("name: old\npositive: [Kind]\nnegative: [Cruel]\nmethod: mean\nlayers: [1]\nstrength: 0.3\n"
                   "extra: {system: Be kind., metric: sentiment}\n")
    loaded = read_recipe(old)
    assert loaded.stands_in_for == StandIn("Be kind.", "sentiment") and loaded.key() == recipe("old", positive=["Kind"], negative=["Cruel"]).key()
    again = tmp_path / "again.yaml"
    again.write_text(loaded.to_yaml())  # what the current release writes reads back the same
    assert read_recipe(again) == loaded and "stands_in_for" in again.read_text()
    distilled = "name: d\nmethod: distill\nlayers: [2]\nstrength: 1.0\nmode: all\nextra: {system: Be kind., via: contrast, metric: %s}\n"
    old.write_text(distilled % "sentiment")
    first = read_recipe(old)
    old.write_text(distilled % "words")
    second = read_recipe(old)
    assert first.options.via == "contrast" and first.target().system == "Be kind." and second.target().metric == "words"
    assert first.key() == second.key()  # the evaluation-only metric is not part of the key


def test_shipped_recipes_all_parse():
    names = sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))
    assert {"love", "kind", "concise", "json", "no-disclaimer", "french"} <= set(names)
    for name in names:
        assert read_recipe(SHIPPED_DIR / f"{name}.yaml").name == name


def test_save_list_show_rename_delete(tmp_path):
    store = PresetStore(tmp_path / "user")
    store.save(recipe("mine", description="test"))
    listed = {info.name: info.shipped for info in store.list()}
    assert listed["mine"] is False and listed["love"] is True
    assert store.recipe("mine").description == "test"
    store.rename("mine", "yours")
    assert not store.exists("mine") and store.recipe("yours").positive == ["Love"]
    store.delete("yours")
    assert not store.exists("yours")
    with pytest.raises(PresetError, match="no preset named"):
        store.recipe("yours")


def test_shipped_presets_are_read_only(tmp_path):
    store = PresetStore(tmp_path / "user")
    before = snapshot(SHIPPED_DIR)
    for action in (lambda: store.save(recipe("love")), lambda: store.delete("love"), lambda: store.rename("love", "x")):
        with pytest.raises(PresetError, match="shipped"):
            action()
    assert snapshot(SHIPPED_DIR) == before


def test_an_existing_preset_is_not_overwritten_by_accident(tmp_path):
    store = PresetStore(tmp_path / "user")
    store.save(recipe("mine", strength=0.3))
    with pytest.raises(PresetError, match="exists"):
        store.save(recipe("mine", strength=0.9))
    assert store.recipe("mine").strength == 0.3
    store.save(recipe("mine", strength=0.9), overwrite=True)
    assert store.recipe("mine").strength == 0.9


def test_a_failed_save_leaves_the_old_preset_intact(tmp_path, monkeypatch):
    store = PresetStore(tmp_path / "user")
    store.save(recipe("mine", strength=0.3))
    before = snapshot(tmp_path / "user")

    def broken_replace(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save(recipe("mine", strength=0.9), overwrite=True)
    monkeypatch.undo()
    assert snapshot(tmp_path / "user") == before  # no temporary file left either
    assert store.recipe("mine").strength == 0.3


def test_damaged_yaml_names_the_file(tmp_path):
    store = PresetStore(tmp_path / "user")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "broken.yaml").write_text("name: broken\npositive: [unclosed\n")
    with pytest.raises(PresetError, match=r"broken\.yaml: damaged YAML"):
        store.recipe("broken")
    (tmp_path / "user" / "odd.yaml").write_text("- just\n- a list\n")
    with pytest.raises(PresetError, match=r"odd\.yaml: expected a mapping"):
        store.recipe("odd")


def test_vectors_round_trip_and_damaged_tensors_name_the_file(tmp_path):
    vector = SteeringVector({2: torch.randn(576), 4: torch.randn(3, 576)}, {2: 10.0})
    path = tmp_path / "v.safetensors"
    save_vector(path, vector)
    loaded, _ = load_vector(path)
    assert loaded.layers == [2, 4] and torch.equal(loaded.directions[4], vector.directions[4])
    assert loaded.residual_norms == {2: 10.0}
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(PresetError, match=r"v\.safetensors: damaged tensor file"):
        load_vector(path)
    pickled = tmp_path / "p.safetensors"
    torch.save({"layer.1": torch.zeros(4)}, pickled)  # a pickle in disguise is refused, never unpickled
    with pytest.raises(PresetError, match="damaged tensor file"):
        load_vector(pickled)


def test_tensors_are_cached_per_model_and_never_applied_to_a_model_they_do_not_fit(tmp_path):
    store = PresetStore(tmp_path / "user")
    tokenizer = _byte_tokenizer()
    small, other_weights, wider = (ModelContext.of(m, tokenizer) for m in (tiny_llama(seed=0), tiny_llama(seed=1), tiny_llama(hidden=48)))
    mine = recipe("mine")
    store.save(mine)
    first = store.vector("mine", small)
    assert len(list((tmp_path / "user" / "tensors" / "mine").glob("*.safetensors"))) == 1
    assert torch.equal(store.vector("mine", small).directions[1], first.directions[1])  # from the cache
    assert small.fingerprint != other_weights.fingerprint
    rebuilt = store.vector("mine", other_weights)
    assert not torch.equal(rebuilt.directions[1], first.directions[1])
    assert store.vector("mine", wider).hidden_size == 48
    assert len(list((tmp_path / "user" / "tensors" / "mine").glob("*.safetensors"))) == 3
    # A cached file that claims to fit but does not (wrong hidden size) is ignored and rebuilt.
    cached = store._tensor_path(mine, small.fingerprint)
    save_vector(cached, SteeringVector({1: torch.randn(48)}))
    assert store.vector("mine", small).hidden_size == 32
    # A damaged cache is rebuilt from the recipe (and written again), not a dead end.
    cached.write_bytes(cached.read_bytes()[:40])
    assert torch.equal(store.vector("mine", small).directions[1], first.directions[1])
    assert load_vector(cached)[0].hidden_size == 32


def _byte_tokenizer():
    """A real (tiny) tokenizer for random models: one token per byte, BOS 1, EOS 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(i): i + 3 for i in range(32, 125)}
    vocab.update({"<unk>": 0, "<s>": 1, "</s>": 2})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")


# -- calibrated strength and layer choice in recipes -------------------------------------------------------
def _key_before_calibration(r: Recipe) -> str:
    """Recipe.key() as written before calibration existed: old caches must keep their names."""
    import hashlib
    import json

    parts = {"positive": r.positive, "negative": r.negative, "method": r.method, "layers": [str(x) for x in r.layers], "reading": r.reading}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


@pytest.mark.parametrize("name", ["love", "kind", "concise", "json", "french", "no-disclaimer"])
def test_shipped_numeric_strengths_load_fixed_and_keep_their_tensor_keys(name):
    text = (SHIPPED_DIR / f"{name}.yaml").read_text()
    loaded = read_recipe(SHIPPED_DIR / f"{name}.yaml")
    assert not loaded.calibrated and loaded.dose is None and not loaded.auto_layers
    assert f"strength: {loaded.strength:g}" in text and isinstance(loaded.strength, float)
    assert loaded.key() == _key_before_calibration(loaded)


def test_new_prompt_recipes_are_calibrated_with_an_auto_layer_and_actadd_stays_fixed():
    new = Recipe("n", ["Happy"], ["Sad"], method="mean")
    assert new.calibrated and new.auto_layers and new.strength == 1.0 and new.dose == 1.0
    assert Recipe("p", ["Happy", "Glad"], ["Sad", "Upset"], method="pca").calibrated
    actadd = Recipe("a", ["Happy"], ["Sad"], method="actadd")
    assert not actadd.calibrated and actadd.strength == 4.0 and actadd.layers == ["20%", "27%"]
    assert not recipe(strength=0.3).calibrated  # a number alone is a fixed strength


def test_strength_auto_and_a_dose_round_trip_through_yaml(tmp_path):
    for dose, written in ((1.0, "strength: auto\n"), (1.5, "strength: auto\ndose: 1.5\n")):
        made = recipe(strength=dose, calibrated=True, layers="auto")
        text = made.to_yaml()
        assert written in text and "layers: auto\n" in text and "calibrated" not in text
        path = tmp_path / "r.yaml"
        path.write_text(text)
        loaded = read_recipe(path)
        assert loaded == made and loaded.calibrated and loaded.strength == dose and loaded.layers == ["auto"]


def test_the_tensor_key_tells_fixed_from_calibrated_but_not_one_dose_from_another():
    fixed, auto = recipe(strength=0.3), recipe(strength="auto")
    assert fixed.key() != auto.key()
    assert recipe(strength=2.0, calibrated=True).key() == auto.key()
    assert recipe(layers="auto", strength=0.3).key() not in (fixed.key(), auto.key())


@pytest.mark.parametrize("text, message", [
    ("strength: 0.3\ndose: 2\n", "write strength: auto"),
    ("strength: auto\ncalibrated: true\n", "calibrated"),
    ("strength: fast\n", "must be a number"),
    ("strength: auto\ndose: nan\n", "finite"),
])
def test_bad_calibration_fields_are_refused_by_name(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\npositive: [a]\nnegative: [b]\nmethod: mean\nlayers: [6]\n" + text)
    with pytest.raises(PresetError, match=message):
        read_recipe(path)


def test_auto_is_only_for_what_can_be_measured():
    with pytest.raises(PresetError, match="auto alone"):
        recipe(layers=["auto", 6])
    with pytest.raises(PresetError, match="strength auto is for vectors built from prompts"):
        Recipe("d", method="distill", options={"system": "Be kind."}, strength="auto")
    with pytest.raises(PresetError, match="layers auto is for vectors built from prompts"):
        Recipe("d", method="distill", options={"system": "Be kind."}, layers="auto")
    with pytest.raises(ValueError, match="layer auto is chosen when the vector is built"):
        resolve_layer("auto", 30)
    assert recipe(layers="auto").layer_indices(30) == [6, 9, 12, 15, 18, 21, 24]  # the candidates it chooses among


def test_a_cached_vector_copied_over_another_presets_cache_name_is_not_used(tmp_path):
    """The file's own recorded recipe key (and model) must match: a copy is rebuilt over, never applied."""
    store = PresetStore(tmp_path / "user")
    ctx = ModelContext.of(tiny_llama(), _byte_tokenizer())
    store.save(recipe("a", positive=["Love"], negative=["Hate"]))
    store.save(recipe("b", positive=["Calm"], negative=["Anger"]))
    vector_a, vector_b = store.vector("a", ctx), store.vector("b", ctx)
    path_a, path_b = (store._tensor_path(store.recipe(n), ctx.fingerprint) for n in ("a", "b"))
    path_b.write_bytes(path_a.read_bytes())
    assert store.cache_entries(store.recipe("b")) == []  # show lists no cache for b
    assert store.cached_vector(store.recipe("b"), ctx) is None
    assert torch.equal(store.vector("b", ctx).directions[1], vector_b.directions[1])
    assert load_vector(path_b)[1]["recipe"] == store.recipe("b").key()  # rebuilt in place
    assert not torch.equal(vector_a.directions[1], vector_b.directions[1])
    # a file made for another model, renamed to this model's fingerprint, is refused as well
    other = ModelContext.of(tiny_llama(seed=1), _byte_tokenizer())
    store.vector("b", other)
    path_b.write_bytes(store._tensor_path(store.recipe("b"), other.fingerprint).read_bytes())
    assert store.cached_vector(store.recipe("b"), ctx) is None
