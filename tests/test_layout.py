"""The shape of the code: no import cycles, an engine that knows nothing of the webui or its files, a UI
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


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, at the top or inside a function (not for type checking)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
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


def webui_imports(path: Path) -> list[str]:
    """The webui's modules (``modules``, ``modules.*``) that ``path`` imports, by statement or by name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") and node.args:
            names = [ast.unparse(node.args[0]).strip("'\"")]
        else:
            continue
        found += [name for name in names if name == "modules" or name.startswith("modules.")]
    return found


def test_only_the_adapter_imports_the_webui():
    adapter = {f"{ROOT}.script", f"{ROOT}.api"}
    assert webui_imports(MODULES[f"{ROOT}.script"])  # the check sees the adapter's own imports
    for name, path in MODULES.items():
        if name not in adapter:
            assert not webui_imports(path), f"{name} imports the webui ({webui_imports(path)}): pass what it needs from script.py"


RUNTIME_NAMES = ("runtime", "runtime()", "RUNTIME", "script.RUNTIME", "self.runtime", "tab.runtime", "rt")


def test_the_adapter_the_ui_and_the_tests_use_the_runtime_s_public_methods_only():
    users = [path for name, path in MODULES.items()
             if name in (f"{ROOT}.script", f"{ROOT}.api") or name.startswith(f"{ROOT}.ui")]
    for path in [*users, *(PACKAGE.parents[1] / "tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                assert ast.unparse(node.value) not in RUNTIME_NAMES, f"{path.name} reaches into the runtime's {node.attr}"
