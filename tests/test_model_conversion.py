"""Converting the default model inside the webui's process, where its sampler hijack
(modules/sampler_hijack.py, v4.7.3) patches every GenerationConfig: min_p=0.0 and more are set on
each, which transformers' strict check at save refuses for greedy decoding."""
from __future__ import annotations

import json

import pytest
import transformers

from extensions.steering.engine import models


@pytest.fixture
def webui_sampler_hijack(monkeypatch):
    """GenerationConfig.__init__ patched as the webui patches it (the fields that matter here)."""
    original = transformers.GenerationConfig.__init__

    def patched(self, **kwargs):
        original(self, **kwargs)
        self.min_p = kwargs.pop("min_p", 0.0)
        self.tfs = kwargs.pop("tfs", 1.0)
        self.top_a = kwargs.pop("top_a", 0.0)
        self.dry_multiplier = kwargs.pop("dry_multiplier", 0.0)

    monkeypatch.setattr(transformers.GenerationConfig, "__init__", patched)
    assert transformers.GenerationConfig().min_p == 0.0


@pytest.mark.slow
def test_the_default_model_converts_under_the_webuis_sampler_hijack(tmp_path, monkeypatch, webui_sampler_hijack):
    monkeypatch.setenv("STEERING_CACHE", str(tmp_path))
    folder = models.resolve_model_folder()
    assert tmp_path in folder.parents and (folder / "config.json").is_file()
    saved = json.loads((folder / "generation_config.json").read_text())
    assert "min_p" not in saved  # only what differs from the defaults, as transformers writes it
    model, tokenizer = models.load_model(str(folder))
    text = "Hello world.\n\nThis sentence"
    assert tokenizer.decode(tokenizer(text).input_ids) == text  # spaces and newlines kept, nothing added
    ids = tokenizer("Hello", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=2, do_sample=False).shape[-1] == ids.shape[-1] + 2


def test_each_transformers_version_converts_its_own_copy(tmp_path, monkeypatch):
    """A folder saved by transformers 4 is misread by 5 (its tokenizer rebuilt as Llama's: spaces lost), and
    the project's two environments share the cache: each version gets its own folder."""
    monkeypatch.setenv("STEERING_CACHE", str(tmp_path))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    mine = models._converted_folder(gguf)
    monkeypatch.setattr(models.importlib.metadata, "version", lambda name: "4.57.6")
    assert models._converted_folder(gguf) != mine and models._converted_folder(gguf).parent == mine.parent
