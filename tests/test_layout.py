"""The shape of the code: no import cycles (not even of types), an engine that knows nothing of the webui or its files, a UI
that talks to the runtime only through its interface."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "extensions" / "steering"
ROOT = "extensions.steering"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([ROOT, *parts])


def imports_of(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports: at the top, inside a function, or for type checking only
    (two modules that need each other's types are as tangled as two that call each other)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in candidates if name.startswith(ROOT) and name in MODULES)
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _cycle_free(name: str, imported: str) -> bool:
    # a package importing its own submodules (re-exports) is not a cycle; a submodule importing them back is
    return name not in reachable(imported) or imported.startswith(name + ".")


def test_no_import_cycles():
    cycles = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets if not _cycle_free(a, b))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_engine_imports_its_own_modules_at_the_top():
    """An import inside a function (or under ``if TYPE_CHECKING``) is how a cycle is usually hidden."""
    late = []
    for name, path in MODULES.items():
        if name.startswith(f"{ROOT}.engine"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            late += [f"{name}:{node.lineno}" for top in tree.body if not isinstance(top, (ast.Import, ast.ImportFrom))
                     for node in ast.walk(top) if isinstance(node, ast.ImportFrom) and node.level]
    assert not late, "imports below the top of engine modules:\n" + "\n".join(late)


def test_the_engine_never_imports_the_webui_the_runtime_the_ui_or_reads_characters():
    for name, path in MODULES.items():
        if not name.startswith(f"{ROOT}.engine"):
            continue
        text = path.read_text(encoding="utf-8")
        assert "from modules" not in text and "import modules" not in text, name
        assert not [m for m in GRAPH[name] if not m.startswith(f"{ROOT}.engine")], f"{name} imports {GRAPH[name]}"
        for sign in ("read_character", "characters_dir", "character_file", "{{char}}", "char_persona"):
            assert sign not in text, f"{name} reads character files ({sign})"


def test_the_ui_talks_to_the_runtime_only_through_its_interface():
    allowed = {f"{ROOT}.runtime", f"{ROOT}.runtime.interface", f"{ROOT}.runtime.views"}
    for name in MODULES:
        if name.startswith(f"{ROOT}.ui"):
            used = {m for m in GRAPH[name] if m.startswith(f"{ROOT}.runtime")}
            assert used <= allowed, f"{name} reaches into {used - allowed}"
