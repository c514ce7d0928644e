"""Refuse to test a stale compiled build: after a source edit, the old compiled code would run."""

from __future__ import annotations

import pytest

from lbtui import build


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = build.stale()
    if stale:
        raise pytest.UsageError(
            "compiled modules are older than their source: "
            + ", ".join(stale)
            + ". Rebuild them (`.venv/bin/pip install -e '.[dev]'`), or delete them to test "
            "the pure-Python build (`find lbtui -name '*.so' -delete`)."
        )
