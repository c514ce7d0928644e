"""``python -m bench``: lbtui, nginx, HAProxy and direct, side by side, in one run.

Run from the repository root with the project's venv::

    .venv/bin/python -m bench              # every scenario (≈ 7 min), writes bench/RESULTS.md
    .venv/bin/python -m bench --quick      # 1-second runs, 2 backends: a smoke test (≈ 1 min)
    .venv/bin/python -m bench --only throughput --only latency
    .venv/bin/python -m bench --only throughput --workers 4   # multi-process rows: 4 each

It finds nginx, HAProxy and wrk on the PATH (and says how to install what is missing: the rows
of a missing proxy are marked skipped, and without wrk a small Python load generator stands in),
fronts the same local backends with each system, prints one table per scenario with every
system's figure and lbtui's verdict against its target, and writes the tables with the machine,
the tool versions and the date to ``bench/RESULTS.md`` plus the charts to
``bench/results.svg``. Every process it starts listens on 127.0.0.1 and is stopped by its PID.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import BENCH, BenchError, have, log
from report import markdown, svg
from suite import SCENARIOS, Settings, Table, environment

import bench  # noqa: F401  (puts bench/ on the import path for the modules below)

INSTALL = (
    "apt-get install -y nginx haproxy wrk   # Debian/Ubuntu; macOS: brew install nginx haproxy wrk"
)


def workers_arg(text: str) -> int:
    n = int(text)
    if n < 2:
        raise argparse.ArgumentTypeError("at least 2 (the 1-process rows are always there)")
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1-second runs, 2 backends (smoke test)")
    p.add_argument(
        "--only", action="append", choices=list(SCENARIOS), help="run just these scenarios"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the Markdown report (default bench/RESULTS.md; with --quick, none)",
    )
    p.add_argument("--svg", type=Path, default=None, help="the charts (default next to --out)")
    p.add_argument("--idle", type=int, default=None, help="idle connections (10,000; quick 1,000)")
    p.add_argument(
        "--workers",
        type=workers_arg,
        default=2,
        help="processes (HAProxy: threads) of each proxy in table 1's multi-process rows (2)",
    )
    p.add_argument(
        "--without",
        action="append",
        default=[],
        choices=("nginx", "haproxy", "wrk"),
        help="run as if this tool were not installed (what CI sees)",
    )
    args = p.parse_args(argv)

    missing = [t for t in ("nginx", "haproxy", "wrk") if not have(t)]
    if missing:
        log(f"bench: {', '.join(missing)} not found: their rows are skipped. To install: {INSTALL}")
    settings = Settings.make(args.quick, args.idle, args.without, args.workers)
    out = args.out if args.out is not None else (None if args.quick else BENCH / "RESULTS.md")
    svg_path = args.svg if args.svg is not None else (out.with_name("results.svg") if out else None)
    env = environment(args.without)
    command = "python -m bench" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    tables: list[Table] = []
    failures = 0
    t0 = time.monotonic()
    for key in args.only or list(SCENARIOS):
        try:
            got = SCENARIOS[key](settings)
        except BenchError as exc:
            log(f"bench: scenario {key} failed: {exc}")
            failures += 1
            continue
        for t in got:
            print("\n" + t.markdown(), flush=True)
        tables += got
    log(f"bench: done in {time.monotonic() - t0:.0f} s")
    for path in (out, svg_path):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    if svg_path is not None:
        charts = [t.chart for t in tables if t.chart is not None]
        caption = f"python -m bench, {env['date']}, {env['machine']}"
        svg_path.write_text(svg(charts, caption))
    if out is not None:
        rel = svg_path.name if svg_path is not None and svg_path.parent == out.parent else None
        out.write_text(markdown(env, command.strip(), tables, rel) + "\n")
        log(f"bench: wrote {out}" + (f" and {svg_path}" if svg_path else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
