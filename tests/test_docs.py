"""The Python examples of the documentation name what exists: every ``from extensions.steering... import``
of a ```python block imports, and every ``module.name`` used of an imported module is there."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *(ROOT / "extensions" / "steering").glob("*.md")])
BLOCK = re.compile(r"^[ \t]*```python\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return [block for block in BLOCK.findall(page.read_text(encoding="utf-8"))]


def our_imports(block: str) -> list[ast.ImportFrom | ast.Import]:
    """The imports of our package in ``block``, read line by line (an example may hold lines that are not Python,
    such as a signature written out)."""
    found: list[ast.ImportFrom | ast.Import] = []
    lines = iter(line.strip() for line in block.splitlines())
    for line in lines:
        if not line.startswith(("from extensions", "import extensions")):
            continue
        while line.count("(") > line.count(")"):  # an import in parentheses over several lines
            line += " " + next(lines)
        node = ast.parse(line.split("#")[0]).body[0]
        assert isinstance(node, (ast.ImportFrom, ast.Import))
        found.append(node)
    return found


EXAMPLES = [(page, block) for page in PAGES for block in python_blocks(page) if our_imports(block)]


def test_the_pages_hold_examples_to_check():
    assert {page.name for page, _ in EXAMPLES} >= {"reference.md", "languages.md", "monitor.md"}


@pytest.mark.parametrize("page, block", EXAMPLES, ids=[f"{page.relative_to(ROOT)}:{n}" for n, (page, _) in enumerate(EXAMPLES)])
def test_an_examples_imports_and_module_names_exist(page, block):
    modules: dict[str, ModuleType] = {}
    for node in our_imports(block):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
            continue
        module = importlib.import_module(node.module or "")
        for alias in node.names:
            assert hasattr(module, alias.name), f"{page.name}: {node.module} has no {alias.name}"
            value = getattr(module, alias.name)
            if isinstance(value, ModuleType):
                modules[alias.asname or alias.name] = value
    for name, module in modules.items():
        for used in re.findall(rf"(?<![\w.]){re.escape(name)}\.(\w+)", block):
            assert hasattr(module, used), f"{page.name}: {name}.{used} does not exist"
