"""Shared fixtures (the embedded default model, loaded once per session; a fresh preset folder) and the
two test tiers.

Every test that uses the default model (through ``default_model``, ``default_ctx`` or a fixture built on
them) is marked ``slow`` here, so a new test is classified by what it uses, not by a marker its author
must remember; the few that reach the model otherwise (its GGUF file, a subprocess, a llama-server)
carry ``@pytest.mark.slow`` themselves. ``pytest --fast`` runs the rest and fails any of them that
touches the default model, so a misclassified test shows up instead of quietly slowing the fast tier.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from extensions.steering.engine import models
from extensions.steering.engine.models import DEFAULT_GGUF_PACKAGE, load_model

# The fixtures that load the default model; item.fixturenames holds every fixture a test depends on.
REAL_MODEL_FIXTURES = frozenset({"default_model", "default_ctx"})
_real_model_users: set[str] = set()  # tests of the fast tier that asked for the default model
_shadows: list[Path] = []  # the folders that hide the default model from the processes tests start


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help="the fast tier: leave out the tests marked slow and fail any other that loads the default model")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: loads the default model or runs it in another process (left out by --fast)")
    if config.getoption("fast"):
        _forbid_the_default_model()


def pytest_unconfigure(config):
    for shadow in _shadows:
        shutil.rmtree(shadow, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if config.getoption("fast"):
        slow = [item for item in items if item.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if not item.get_closest_marker("slow")]


def _forbid_the_default_model():
    """Make the default model's file unreachable: in this process (patched before the test modules import
    it, so their own imports of ``default_gguf`` get the guard too) and in the Python processes tests start
    (a package of the same name, first on PYTHONPATH, without the file)."""
    def forbidden():
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        _real_model_users.add(test)
        raise AssertionError(f"{test} loads the default model but is in the fast tier: mark it @pytest.mark.slow")

    models.default_gguf = forbidden
    shadow = Path(tempfile.mkdtemp(prefix="fast-tier-forbids-the-default-model-"))
    _shadows.append(shadow)
    (shadow / DEFAULT_GGUF_PACKAGE).mkdir()
    (shadow / DEFAULT_GGUF_PACKAGE / "__init__.py").write_text("")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Fails a fast-tier test that asked for the default model even where the code under test caught the
    guard's error (the runtime reports a failed model load as a status, not as an exception)."""
    report = (yield).get_result()
    if item.nodeid in _real_model_users:
        _real_model_users.discard(item.nodeid)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid} loads the default model but is in the fast tier: mark it @pytest.mark.slow"


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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: on a busy two-core machine two threads spin and run 5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
