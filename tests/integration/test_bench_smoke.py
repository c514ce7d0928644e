"""``python -m bench --quick`` end to end: every scenario runs and produces its whole table.

Run as CI sees the machine (``--without nginx --without haproxy --without wrk``: CI installs
none of them), so that the test does not depend on what is installed: the nginx and HAProxy
rows must say they were skipped, the Python load generator stands in for wrk, and every lbtui
row must carry figures, the multi-process ones (``[listener] workers = 2``) included. Nothing
here is timed: the figures of a smoke run mean nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TITLES = [
    "### 1. Small GETs, maximum throughput",
    "### 2. CPU per proxied request",
    "### 3. Added latency at a fixed",
    "### 4. A backend SIGKILLed under load",
    "### 5. One backend 200 ms slow",
    "### 6. One backend answering 500 to everything",
    "### 7. 200 idle keep-alive client connections",
    "### 8. One pick among 1,000 backends",
]
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?( %)?$")


def tables(text: str) -> dict[str, list[list[str]]]:
    """Each ``### title``'s table rows (header row first), cells stripped."""
    out: dict[str, list[list[str]]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("### "):
            title = line
            out[title] = []
        elif title and line.startswith("|") and not set(line) <= set("|-: "):
            out[title].append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


@pytest.mark.timeout(300)
def test_quick_run_produces_every_table(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    argv = [sys.executable, "-m", "bench", "--quick", "--idle", "200", "--out", str(out)]
    argv += ["--without", "nginx", "--without", "haproxy", "--without", "wrk"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    for key in ("python", "machine", "date", "aiohttp", "nginx", "haproxy", "wrk"):
        assert f"| {key} |" in text
    assert "| failed:" not in text, text
    got = tables(text)
    for title in TITLES:
        matching = [t for t in got if t.startswith(title)]
        assert matching, f"no table {title!r}"
        rows = got[matching[0]][1:]
        assert rows, f"{title}: no rows"
        for row in rows:
            system = row[0]
            if system.startswith(("nginx", "haproxy")):
                assert row[1].startswith("skipped:"), row
            else:
                assert NUMBER.match(row[1]), row
    lbtui_rows = [r[0] for t in got.values() for r in t[1:] if r[0].startswith("lbtui")]
    assert len(lbtui_rows) >= 8
    # Table 1 and 2 run lbtui with one process and with `[listener] workers = 2` (the default
    # of --workers); the loop above has checked that every one of those rows has figures.
    for title in TITLES[:2]:
        systems = [r[0] for t, rows in got.items() if t.startswith(title) for r in rows[1:]]
        assert "lbtui, 1 process" in systems, systems
        assert "lbtui, 2 workers" in systems, systems
    assert (tmp_path / "results.svg").read_text().startswith("<svg")
    assert "lbtui" in proc.stdout  # the tables are printed too
