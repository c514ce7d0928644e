"""``lbtui serve``: the balancer, headless, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import sys

from lbtui.config import ALGORITHM_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="client listener (default 127.0.0.1:8080)"
    )
    parser.add_argument(
        "--backend",
        "-b",
        action="append",
        metavar="[NAME=]URL",
        help="a backend; repeat for more (replaces the file's backends)",
    )
    parser.add_argument("--algorithm", "-a", choices=ALGORITHM_NAMES, help="balancing algorithm")


def run(args: argparse.Namespace) -> int:
    from lbtui import config as config_mod
    from lbtui.balancer.server import BalancerServer, serve_until_signalled
    from lbtui.errors import UsageError
    from lbtui.runtime import run_async

    cfg = config_mod.load(
        args.config, listen=args.listen, backends=args.backend, algorithm=args.algorithm
    )
    if not cfg.backends:
        raise UsageError("no backends: give --backend URL (repeatable) or [[backends]] in --config")

    def ready(server: object) -> None:
        assert isinstance(server, BalancerServer)
        names = ", ".join(cfg_b.name for cfg_b in cfg.backends)
        print(
            f"lbtui: balancing {server.url} → {len(cfg.backends)} backends ({names}) "
            f"with {cfg.balancer.algorithm}",
            file=sys.stderr,
            flush=True,
        )

    try:
        run_async(serve_until_signalled(BalancerServer(cfg), ready))
    except OSError as exc:
        raise UsageError(str(exc.strerror or exc)) from None
    return 0
