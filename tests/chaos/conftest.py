"""Chaos tests: scenario files and checks as pure code, and real runs — real backend processes,
the real balancer, open-loop load on 127.0.0.1 — kept short with ``--duration-scale``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lbtui

ROOT = Path(lbtui.__file__).resolve().parents[1]
"""The source tree the tests run against (demo/, fixtures/)."""
SCENARIOS = ROOT / "demo" / "scenarios"
FIXTURES = ROOT / "fixtures" / "scenarios"
LBTUI = [sys.executable, "-m", "lbtui"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``lbtui ARGS`` as a user runs it, in the source tree."""
    return subprocess.run(
        [*LBTUI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def assert_self_contained(page: str) -> None:
    """One HTML file that needs nothing else: no script, no stylesheet or image to fetch, and
    the timeline drawn inline as SVG."""
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert "</svg>" in page
    lowered = page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", lowered)
    for needle in ("src=", "href=", "url(", "@import", "<script", "<link", "<iframe"):
        assert needle not in lowered, needle
