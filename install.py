#!/usr/bin/env python3
"""Install the `steering` extension into a text-generation-webui folder (or remove it).

    python install.py /path/to/text-generation-webui              install or update
    python install.py /path/to/text-generation-webui --requirements   also pip-install what the
                                                                    webui's own Python lacks
    python install.py /path/to/text-generation-webui --uninstall

It copies extensions/steering (code and the shipped recipes, into extensions/steering/presets) and
the example characters into user_data/characters when they are not there yet. It never touches the
user's data (user_data/steering: presets, chat choices, character attachments) and never replaces a
file it did not install. Running it again updates what it installed and changes nothing else.
Standard library only: any Python 3.9+ can run it.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NAME = "steering"
REPO = Path(__file__).resolve().parent
SOURCE = REPO / "extensions" / NAME
MANIFEST = ".installed-files.json"
# Present in every webui root, git checkout or portable build (server.py's folder).
WEBUI_MARKERS = ("server.py", "download-model.py", "modules/extensions.py", "modules/shared.py",
                 "modules/text_generation.py", "extensions", "css/main.css", "js/main.js")
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
# import name -> pip name of what the extension needs in the webui's Python
NEEDS = {"torch": None, "transformers": None, "safetensors": "safetensors", "yaml": "pyyaml", "numpy": "numpy"}


class InstallError(Exception):
    """Printed as one line, exit code 2."""


def log(message: str) -> None:
    print(message, flush=True)


# -- where things are --------------------------------------------------------------------------------------
def webui_root(folder: Path) -> Path:
    """The folder holding server.py: the given one, or its app/ (portable builds)."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise InstallError(f"{folder} is not a folder")
    for candidate in (folder, folder / "app"):
        if all((candidate / marker).exists() for marker in WEBUI_MARKERS):
            return candidate
    missing = [m for m in WEBUI_MARKERS if not (folder / m).exists()]
    raise InstallError(
        f"{folder} is not a text-generation-webui folder (missing {', '.join(missing)}); "
        "give the folder that holds server.py"
    )


def user_data_dir(root: Path, given: Path | None) -> Path:
    """user_data as the webui resolves it (paths.py): <root>/user_data, or ../user_data in portable builds."""
    if given:
        return given.expanduser().resolve()
    for candidate in (root / "user_data", root.parent / "user_data"):
        if candidate.is_dir():
            return candidate
    return root / "user_data"


def webui_python(root: Path, given: str | None) -> Path | None:
    """The Python the webui runs with: its installer's environment or a portable build's."""
    if given:
        return Path(given)
    for relative in ("installer_files/env/bin/python", "installer_files/env/python.exe",
                     "portable_env/bin/python3", "portable_env/python.exe", "../portable_env/bin/python3"):
        candidate = root / relative
        if candidate.is_file():
            return candidate
    return None


def shipped_files() -> dict[str, Path]:
    """Relative path in the installed extension -> source file."""
    files = {}
    for path in sorted(SOURCE.rglob("*")):
        relative = path.relative_to(SOURCE)
        if path.is_file() and not SKIP_PARTS.intersection(relative.parts) and path.suffix != ".pyc":
            files[relative.as_posix()] = path
    for recipe in sorted((REPO / "presets").glob("*.yaml")):
        files[f"presets/{recipe.name}"] = recipe
    return files


# -- copying -----------------------------------------------------------------------------------------------
def copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(target: Path) -> list[str] | None:
    path = target / MANIFEST
    if not path.is_file():
        return None
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InstallError(f"{path} is damaged; remove {target} by hand and install again") from None


def write_manifest(target: Path, files: list[str]) -> None:
    text = json.dumps({"name": NAME, "files": sorted(files)}, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=target)
    os.close(fd)
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, target / MANIFEST)


def remove_empty_dirs(top: Path) -> None:
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if folder.name == "__pycache__":
            shutil.rmtree(folder, ignore_errors=True)
        elif not any(folder.iterdir()):
            folder.rmdir()


def install(root: Path, user_data: Path, characters: bool, force: bool) -> None:
    target = root / "extensions" / NAME
    if target.resolve() == SOURCE.resolve():
        raise InstallError(f"{target} is this source folder itself; run install.py from the steering repository")
    previous = read_manifest(target) if target.exists() else None
    if target.exists() and previous is None and any(target.iterdir()) and not force:
        raise InstallError(f"{target} exists and was not installed by this script; move it away or pass --force")
    previous = set(previous or [])
    files = shipped_files()
    changed, kept = 0, set()
    for relative, source in files.items():
        destination = target / relative
        if destination.exists() and relative not in previous and relative.startswith("presets/") and not force:
            log(f"kept {destination} (not installed by this script)")
            kept.add(relative)
            continue
        if destination.is_file() and filecmp.cmp(source, destination, shallow=False):
            continue
        copy_atomic(source, destination)
        changed += 1
    stale = sorted(previous - set(files) - kept)
    for relative in stale:
        (target / relative).unlink(missing_ok=True)
    write_manifest(target, [r for r in files if r not in kept])
    remove_empty_dirs(target)
    log(f"extension: {target} ({changed} file(s) written, {len(stale)} removed, {len(files) - changed - len(kept)} unchanged)")
    recipes = sum(1 for r in files if r.startswith("presets/"))
    log(f"shipped recipes: {recipes} in {target / 'presets'}")
    (user_data / NAME / "presets").mkdir(parents=True, exist_ok=True)
    log(f"your presets, chat choices and character attachments live in {user_data / NAME} (never touched by this script)")
    if characters:
        for source in sorted((REPO / "characters").glob("*.y*ml")):
            destination = user_data / "characters" / source.name
            if destination.exists():
                log(f"character kept: {destination} exists")
            else:
                copy_atomic(source, destination)
                log(f"character added: {destination}")


def uninstall(root: Path, user_data: Path) -> None:
    target = root / "extensions" / NAME
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        log(f"nothing to remove: {target} does not exist")
        return
    manifest = read_manifest(target)
    if manifest is None:
        raise InstallError(f"{target} was not installed by this script (no {MANIFEST}); remove it by hand")
    for relative in manifest:
        (target / relative).unlink(missing_ok=True)
    (target / MANIFEST).unlink()
    remove_empty_dirs(target)
    if target.exists() and not any(target.iterdir()):
        target.rmdir()
    left = [p for p in target.rglob("*") if p.is_file()] if target.exists() else []
    log(f"removed the extension from {target}" + (f"; kept {len(left)} file(s) that were not ours" if left else ""))
    log(f"your data is kept: {user_data / NAME} (delete it by hand if you want it gone); "
        "remove 'steering' from --extensions / default_extensions in settings.yaml")


# -- requirements ------------------------------------------------------------------------------------------
def missing_modules(python: Path) -> list[str]:
    probe = "import importlib.util, json; print(json.dumps([m for m in %r if importlib.util.find_spec(m) is None]))" % list(NEEDS)
    try:
        result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    except OSError as error:
        raise InstallError(f"cannot run the webui's Python {python}: {error}") from None
    if result.returncode != 0:
        raise InstallError(f"the webui's Python {python} failed: {result.stderr.strip()[-300:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def requirements(root: Path, python_arg: str | None, install_them: bool) -> None:
    python = webui_python(root, python_arg)
    if python is None:
        message = "cannot find the webui's Python (installer_files/env or portable_env); pass --python PATH"
        if install_them:
            raise InstallError(message)
        log(f"requirements not checked: {message}")
        return
    missing = missing_modules(python)
    if not missing:
        log(f"requirements: all present in {python}")
        return
    torch_stack = [m for m in missing if NEEDS[m] is None]
    if torch_stack:
        log(f"the webui's Python lacks {', '.join(torch_stack)}: this looks like a portable (llama.cpp-only) build. "
            "Steering needs the full install with the Transformers loader; this script never installs torch.")
    installable = [NEEDS[m] for m in missing if NEEDS[m]]
    if not installable:
        return
    if not install_them:
        log(f"missing in the webui's Python: {', '.join(installable)}; run again with --requirements to install them")
        return
    log(f"installing into {python}: {', '.join(installable)}")
    result = subprocess.run([str(python), "-m", "pip", "install", *installable])
    if result.returncode != 0:
        raise InstallError(f"pip failed (exit {result.returncode}) installing {', '.join(installable)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the steering extension into a text-generation-webui folder.")
    parser.add_argument("webui", type=Path, help="the webui folder (the one with server.py; for a portable build its top folder)")
    parser.add_argument("--uninstall", action="store_true", help="remove what this script installed (your data stays)")
    parser.add_argument("--requirements", action="store_true", help="pip-install missing requirements into the webui's own Python")
    parser.add_argument("--python", help="the webui's Python, if it is not in installer_files/env or portable_env")
    parser.add_argument("--user-data-dir", type=Path, help="the webui's user_data folder if you start it with --user-data-dir")
    parser.add_argument("--no-characters", action="store_true", help="do not add the example characters")
    parser.add_argument("--force", action="store_true", help="install over an extensions/steering this script did not install")
    args = parser.parse_args(argv)
    try:
        root = webui_root(args.webui)
        user_data = user_data_dir(root, args.user_data_dir)
        if args.uninstall:
            uninstall(root, user_data)
            return 0
        install(root, user_data, characters=not args.no_characters, force=args.force)
        requirements(root, args.python, args.requirements)
    except InstallError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log("enable it: start the webui with --extensions steering, or add it to user_data/settings.yaml:\n"
        "  default_extensions:\n  - steering\n(or tick it in the Session tab and restart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
