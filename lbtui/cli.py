"""The ``lbtui`` command: one entry point, one sub-command per job.

Each sub-command lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int`` and keeps heavy imports inside ``run`` so that ``lbtui --help`` stays quick.
Errors of lbtui's own (``LbtuiError``) are caught here, once, and printed as one clear line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lbtui import __version__, build
from lbtui.errors import LbtuiError

# name → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("lbtui.demo", "start a local fleet, the balancer, load and the console"),
    "attach": ("lbtui.tui.command", "open the console on a running balancer"),
    "serve": ("lbtui.balancer.command", "run the balancer headless until Ctrl-C or SIGTERM"),
    "reload": ("lbtui.reload_command", "make a running balancer read its config file again"),
    "check": ("lbtui.check_command", "validate a config file (exit 0, or 2 with every problem)"),
    "fleet": ("lbtui.fleet.command", "start demo backends as real processes"),
    "load": ("lbtui.loadgen_command", "drive open-loop load at a fixed rate"),
    "chaos": ("lbtui.chaos.command", "run chaos experiments with steady-state checks"),
}

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbtui",
        description="Watch an HTTP load balancer work, and break its backends on purpose.",
    )
    parser.add_argument(
        "--version", action="version", version=f"lbtui {__version__} ({build.describe()})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args))
    except LbtuiError as exc:
        print(f"lbtui: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
