"""``lbtui fleet``: start the demo backends as real processes and keep them up until Ctrl-C.

Prints one table (name, url, pid, character) once every backend is ready, then a line for
every backend process that ends on its own; Ctrl-C or SIGTERM stops the whole fleet (SIGTERM,
then SIGKILL after a deadline) and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbtui.fleet.spec import BackendSpec
    from lbtui.fleet.supervisor import Member

DEFAULT_CONFIG = "demo/fleet.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help=f"fleet file (default: {DEFAULT_CONFIG}, in the current directory or the source tree)",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        metavar="N",
        help="start N backends named api-1..api-N, repeating the file's characters in turn",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=None,
        metavar="P",
        help="listen on ports P..P+N-1 (default: the file's ports; 0 there = ephemeral)",
    )


def default_config() -> Path:
    """``demo/fleet.toml`` in the current directory, else the one beside the package source."""
    here = Path(DEFAULT_CONFIG)
    if here.exists():
        return here
    return Path(__file__).resolve().parents[2] / DEFAULT_CONFIG


def run(args: argparse.Namespace) -> int:
    import asyncio

    from lbtui.errors import UsageError
    from lbtui.fleet.spec import expand, load_fleet

    path = Path(args.config) if args.config else default_config()
    fleet_spec = load_fleet(path)
    try:
        specs = expand(fleet_spec.backends, args.count, args.base_port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return asyncio.run(_serve(specs, fleet_spec.host))


async def _serve(specs: list[BackendSpec], host: str) -> int:
    import asyncio
    import signal

    from lbtui.fleet.supervisor import Fleet

    def on_exit(name: str, code: int, expected: bool) -> None:
        if not expected:
            print(f"{name}: process ended on its own (exit code {code})", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Fleet(specs, host=host, on_exit=on_exit) as fleet:
            print(render_table(fleet.backends), flush=True)
            print(
                f"fleet of {len(specs)} up; Ctrl-C or SIGTERM stops it",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
            print("stopping the fleet…", file=sys.stderr, flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def render_table(members: list[Member]) -> str:
    """Plain aligned columns: NAME URL PID CHARACTER (character and its figures)."""
    rows = [("NAME", "URL", "PID", "CHARACTER")]
    for m in members:
        character = f"{m.spec.character or '-'} ({m.spec.describe()})"
        rows.append((m.name, m.url, str(m.pid or "-"), character))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    )
