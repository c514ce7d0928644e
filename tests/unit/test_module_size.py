"""No module in ``lbtui/`` over 700 lines, no class over 400 (issue #18): a module that size
holds more than one concept, and a class that size is the god object STYLE.md warns about.

Walked, not listed, so a module is covered the day it is added. What is still too big is named
below as debt, each with the reason it is not split yet; an entry that is no longer over the
limit fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lbtui

MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 400

ROOT = Path(lbtui.__file__).parent

DEBT: dict[str, str] = {
    # None at present (the hot path's ClientConnection and _Conn were split, #18). An entry is
    # "module path": "what is over, and why it is not split yet".
}


def _oversize(path: Path) -> list[str]:
    """What in ``path`` is over a limit, one line each; empty when it is within them."""
    text = path.read_text(encoding="utf-8")
    found = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"module: {lines} lines > {MAX_MODULE_LINES}")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            span = (node.end_lineno or node.lineno) - node.lineno + 1
            if span > MAX_CLASS_LINES:
                found.append(f"class {node.name}: {span} lines > {MAX_CLASS_LINES}")
    return found


MODULES = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_and_classes_within_limits(module: str) -> None:
    found = _oversize(ROOT / module)
    if module in DEBT:
        assert found, f"{module} is within the limits now: remove it from DEBT"
    else:
        assert not found, f"lbtui/{module}: " + "; ".join(found)


def test_debt_names_real_modules() -> None:
    assert set(DEBT) <= set(MODULES)


def test_the_measure_counts_classes_and_modules(tmp_path: Path) -> None:
    big = tmp_path / "big.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_CLASS_LINES))
    big.write_text(f"class Big:\n{body}\n" + "y = 0\n" * MAX_MODULE_LINES, encoding="utf-8")
    assert _oversize(big) == [
        f"module: {MAX_CLASS_LINES + 1 + MAX_MODULE_LINES} lines > {MAX_MODULE_LINES}",
        f"class Big: {MAX_CLASS_LINES + 1} lines > {MAX_CLASS_LINES}",
    ]
    small = tmp_path / "small.py"
    small.write_text("class Small:\n    pass\n", encoding="utf-8")
    assert _oversize(small) == []
