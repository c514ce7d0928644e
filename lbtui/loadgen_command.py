"""``lbtui load URL --rate R --duration D``: open-loop load at a fixed rate, then a summary.

Flags follow oha and vegeta (``--rate``, ``--duration``, ``--connections``). Latency is shown
twice: *corrected* (from each request's intended send time: what users saw) and *raw* (from the
actual send). While it runs, a progress line goes to stderr once a second when stderr is a
terminal. Ctrl-C or SIGTERM stops early and still prints the summary.

Exit codes: 0 the run completed; 2 a bad command line, or a target that answered nothing at all
(every request failed: a setup error, not a measurement).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbtui.loadgen import LatencySummary, LoadGenerator, LoadReport

EXIT_OK = 0
EXIT_SETUP = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="target, on loopback only (http://127.0.0.1:…)")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument(
        "--duration", required=True, metavar="D", help="how long to send, e.g. 10s, 250ms, 2m"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        metavar="C",
        help="concurrency ceiling: connections (and requests in flight) at most (default 64)",
    )
    parser.add_argument(
        "--path",
        action="append",
        default=None,
        metavar="PATH",
        help="request path; repeat for an even mix (default: the URL's path)",
    )
    parser.add_argument("--method", default="GET", help="HTTP method of every request")
    parser.add_argument("--body", default=None, help="request body (text), sent with each request")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra request header; repeatable",
    )
    parser.add_argument("--timeout", default="10s", metavar="D", help="per-request timeout")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from lbtui.errors import UsageError
    from lbtui.loadgen import LoadGenerator, RequestSpec
    from lbtui.units import parse_duration

    try:
        duration = parse_duration(args.duration)
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    headers: dict[str, str] = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header: expected NAME:VALUE, got {h!r}")
        headers[name.strip()] = value.strip()
    body = args.body.encode() if args.body is not None else None
    mix = None
    if args.path or body is not None or args.method.upper() != "GET":
        paths = args.path or [_url_path(args.url)]
        mix = [RequestSpec(args.method, p, 1.0, body) for p in paths]
    gen = LoadGenerator(
        args.url,
        args.rate,
        duration,
        connections=args.connections,
        mix=mix,
        timeout_s=timeout,
        headers=headers,
    )
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    report = asyncio.run(_drive(gen, progress))
    if args.json:
        import json

        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render_report(report))
    if report.sent and not report.completed:
        print(
            "lbtui: the target answered no request: " + _first_error(report),
            file=sys.stderr,
        )
        return EXIT_SETUP
    return EXIT_OK


def _url_path(url: str) -> str:
    from yarl import URL

    return URL(url).raw_path_qs or "/"


async def _drive(gen: LoadGenerator, progress: bool) -> LoadReport:
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gen.stop)
    task = asyncio.create_task(gen.run())
    try:
        # bounded: the generator ends at its duration (plus its drain), and then so does this
        while progress and not task.done():
            await asyncio.wait([task], timeout=1.0)
            if not task.done():
                lf = gen.live()
                mix = "  ".join(f"{k} {v:.0f}/s" for k, v in lf.status_rates.items() if v)
                print(
                    f"\r{lf.elapsed_s:6.1f}s  target {lf.target_rate:.0f}/s  "
                    f"achieved {lf.achieved_rate:.0f}/s  p50 {fmt_s(lf.p50_s)}  "
                    f"p99 {fmt_s(lf.p99_s)}  in flight {lf.in_flight}  {mix}\x1b[K",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        report = await task
        if progress:
            print(file=sys.stderr)
        return report
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def fmt_s(seconds: float) -> str:
    """``0.00213`` → ``2.13ms``; ``1.5`` → ``1.50s``; µs below a millisecond."""
    if seconds <= 0:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f}ms"
    return f"{seconds:.2f}s"


def _first_error(r: LoadReport) -> str:
    for kind, n in r.errors.items():
        if n:
            return f"{n} {kind} errors, e.g. {r.error_examples.get(kind, '?')}"
    return "no answer"


def render_report(r: LoadReport) -> str:
    """The summary table ``lbtui load`` prints."""
    from lbtui.loadgen import LATE_START_S

    statuses = "  ".join(f"{code}: {n}" for code, n in r.status_counts.items()) or "none"
    errors = "  ".join(f"{k}: {n}" for k, n in r.errors.items() if n) or "none"
    lines = [
        f"target     {r.url}",
        f"duration   {r.duration_s:g}s (elapsed {r.elapsed_s:.2f}s)",
        f"rate       offered {r.offered_rate:.1f}/s   achieved {r.achieved_rate:.1f}/s",
        f"requests   scheduled {r.scheduled}   sent {r.sent}   completed {r.completed}"
        f"   unsent {r.unsent}",
        f"status     {statuses}",
        f"errors     {errors}",
        f"waits      {r.late_starts} started > {LATE_START_S * 1000:g} ms late"
        f"   ceiling hits {r.ceiling_hits}"
        f"   max start delay {fmt_s(r.max_start_delay_s)}",
        f"bytes in   {r.bytes_in}",
        "",
        _latency_row("latency", ("p50", "p90", "p99", "p99.9", "max")),
        _latency_row("corrected", _quantiles(r.corrected)),
        _latency_row("raw", _quantiles(r.raw)),
    ]
    return "\n".join(lines)


def _quantiles(s: LatencySummary) -> tuple[str, ...]:
    return tuple(fmt_s(x) for x in (s.p50, s.p90, s.p99, s.p999, s.max))


def _latency_row(label: str, cells: tuple[str, ...]) -> str:
    return f"{label:<10} " + "".join(f"{c:>10}" for c in cells)
