"""install.py on temporary webui folders (git-checkout and portable layouts)."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.py"
MARKERS = ("server.py", "download-model.py", "modules/extensions.py", "modules/shared.py",
           "modules/text_generation.py", "css/main.css", "js/main.js")


def make_webui(root: Path) -> Path:
    for marker in MARKERS:
        (root / marker).parent.mkdir(parents=True, exist_ok=True)
        (root / marker).write_text("# webui\n")
    (root / "extensions").mkdir(exist_ok=True)
    (root / "user_data" / "characters").mkdir(parents=True, exist_ok=True)
    return root


def run(*args, check=True):
    result = subprocess.run([sys.executable, str(INSTALL), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def webui(tmp_path):
    return make_webui(tmp_path / "text-generation-webui")


def test_refuses_a_folder_that_is_not_a_webui(tmp_path):
    (tmp_path / "server.py").write_text("")
    result = run(tmp_path, check=False)
    assert result.returncode == 2
    assert "is not a text-generation-webui folder" in result.stderr and "modules/extensions.py" in result.stderr
    assert not (tmp_path / "extensions").exists()
    assert run(tmp_path / "missing", check=False).returncode == 2


def test_install_puts_extension_recipes_and_character_in_place(webui):
    out = run(webui).stdout
    target = webui / "extensions" / "steering"
    for relative in ("script.py", "runtime.py", "engine/apply.py", "engine/presets.py", "ui/chat.py"):
        assert (target / relative).is_file(), relative
    shipped = sorted(p.name for p in (REPO / "presets").glob("*.yaml"))
    assert shipped and sorted(p.name for p in (target / "presets").glob("*.yaml")) == shipped
    assert not list(target.rglob("__pycache__"))
    assert (webui / "user_data" / "characters" / "Kind Assistant.yaml").is_file()
    assert (webui / "user_data" / "steering" / "presets").is_dir()
    assert "--extensions steering" in out and "default_extensions" in out


def test_the_installed_extension_finds_its_shipped_recipes(webui):
    run(webui)
    code = "from extensions.steering.engine.presets import SHIPPED_DIR; print(SHIPPED_DIR)"
    result = subprocess.run([sys.executable, "-c", code], cwd=webui, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(webui)})
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == webui / "extensions" / "steering" / "presets"


def test_install_is_idempotent_and_updates_only_its_own_files(webui):
    run(webui)
    target = webui / "extensions" / "steering"
    before = tree(webui)
    out = run(webui).stdout
    assert "0 file(s) written, 0 removed" in out
    assert tree(webui) == before
    manifest = json.loads((target / ".installed-files.json").read_text())
    manifest["files"].append("old_module.py")  # a file an older version installed
    (target / ".installed-files.json").write_text(json.dumps(manifest))
    (target / "old_module.py").write_text("")
    (target / "script.py").write_text("# edited\n")
    run(webui)
    assert not (target / "old_module.py").exists()
    assert (target / "script.py").read_bytes() == (REPO / "extensions" / "steering" / "script.py").read_bytes()


def test_user_presets_and_characters_are_never_overwritten(webui):
    user = webui / "user_data"
    mine = user / "steering" / "presets" / "kind.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("name: kind\n# my own\n")
    character = user / "characters" / "Kind Assistant.yaml"
    character.write_text("name: Mine\n")
    (user / "steering" / "chats.json").write_text("{}")
    run(webui)
    assert mine.read_text() == "name: kind\n# my own\n" and character.read_text() == "name: Mine\n"
    placed = webui / "extensions" / "steering" / "presets" / "extra.yaml"  # put there by hand
    placed.write_text("name: extra\n")
    run(webui)
    run(webui, "--uninstall")
    assert placed.read_text() == "name: extra\n"
    assert mine.is_file() and character.is_file() and (user / "steering" / "chats.json").is_file()


def test_a_shipped_name_already_there_by_hand_is_kept(webui):
    target = webui / "extensions" / "steering"
    run(webui)
    run(webui, "--uninstall")
    (target / "presets").mkdir(parents=True)
    (target / "presets" / "kind.yaml").write_text("name: kind\n# hand-made\n")
    (target / ".installed-files.json").write_text(json.dumps({"name": "steering", "files": []}))
    out = run(webui).stdout
    assert "kept" in out and "hand-made" in (target / "presets" / "kind.yaml").read_text()
    assert "presets/kind.yaml" not in json.loads((target / ".installed-files.json").read_text())["files"]


def test_uninstall_removes_only_what_it_installed(webui):
    run(webui)
    target = webui / "extensions" / "steering"
    (target / "notes.txt").write_text("mine")
    out = run(webui, "--uninstall").stdout
    assert "kept 1 file(s)" in out and "your data is kept" in out
    assert [p.name for p in target.rglob("*") if p.is_file()] == ["notes.txt"]
    (target / "notes.txt").unlink()
    run(webui, "--uninstall")  # nothing of ours left: says so, changes nothing
    assert not any(target.rglob("*.py"))


def test_refuses_an_extension_folder_it_did_not_install(webui):
    target = webui / "extensions" / "steering"
    target.mkdir()
    (target / "script.py").write_text("# someone else's\n")
    result = run(webui, check=False)
    assert result.returncode == 2 and "was not installed by this script" in result.stderr
    assert (target / "script.py").read_text() == "# someone else's\n"
    assert run(webui, "--uninstall", check=False).returncode == 2


def test_portable_layout(tmp_path):
    top = tmp_path / "textgen-4.7.3"
    make_webui(top / "app")
    (top / "app" / "user_data").rename(top / "user_data")
    run(top)
    assert (top / "app" / "extensions" / "steering" / "script.py").is_file()
    assert (top / "user_data" / "characters" / "Kind Assistant.yaml").is_file()


def fake_python(folder: Path, missing: list[str]) -> tuple[Path, Path]:
    """A stand-in for the webui's Python: reports ``missing`` modules and records pip calls."""
    log = folder / "pip-calls.txt"
    script = folder / "python"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ]; then echo \'{json.dumps(missing)}\'; exit 0; fi\n'
        f'echo "$@" >> "{log}"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


@pytest.mark.skipif(os.name == "nt", reason="the stand-in Python is a shell script")
def test_requirements_are_installed_only_when_asked(webui, tmp_path):
    python, log = fake_python(tmp_path, ["yaml", "safetensors"])
    out = run(webui, "--python", python).stdout
    assert "missing in the webui's Python: pyyaml, safetensors" in out and not log.exists()
    out = run(webui, "--python", python, "--requirements").stdout
    assert log.read_text().split() == ["-m", "pip", "install", "pyyaml", "safetensors"]


@pytest.mark.skipif(os.name == "nt", reason="the stand-in Python is a shell script")
def test_a_webui_without_torch_is_told_plainly_and_torch_is_never_installed(webui, tmp_path):
    python, log = fake_python(tmp_path, ["torch", "transformers"])
    out = run(webui, "--python", python, "--requirements").stdout
    assert "portable (llama.cpp-only) build" in out and "never installs torch" in out
    assert not log.exists()


def test_requirements_of_a_real_python(webui):
    out = run(webui, "--python", sys.executable).stdout
    assert "requirements: all present" in out
    assert "cannot find the webui's Python" in run(webui, "--requirements", check=False).stderr
