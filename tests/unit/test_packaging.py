"""A wheel carries every file the package opens at run time, not only its modules.

An editable install reads the source tree, so a missing ``package-data`` entry only shows in a
real (non-editable) install: the console then fails to start for want of its stylesheet. This
checks the packaging table against the tree instead of building a wheel.
"""

from __future__ import annotations

import fnmatch
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
