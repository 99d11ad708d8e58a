"""Presets: recipes, names, atomic writes, the tensor cache per model, damaged files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from extensions.steering.engine.presets import (
    SHIPPED_DIR,
    PresetError,
    PresetStore,
    Recipe,
    check_name,
    load_vector,
    model_fingerprint,
    read_recipe,
    resolve_layer,
    save_vector,
)
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
    for bad in (30, "120%", "x%", 1.5):
        with pytest.raises(PresetError):
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
    small, other_weights, wider = tiny_llama(seed=0), tiny_llama(seed=1), tiny_llama(hidden=48)
    tokenizer = _byte_tokenizer()
    mine = recipe("mine")
    store.save(mine)
    first = store.vector("mine", small, tokenizer)
    assert len(list((tmp_path / "user" / "tensors" / "mine").glob("*.safetensors"))) == 1
    assert torch.equal(store.vector("mine", small, tokenizer).directions[1], first.directions[1])  # from the cache
    assert model_fingerprint(small) != model_fingerprint(other_weights)
    rebuilt = store.vector("mine", other_weights, tokenizer)
    assert not torch.equal(rebuilt.directions[1], first.directions[1])
    assert store.vector("mine", wider, tokenizer).hidden_size == 48
    assert len(list((tmp_path / "user" / "tensors" / "mine").glob("*.safetensors"))) == 3
    # A cached file that claims to fit but does not (wrong hidden size) is ignored and rebuilt.
    cached = store._tensor_path(mine, model_fingerprint(small))
    save_vector(cached, SteeringVector({1: torch.randn(48)}))
    assert store.vector("mine", small, tokenizer).hidden_size == 32


def _byte_tokenizer():
    """A real (tiny) tokenizer for random models: one token per byte, BOS 1, EOS 2."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {chr(i): i + 3 for i in range(32, 125)}
    vocab.update({"<unk>": 0, "<s>": 1, "</s>": 2})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")
