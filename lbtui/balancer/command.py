"""``lbtui serve``: the balancer, headless, until Ctrl-C or SIGTERM; SIGHUP reloads ``--config``.

It says on stderr when it is ready, when a signal starts the drain (how many requests are in
flight, how long they may take) and when it has stopped, so that an operator or a supervisor's
log can tell a slow drain from a hang."""

from __future__ import annotations

import argparse
import signal
import sys
import time

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
    parser.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help="admin API and /metrics listener (default 127.0.0.1:9901)",
    )
    parser.add_argument("--no-admin", action="store_true", help="do not start the admin API")
    parser.add_argument(
        "--workers",
        "-w",
        metavar="N",
        help="processes accepting on the listener (SO_REUSEPORT; 'auto' = one a core)",
    )


def run(args: argparse.Namespace) -> int:
    from lbtui import config as config_mod
    from lbtui.control.reload import ReloadResult
    from lbtui.control.runtime import BalancerRuntime, run_balancer, serve_until_signalled
    from lbtui.errors import UsageError
    from lbtui.runtime import run_async

    def load() -> config_mod.Config:
        return config_mod.load(
            args.config,
            listen=args.listen,
            backends=args.backend,
            algorithm=args.algorithm,
            admin=args.admin,
            no_admin=args.no_admin,
            workers=args.workers,
        )

    cfg = load()
    if not cfg.has_backends:
        raise UsageError(
            "no backends: give --backend URL (repeatable), or [[backends]] or a group's "
            "discovery in --config"
        )

    def ready(rt: BalancerRuntime) -> None:
        names = ", ".join(b.name for b in cfg.backends)
        admin = f"; admin API {rt.admin.url}" if rt.admin is not None else ""
        print(
            f"lbtui: balancing {', '.join(rt.server.urls)} → {len(cfg.backends)} "
            f"backend{'s' if len(cfg.backends) != 1 else ''} ({names}) "
            f"with {cfg.balancer.algorithm}{admin}",
            file=sys.stderr,
            flush=True,
        )

    def draining(rt: BalancerRuntime, sig: signal.Signals) -> None:
        in_flight = sum(b.in_flight for b in rt.server.proxy.backends.values())
        grace = cfg.proxy.shutdown_grace_s
        print(
            f"lbtui: {sig.name} received: no new connections; draining {in_flight} "
            f"in-flight request{'s' if in_flight != 1 else ''} (grace {grace:g} s)…",
            file=sys.stderr,
            flush=True,
        )

    def reloaded(result: ReloadResult) -> None:
        print(f"lbtui: {result.line()}", file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        runtime = (
            run_balancer(cfg, loader=load, source=str(args.config))
            if args.config is not None
            else run_balancer(cfg)
        )
        run_async(serve_until_signalled(runtime, ready, draining, reloaded))
    except OSError as exc:
        raise UsageError(str(exc.strerror or exc)) from None
    print(
        f"lbtui: stopped after {time.monotonic() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return 0
