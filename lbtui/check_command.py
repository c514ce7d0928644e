"""``lbtui check CONFIG``: validate a config file and exit, like ``nginx -t``.

Exit 0 with one ``ok`` line, or 2 with every problem found (each naming the key path and what
was expected; an unknown key names the nearest known one), so that a deploy script can check
a file before ``lbtui serve`` reads it. Files the config names (fallback bodies) are read too,
from the config file's folder.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    from lbtui import config as config_mod

    cfg = config_mod.load(args.config)
    routes = f", {_count(len(cfg.groups), 'group')}" if cfg.groups else ""
    routes += f", {_count(len(cfg.routes), 'route')}" if cfg.routes else ""
    backends = (
        _count(len(cfg.backends), "backend")
        if cfg.backends
        else "no backends (serve needs --backend)"
    )
    print(f"lbtui: {args.config}: ok — {backends}{routes}, {cfg.balancer.algorithm}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
