"""A wheel carries every file the package opens at run time, not only its modules.

An editable install reads the source tree, so a missing ``package-data`` entry only shows in a
real (non-editable) install: the console then fails to start for want of its stylesheet. This
checks the packaging table against the tree instead of building a wheel.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lbtui"
NOT_SHIPPED = {".py", ".pyc", ".so", ".c", ".h"}


def test_every_data_file_of_the_package_is_in_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["lbtui"]
    data = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in NOT_SHIPPED and "__pycache__" not in p.parts
    ]
    assert data, "the console's stylesheet at least"
    missing = [f for f in data if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert missing == [], f"not in [tool.setuptools.package-data]: {missing}"


DIST_OF = {
    "prometheus_client": "prometheus-client",
    # installed with aiohttp, which is in the list
    "multidict": "aiohttp",
    "yarl": "aiohttp",
}
"""Import names whose distribution is spelt otherwise, or comes with another one."""


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (``TYPE_CHECKING`` blocks
    included: mypyc type-checks those too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_the_isolated_build_has_every_library_the_compiled_modules_reach() -> None:
    """mypyc type-checks the compiled modules and everything they import, in pip's isolated
    build environment, which has only ``[build-system] requires``: a library reached there but
    missing from that list fails a fresh install (``redis`` did, through ``balancer.state``)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build = {
        re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower()
        for r in config["build-system"]["requires"]
    }
    sys.path.insert(0, str(ROOT))
    try:
        from lbtui.build import COMPILED_MODULES
    finally:
        sys.path.pop(0)
    seen: set[str] = set()
    todo = list(COMPILED_MODULES)
    third_party: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        for imported in _imports(path):
            top = imported.split(".")[0]
            if top == "lbtui":
                todo.append(imported)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.setdefault(top, name)
    missing = {
        top: via
        for top, via in third_party.items()
        if DIST_OF.get(top, top).lower().replace("_", "-")
        not in {b.replace("_", "-") for b in build}
    }
    assert missing == {}, f"reached by mypyc, not in [build-system] requires: {missing}"
