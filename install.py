#!/usr/bin/env python3
"""Install the `steering` extension into a text-generation-webui folder (or remove it).

    python install.py /path/to/text-generation-webui              install or update
    python install.py /path/to/text-generation-webui --requirements   also pip-install the extension's
                                                                    requirements.txt into the webui's Python
    python install.py /path/to/text-generation-webui --uninstall

It copies extensions/steering (code and the shipped recipes, into extensions/steering/presets) and
the example characters into user_data/characters when they are not there yet. It never touches the
user's data (user_data/steering: presets, chat choices, character attachments) and never replaces a
file it did not install. Running it again updates what it installed and changes nothing else.

The new extension folder is built beside the old one (extensions/.steering-install) and swapped in
by renaming, so a failure (a full disk, a permission) leaves the webui as it was; a run that was
killed midway is recovered by the next run. The list of installed files (.installed-files.json,
with a checksum of each) is not trusted: only regular files inside the extension folder whose
content is still what was installed are ever removed.
Standard library only: any Python 3.9+ can run it.
"""
from __future__ import annotations

import argparse
import errno
import filecmp
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

NAME = "steering"
REPO = Path(__file__).resolve().parent
SOURCE = REPO / "extensions" / NAME
MANIFEST = ".installed-files.json"
# One line per installed file (about 150, 100 bytes each): a larger one is not ours, and is refused unparsed.
# This script is standard library only, so it bounds the read itself (the extension's engine/untrusted.py
# needs numpy and PyYAML): the size before parsing, and json's own RecursionError for deep nesting.
MAX_MANIFEST = 1 << 20
REQUIREMENTS = "requirements.txt"
# extensions/.steering-install holds the new copy ("new") and, during the swap, the old one ("previous").
# It is one level deeper than extensions/*/script.py, so the webui never lists it as an extension.
WORK = f".{NAME}-install"
WORK_MARKER = "INSTALLING.txt"
# Present in every webui root, git checkout or portable build (server.py's folder).
WEBUI_MARKERS = ("server.py", "download-model.py", "modules/extensions.py", "modules/shared.py",
                 "modules/text_generation.py", "extensions", "css/main.css", "js/main.js")
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
# import name -> what it is; the webui installs these itself (its requirements/full), we never do
WEBUI_STACK = ("torch", "transformers", "safetensors", "yaml", "numpy")
PROBE = """\
import importlib, json, sys
result = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        result[name] = None
    except Exception as error:
        result[name] = (type(error).__name__ + ": " + str(error)).splitlines()[0][:200]
print(json.dumps(result))
"""


class InstallError(Exception):
    """Printed as one line, exit code 2."""


def log(message: str) -> None:
    print(message, flush=True)


def reason(error: OSError) -> str:
    """One line for an OSError: what went wrong, and where."""
    text = os.strerror(error.errno) if error.errno else str(error)
    return f"{text} ({error.filename})" if error.filename else text


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


def entries(folder: Path) -> dict[str, Path]:
    """Everything below ``folder`` that is not a folder (symbolic links included, never followed), by relative path."""
    found = {}
    for parent, dirs, names in os.walk(folder):  # a linked folder is listed in dirs but not entered
        base = Path(parent)
        for name in list(dirs):
            if name in SKIP_PARTS or (base / name).is_symlink():
                dirs.remove(name)
                if name not in SKIP_PARTS:
                    names.append(name)
        for name in names:
            if not name.endswith(".pyc"):
                found[(base / name).relative_to(folder).as_posix()] = base / name
    return found


def inside(relative: str) -> bool:
    """Whether a manifest entry names a path inside the extension folder at all."""
    path = PurePosixPath(relative)
    return bool(relative) and "\\" not in relative and ":" not in relative and not path.is_absolute() \
        and ".." not in path.parts and path.as_posix() == relative


# -- files -------------------------------------------------------------------------------------------------
def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def copy_file(source: Path, target: Path) -> None:
    """Copy contents into a new file, like a plain `cp`: mode 0666 (0777 for an executable) less the umask."""
    mode = 0o777 if source.stat().st_mode & 0o111 else 0o666
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    with open(fd, "wb") as out, open(source, "rb") as handle:
        shutil.copyfileobj(handle, out)


def copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.urandom(4).hex()}.tmp"
    try:
        copy_file(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_manifest(target: Path) -> dict[str, str | None] | None:
    """Installed relative path -> sha256 of what was installed (None: not recorded, older install.py)."""
    path = target / MANIFEST
    if not path.exists() and not path.is_symlink():
        return None
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        with open(path, "rb") as handle:
            size = max(os.fstat(handle.fileno()).st_size, len(text := handle.read(MAX_MANIFEST + 1)))
        if size > MAX_MANIFEST:
            raise ValueError(f"{size:,} bytes, over the {MAX_MANIFEST:,} a list of installed files may hold")
        data = json.loads(text.decode("utf-8"))
        files = data.get("files") if isinstance(data, dict) else None
        if isinstance(files, list) and all(isinstance(f, str) for f in files):
            return dict.fromkeys(files)
        if isinstance(files, dict) and all(isinstance(v, str) for v in files.values()):
            return dict(files)
        raise ValueError("expected {\"files\": {path: sha256}}")
    except (OSError, ValueError, RecursionError) as error:  # ValueError: also JSON and UTF-8 errors
        detail = reason(error) if isinstance(error, OSError) else "nested too deeply" if isinstance(error, RecursionError) \
            else str(error).splitlines()[0]
        raise InstallError(f"{path} is not a valid list of installed files ({detail}); nothing was changed. "
                           f"Move {target} away and install again") from None


def why_not_removable(path: Path, recorded: str | None) -> str | None:
    """None if ``path`` is a file we installed and may remove; else why it must stay."""
    if path.is_symlink() or not path.is_file():
        return "not a regular file"
    if recorded is not None and digest(path) != recorded:
        return "changed since it was installed"
    return None


def report_outside(manifest: dict[str, str | None], target: Path) -> None:
    for relative in manifest:
        if not inside(relative):
            log(f"ignored {relative!r} in {MANIFEST}: not a path inside {target}")


def remove_empty_dirs(top: Path) -> None:
    for parent, _, _ in os.walk(top, topdown=False):  # never enters a linked folder
        folder = Path(parent)
        if folder.name == "__pycache__":
            shutil.rmtree(folder)
        elif folder != top and not any(folder.iterdir()):
            folder.rmdir()


# -- an interrupted run ------------------------------------------------------------------------------------
def recover(target: Path) -> None:
    """Finish what a killed run left: put the previous extension folder back if it is away, drop the rest."""
    work = target.parent / WORK
    if not work.exists() and not work.is_symlink():
        return
    ours = work.is_dir() and not work.is_symlink() and {p.name for p in work.iterdir()} <= {WORK_MARKER, "new", "previous"}
    if not ours:
        raise InstallError(f"{work} is in the way and was not made by this script; move it away")
    previous = work / "previous"
    if previous.is_dir() and not target.exists() and not target.is_symlink():
        os.rename(previous, target)
        log(f"restored {target} as it was before an interrupted run")
    shutil.rmtree(work)
    log(f"removed {work}, left over from an interrupted run")


def partial_copy(present: dict[str, Path], files: dict[str, Path]) -> bool:
    """Whether a folder without a manifest holds only shipped files, as shipped (an older install.py, interrupted)."""
    return bool(present) and all(
        relative in files and path.is_file() and not path.is_symlink() and filecmp.cmp(files[relative], path, shallow=False)
        for relative, path in present.items()
    )


# -- install -----------------------------------------------------------------------------------------------
def install(root: Path, user_data: Path, characters: bool, force: bool) -> None:
    target = root / "extensions" / NAME
    if target.resolve() == SOURCE.resolve():
        raise InstallError(f"{target} is this source folder itself; run install.py from the steering repository")
    recover(target)
    if target.is_symlink():
        raise InstallError(f"{target} is a symbolic link (to {os.readlink(target)}); remove the link and install again")
    if target.exists() and not target.is_dir():
        raise InstallError(f"{target} is not a folder; move it away and install again")
    present = entries(target) if target.exists() else {}
    previous = read_manifest(target) if target.exists() else None
    present.pop(MANIFEST, None)
    files = shipped_files()
    if previous is None and present:
        if partial_copy(present, files):
            log(f"completing an install into {target} that was interrupted")
            previous = dict.fromkeys(present)
        elif not force:
            raise InstallError(f"{target} exists and was not installed by this script; move it away or pass --force")
    previous = previous or {}
    report_outside(previous, target)

    plan: list[tuple[str, Path, bool]] = []  # (relative, source, keep its mode: a file that stays as it is)
    manifest: dict[str, str] = {}
    written = unchanged = 0
    for relative, source in files.items():
        existing = present.get(relative)
        if existing is not None and relative not in previous and relative.startswith("presets/") and not force:
            log(f"kept {existing} (not installed by this script)")
            plan.append((relative, existing, True))
            continue
        plan.append((relative, source, False))
        manifest[relative] = digest(source)
        if existing is not None and existing.is_file() and not existing.is_symlink() and filecmp.cmp(source, existing, shallow=False):
            unchanged += 1
        else:
            written += 1
    removed = []
    for relative, path in present.items():
        if relative in files:
            continue
        if relative in previous:
            why = why_not_removable(path, previous[relative])
            if why is None:
                removed.append(relative)
                continue
            log(f"kept {path}: it is listed as installed, but {why}")
        plan.append((relative, path, True))

    if target.exists() and not written and not removed and previous == manifest:
        log(f"extension: {target} (0 file(s) written, 0 removed, {unchanged} unchanged)")
    else:
        swap_in(target, plan, manifest)
        log(f"extension: {target} ({written} file(s) written, {len(removed)} removed, {unchanged} unchanged)")
    log(f"shipped recipes: {sum(1 for r in manifest if r.startswith('presets/'))} in {target / 'presets'}")
    (user_data / NAME / "presets").mkdir(parents=True, exist_ok=True)
    log(f"your presets, chat choices and character attachments live in {user_data / NAME} (never touched by this script)")
    if characters:
        for source in sorted((REPO / "characters").glob("*.y*ml")):
            destination = user_data / "characters" / source.name
            if destination.is_symlink() and not destination.exists():  # the user's link, whatever it pointed at
                log(f"character kept: {destination} is a link to {os.readlink(destination)}, which is missing; left as it is")
            elif destination.exists():
                log(f"character kept: {destination} exists")
            else:
                copy_atomic(source, destination)
                log(f"character added: {destination}")


def swap_in(target: Path, plan: list[tuple[str, Path, bool]], manifest: dict[str, str]) -> None:
    """Build the new folder beside ``target`` and rename it into place; on any failure the old one stays."""
    work = target.parent / WORK
    new, previous = work / "new", work / "previous"
    try:
        work.mkdir()
        (work / WORK_MARKER).write_text(f"install.py of {NAME} is building {target} here; "
                                        "it removes this folder when done (or on its next run)\n", encoding="utf-8")
        new.mkdir()
        for relative, source, keep_mode in plan:
            destination = new / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                os.symlink(os.readlink(source), destination)
            elif source.is_file():
                copy_file(source, destination)
                if keep_mode:
                    shutil.copymode(source, destination)
            else:
                log(f"left out {source}: not a file")
        text = json.dumps({"name": NAME, "version": 2, "files": dict(sorted(manifest.items()))}, indent=1)
        (new / MANIFEST).write_text(text + "\n", encoding="utf-8")
        if target.exists():
            os.rename(target, previous)
            try:
                os.rename(new, target)
            except BaseException:
                os.rename(previous, target)
                raise
        else:
            os.rename(new, target)
    except BaseException as error:
        restored = target.exists() or not previous.exists()
        if restored:  # the previous state is in place: drop the half-built copy
            shutil.rmtree(work, ignore_errors=True)
        if isinstance(error, OSError):
            owner = "; run it as the user who owns the webui folder" + (", with the webui closed" if os.name == "nt" else "")
            hint = {errno.ENOSPC: "; free some space and run again", errno.EACCES: owner, errno.EPERM: owner}.get(error.errno, "")
            state = "nothing was changed" if restored else f"the previous folder is in {previous}: run install.py again to put it back"
            raise InstallError(f"could not install into {target}: {reason(error)}; {state}{hint}") from None
        raise
    try:
        shutil.rmtree(work)
    except OSError as error:
        log(f"warning: could not remove {work} ({reason(error)}); the next run removes it")


# -- uninstall ---------------------------------------------------------------------------------------------
def uninstall(root: Path, user_data: Path) -> None:
    target = root / "extensions" / NAME
    recover(target)
    if target.is_symlink():
        raise InstallError(f"{target} is a symbolic link (to {os.readlink(target)}); remove the link by hand")
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        log(f"nothing to remove: {target} does not exist")
        return
    manifest = read_manifest(target)
    if manifest is None:
        raise InstallError(f"{target} was not installed by this script (no {MANIFEST}); remove it by hand")
    report_outside(manifest, target)
    present = entries(target)
    removed = 0
    for relative, recorded in manifest.items():
        path = present.get(relative)
        if path is None or relative == MANIFEST:
            continue
        why = why_not_removable(path, recorded)
        if why:
            log(f"kept {path}: it is listed as installed, but {why}")
            continue
        path.unlink()
        removed += 1
    (target / MANIFEST).unlink()
    remove_empty_dirs(target)
    if not any(target.iterdir()):
        target.rmdir()
    left = [] if not target.exists() else list(entries(target))
    log(f"removed the extension from {target} ({removed} file(s))" + (f"; kept {len(left)} file(s) in it (not installed by this script, or changed since)" if left else ""))
    log(f"your data is kept: {user_data / NAME} (delete it by hand if you want it gone); "
        "remove 'steering' from --extensions / default_extensions in settings.yaml")


# -- requirements ------------------------------------------------------------------------------------------
def read_requirements(path: Path) -> dict[str, str]:
    """Import name -> requirement line, from the extension's requirements.txt (the import name is the project name)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split(" #", 1)[0].strip()
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match and not line.startswith("#"):
            found[match.group(0).replace("-", "_")] = line
    return found


def probe(python: Path, modules: list[str]) -> dict[str, str | None]:
    """Import each module in ``python``: None where it imports, else the error."""
    try:
        result = subprocess.run([str(python), "-c", PROBE, *modules], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InstallError(f"cannot run the webui's Python {python}: {error}") from None
    try:
        found = json.loads(result.stdout.strip().splitlines()[-1])
        return {m: found[m] if m in found else "not reported" for m in modules}
    except (ValueError, IndexError, TypeError):
        raise InstallError(f"the webui's Python {python} failed (exit {result.returncode}): "
                           f"{(result.stderr.strip().splitlines() or ['no output'])[-1][-300:]}") from None


def requirements(root: Path, python_arg: str | None, install_them: bool) -> None:
    target = root / "extensions" / NAME
    needed = read_requirements(target / REQUIREMENTS)
    command = f"pip install -r {target / REQUIREMENTS}"
    python = webui_python(root, python_arg)
    if python is None:
        message = "cannot find the webui's Python (installer_files/env or portable_env); pass --python PATH"
        if install_them:
            raise InstallError(message)
        log(f"requirements not checked: {message}. The extension needs {', '.join(needed.values())}: "
            f"in the webui's environment (cmd_linux.sh, cmd_windows.bat, cmd_macos.sh) run {command}")
        return
    if not python.is_file():
        raise InstallError(f"the webui's Python {python} does not exist")
    status = probe(python, [*WEBUI_STACK, *needed])
    stack = [m for m in WEBUI_STACK if status[m]]
    if "torch" in stack or "transformers" in stack:
        log(f"the webui's Python lacks {', '.join(stack)}: this looks like a portable (llama.cpp-only) build. "
            "Steering needs the full install with the Transformers loader; this script never installs torch, "
            "and installs nothing into this Python.")
        return
    if stack:
        log(f"the webui's Python lacks {', '.join(stack)}, which the webui installs itself: run the webui's update script")
    missing = [m for m in needed if status[m]]
    present = [m for m in needed if not status[m]]
    if not missing:
        log(f"requirements: all present in {python} ({', '.join(present)})")
        return
    details = ", ".join(m if status[m].startswith("ModuleNotFoundError") else f"{m} ({status[m]})" for m in missing)
    if not install_them:
        log(f"missing in the webui's Python: {details}" + (f" (present: {', '.join(present)})" if present else ""))
        log(f"to install: python install.py {root} --requirements (or, in the webui's environment: {command})")
        return
    log(f"installing into {python}: {', '.join(needed[m] for m in missing)} (pip install -r {target / REQUIREMENTS})")
    result = subprocess.run([str(python), "-m", "pip", "install", "-r", str(target / REQUIREMENTS)])
    if result.returncode != 0:
        raise InstallError(f"pip failed (exit {result.returncode}) installing {target / REQUIREMENTS} into {python}")
    status = probe(python, list(needed))
    still = [m for m in needed if status[m]]
    if still:
        raise InstallError("pip finished, but the webui's Python still cannot import "
                           + ", ".join(f"{m} ({status[m]})" for m in still))
    log(f"requirements: all present in {python} ({', '.join(needed)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the steering extension into a text-generation-webui folder.")
    parser.add_argument("webui", type=Path, help="the webui folder (the one with server.py; for a portable build its top folder)")
    parser.add_argument("--uninstall", action="store_true", help="remove what this script installed (your data stays)")
    parser.add_argument("--requirements", action="store_true",
                        help="pip-install the extension's requirements.txt into the webui's own Python")
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
    except OSError as error:
        print(f"error: {reason(error)}", file=sys.stderr)
        return 2
    log("enable it: start the webui with --extensions steering, or add it to user_data/settings.yaml:\n"
        "  default_extensions:\n  - steering\n(or tick it in the Session tab and restart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
