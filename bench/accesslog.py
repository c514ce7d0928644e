"""What the access log costs a request: CPU per proxied request with the log off and on.

Run: ``.venv/bin/python bench/accesslog.py [--requests 64000] [--rounds 3]``. The request path
of ``inproc.py`` (the fast listener, the whole pipeline and the lean upstream, for real, over
in-memory transports: no kernel), in one process per run, alternating: the log off, the JSON
log on, the combined log on (both to a file in a temp dir). The figure is process CPU time per
request — the writer thread's formatting and writing included, since the run ends when every
entry is written — best of 5 inside each run, then the median over the rounds. The budget is
3 µs a request for the JSON log.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import table

import bench  # noqa: F401  (bench/ on the import path)

BUDGET_US = 3.0


def one(requests: int, access_log: dict[str, object] | None) -> float:
    bench_dir = Path(__file__).resolve().parent
    code = (
        f"import sys, json; sys.path.insert(0, {str(bench_dir)!r}); import inproc; "
        f"print(json.dumps(inproc.measure({requests}, {access_log!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return float(json.loads(out))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=64_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    from lbtui import build

    with tempfile.TemporaryDirectory(prefix="lbtui-bench-") as tmp:
        modes: dict[str, dict[str, object] | None] = {
            "off": None,
            "json": {"path": f"{tmp}/json.log", "format": "json"},
            "combined": {"path": f"{tmp}/combined.log", "format": "combined"},
        }
        got: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode, cfg in modes.items():
                got[mode].append(one(args.requests, cfg))
    off = statistics.median(got["off"])
    rows = []
    for mode, xs in got.items():
        med = statistics.median(xs)
        cost = med - off
        verdict = "" if mode == "off" else ("ok" if cost <= BUDGET_US else "OVER")
        rows.append(
            [
                f"access log {mode}",
                f"{min(xs):.2f}",
                f"{med:.2f}",
                "—" if mode == "off" else f"{cost:+.2f}",
                verdict,
            ]
        )
    print(f"build: {build.describe()}; {args.requests} requests a run, {args.rounds} rounds")
    print(table(["run", "min µs/req", "median µs/req", "log cost µs", f"≤ {BUDGET_US:g} µs"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
