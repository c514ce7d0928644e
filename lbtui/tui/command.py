"""``lbtui attach URL``: open the console on a running balancer: lbtui's admin API
(``http://``), HAProxy's Runtime API (``unix://``, ``tcp://``) or a Prometheus that scrapes any
balancer (``prometheus+http://``, read-only, with ``--preset`` and ``--query``).

Heavy imports (Textual, httpx) happen inside ``run`` so that ``lbtui --help`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio

from lbtui.errors import LbtuiError, UsageError
from lbtui.units import parse_duration

DEFAULT_REFRESH = "250ms"
MIN_REFRESH_S = 0.05


class TokenRefused(LbtuiError):
    """The admin API answered 401: the token is wrong or missing. Not a connection problem,
    so no retry: the command stops and exits 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        metavar="URL",
        help="lbtui's admin API (http://127.0.0.1:9901), HAProxy's Runtime API "
        "(unix:///run/haproxy/admin.sock, tcp://127.0.0.1:9999) or a Prometheus "
        "(prometheus+http://127.0.0.1:9090)",
    )
    parser.add_argument(
        "--token",
        metavar="T",
        help="bearer token of the admin API (default: $LBTUI_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="hide and refuse every action: watch only",
    )
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help="with prometheus+http://: the queries for the balancer it scrapes "
        "(haproxy, envoy, traefik, lbtui; default lbtui)",
    )
    parser.add_argument(
        "--query",
        metavar="FILE.toml",
        help="with prometheus+http://: a file of PromQL queries replacing some of the preset's",
    )
    parser.add_argument(
        "--refresh",
        metavar="DURATION",
        default=DEFAULT_REFRESH,
        help=f"how often to ask for a snapshot (default {DEFAULT_REFRESH})",
    )
    parser.add_argument(
        "--filter",
        metavar="TEXT",
        default="",
        help="start with this filter (like / in the console)",
    )
    parser.add_argument(
        "--sort",
        metavar="COLUMN",
        help="sort backends by COLUMN (name, state, weight, in_flight, conns, rps, p50, p99, "
        "errors, fault, cpu, rss); a leading - reverses: --sort=-rps",
    )
    parser.add_argument(
        "--target",
        metavar="URL",
        help="the balancer's client listener (http://HOST:PORT): lets c run chaos experiments",
    )
    parser.add_argument(
        "--scenarios",
        metavar="DIR",
        default=None,
        help="folder of chaos scenario files for c (default: the demo's scenarios)",
    )


def options(args: argparse.Namespace) -> tuple[float, str | None]:
    """``(refresh_s, sort)`` from the flags, checked (``UsageError`` names the flag)."""
    from lbtui.tui.view import parse_sort

    try:
        refresh_s = parse_duration(args.refresh)
    except ValueError as exc:
        raise UsageError(f"--refresh: {exc}") from None
    if refresh_s < MIN_REFRESH_S:
        raise UsageError(f"--refresh: at least {MIN_REFRESH_S * 1000:.0f}ms, got {args.refresh}")
    if args.sort:
        try:
            parse_sort(args.sort)
        except ValueError as exc:
            raise UsageError(f"--sort: {exc}") from None
    from lbtui.sources import source_kind

    kind = source_kind(args.url)
    if kind != "prometheus" and (args.preset or args.query):
        raise UsageError("--preset and --query go with a prometheus+http:// URL")
    if kind == "haproxy":
        from lbtui.sources.runtime_api import SocketAddress

        SocketAddress.parse(args.url)
    if kind == "prometheus":
        from lbtui.sources.presets import load_preset

        load_preset(args.preset or "lbtui", args.query)
    return refresh_s, args.sort


def run(args: argparse.Namespace) -> int:
    import os

    from lbtui.sources import open_control
    from lbtui.tui.app import LbtuiApp

    refresh_s, sort = options(args)
    token = args.token or os.environ.get("LBTUI_ADMIN_TOKEN") or None
    control = open_control(
        args.url, token=token, read_only=args.read_only, preset=args.preset, queries=args.query
    )
    chaos = None
    if args.target:
        from pathlib import Path

        from lbtui.demo import DEMO_DIR
        from lbtui.tui.screens.chaos import ChaosTarget

        folder = Path(args.scenarios) if args.scenarios else DEMO_DIR / "scenarios"
        chaos = ChaosTarget(args.url, args.target, token, folder)
    app = LbtuiApp(
        control,
        refresh_s=refresh_s,
        filter=args.filter,
        sort=sort,
        read_only=args.read_only,
        chaos=chaos,
    )

    async def main() -> str | None:
        try:
            refused = await _refused(control)
            if refused is not None:
                return refused
            await app.run_async()
            return app.refused
        finally:
            await control.aclose()

    refused = asyncio.run(main())
    if refused is not None:
        raise TokenRefused(f"attach {args.url}: {refused}")
    return 0


async def _refused(control: object) -> str | None:
    """Why the admin API refuses this token, asked once before the screen is taken over; any
    other failure (not reachable yet…) is the console's to show and retry."""
    from lbtui.control.client import HttpControl
    from lbtui.control.errors import Unauthorized
    from lbtui.tui.feed import describe_error

    if not isinstance(control, HttpControl):
        return None  # only the admin API has tokens
    try:
        await asyncio.wait_for(control.snapshot(), 5.0)
    except Unauthorized as exc:
        return describe_error(exc)
    except Exception:
        return None
    return None
