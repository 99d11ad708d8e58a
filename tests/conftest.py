"""Shared fixtures: the embedded default model (loaded once per session) and a fresh preset folder."""
from __future__ import annotations

import pytest
import torch

from extensions.steering.engine.models import load_model


@pytest.fixture(scope="session")
def default_model():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct, float32 on the CPU."""
    torch.manual_seed(0)
    return load_model()


@pytest.fixture
def presets_dir(tmp_path):
    return tmp_path / "presets"


@pytest.fixture(scope="session")
def default_ctx(default_model):
    """The ModelContext of the default model."""
    from extensions.steering.engine.context import ModelContext

    return ModelContext.of(*default_model)
