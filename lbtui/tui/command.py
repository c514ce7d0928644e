"""``lbtui attach URL [URL …]``: open the console on a running balancer: lbtui's admin API
(``http://``), HAProxy's Runtime API (``unix://``, ``tcp://``) or a Prometheus that scrapes any
balancer (``prometheus+http://``, read-only, with ``--preset`` and ``--query``). Several URLs,
each ``[NAME=]URL``, open one console over them all (``MultiControl`` and ``MultiApp``).

Heavy imports (Textual, httpx) happen inside ``run`` so that ``lbtui --help`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from lbtui.errors import LbtuiError, UsageError
from lbtui.units import parse_duration

if TYPE_CHECKING:
    from lbtui.control.interface import Control

DEFAULT_REFRESH = "250ms"
MIN_REFRESH_S = 0.05


class TokenRefused(LbtuiError):
    """The admin API answered 401: the token is wrong or missing. Not a connection problem,
    so no retry: the command stops and exits 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        metavar="URL",
        nargs="+",
        help="lbtui's admin API (http://127.0.0.1:9901), HAProxy's Runtime API "
        "(unix:///run/haproxy/admin.sock, tcp://127.0.0.1:9999) or a Prometheus "
        "(prometheus+http://127.0.0.1:9090); several, each [NAME=]URL, open one console over "
        "them all",
    )
    parser.add_argument(
        "--token",
        metavar="T",
        help="bearer token of the admin API (default: $LBTUI_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="hide and refuse every action: watch only (on every balancer)",
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

    kinds = [source_kind(url) for _, url in members(args.url)]
    if "prometheus" not in kinds and (args.preset or args.query):
        raise UsageError("--preset and --query go with a prometheus+http:// URL")
    if args.target and len(kinds) > 1:
        raise UsageError("--target: chaos runs drive one balancer; attach to it alone")
    for kind, (_, url) in zip(kinds, members(args.url), strict=True):
        if kind == "haproxy":
            from lbtui.sources.runtime_api import SocketAddress

            SocketAddress.parse(url)
        if kind == "prometheus":
            from lbtui.sources.presets import load_preset

            load_preset(args.preset or "lbtui", args.query)
    return refresh_s, args.sort


def members(urls: list[str]) -> list[tuple[str, str]]:
    """``(name, url)`` of each ``[NAME=]URL``; a name left out is the URL's ``host:port``
    (``:port`` when every URL has the same host; a socket's file name for ``unix://``).
    ``UsageError`` names what is wrong."""
    from urllib.parse import urlsplit

    from lbtui.sources import source_kind

    given: list[tuple[str, str]] = []
    for arg in urls:
        name, sep, url = arg.partition("=")
        if not sep or "://" in name:
            name, url = "", arg
        source_kind(url)
        try:
            urlsplit(url).port  # noqa: B018 - reading it checks it
        except ValueError:
            raise UsageError(f"{arg!r}: not a valid URL") from None
        given.append((name, url))
    hosts = {urlsplit(u).hostname for _, u in given}

    def default(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path.rsplit("/", 1)[-1] or url
        port = f":{parts.port}" if parts.port else ""
        return port if len(hosts) == 1 and port else f"{parts.hostname}{port}"

    out = [(name or default(url), url) for name, url in given]
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise UsageError(f"two balancers with the same name: {', '.join(names)}")
    return out


def run(args: argparse.Namespace) -> int:
    import os

    from lbtui.sources import open_control, source_kind
    from lbtui.tui.app import LbtuiApp

    refresh_s, sort = options(args)
    token = args.token or os.environ.get("LBTUI_ADMIN_TOKEN") or None
    named = members(args.url)
    controls: list[tuple[str, Control]] = []
    for name, url in named:
        prometheus = source_kind(url) == "prometheus"
        controls.append(
            (
                name,
                open_control(
                    url,
                    token=token,
                    read_only=args.read_only,
                    preset=args.preset if prometheus else None,
                    queries=args.query if prometheus else None,
                ),
            )
        )
    chaos = None
    if args.target:
        from pathlib import Path

        from lbtui.demo import DEMO_DIR
        from lbtui.tui.screens.chaos import ChaosTarget

        folder = Path(args.scenarios) if args.scenarios else DEMO_DIR / "scenarios"
        chaos = ChaosTarget(named[0][1], args.target, token, folder)
    app: LbtuiApp
    control: Control
    if len(controls) == 1:
        control = controls[0][1]
        app = LbtuiApp(
            control,
            refresh_s=refresh_s,
            filter=args.filter,
            sort=sort,
            read_only=args.read_only,
            chaos=chaos,
        )
    else:
        from lbtui.control.multi import MultiControl
        from lbtui.tui.multi_app import MultiApp

        multi = MultiControl(controls, read_only=args.read_only)
        control = multi
        app = MultiApp(
            multi, refresh_s=refresh_s, filter=args.filter, sort=sort, read_only=args.read_only
        )

    async def main() -> str | None:
        try:
            for name, member in controls:
                refused = await _refused(member)
                if refused is not None:
                    return refused if len(controls) == 1 else f"{name}: {refused}"
            await app.run_async()
            return app.refused
        finally:
            await control.aclose()

    refused = asyncio.run(main())
    if refused is not None:
        raise TokenRefused(f"attach {' '.join(args.url)}: {refused}")
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
