"""``lbtui chaos run SCENARIO.toml``: run a chaos experiment and exit with its verdict.

Exit codes (distinct classes, as k6 users asked in grafana/k6#680): **0** every check held;
**1** a check failed; **2** the experiment could not be carried out (a bad scenario file — one
line naming the file, the key path and the expectation —, a target that cannot be reached, an
action the target refused, or an internal error: never 1, which only a check can cause);
**3** aborted by a guardrail; **130** interrupted (SIGINT/SIGTERM). Whatever the
outcome, everything the run changed is rolled back before the command returns, and the reports
asked for are written (an interrupted or aborted run's too).

While it runs, one line per timeline action goes to stderr; at the end the summary goes to
stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbtui.chaos.runner import RunOptions, RunResult
    from lbtui.chaos.scenario import ScenarioFile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="chaos_command", metavar="ACTION")
    sub.required = True
    run = sub.add_parser(
        "run",
        help="run one experiment: its load, its timeline, its checks",
        description="Run a chaos experiment. Exit 0: every check held; 1: a check failed; "
        "2: setup error; 3: aborted by a guardrail; 130: interrupted.",
    )
    run.add_argument("scenario", metavar="SCENARIO.toml", help="the experiment (demo/scenarios/)")
    run.add_argument(
        "--attach",
        metavar="URL",
        help="run against a running balancer's admin API instead of starting [system]",
    )
    run.add_argument(
        "--token",
        metavar="T",
        help="the admin API's bearer token, with --attach (default: $LBTUI_ADMIN_TOKEN)",
    )
    run.add_argument(
        "--target",
        metavar="URL",
        help="the attached balancer's listener URL, where the load goes (or [load] target)",
    )
    run.add_argument("--report", metavar="FILE.html", help="write the HTML report here")
    run.add_argument("--json", metavar="FILE.json", help="write the JSON report here")
    run.add_argument("--junit", metavar="FILE.xml", help="write JUnit XML here")
    run.add_argument(
        "--duration-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="scale the experiment's own timeline (load duration, action times, fault "
        "durations, check windows) by F, e.g. 0.5 for a quick run",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    run.add_argument(
        "--progress-json",
        action="store_true",
        help="progress on stderr as JSON lines (plan, actions, live checks, verdict) for a "
        "program watching the run, as the console's c does",
    )


def run(args: argparse.Namespace) -> int:
    from lbtui.chaos.runner import EXIT_SETUP, RunOptions
    from lbtui.chaos.scenario import load_scenario
    from lbtui.errors import LbtuiError, UsageError

    if not 0.01 <= args.duration_scale <= 100:
        raise UsageError("--duration-scale must be from 0.01 to 100")
    if args.token and not args.attach:
        raise UsageError("--token goes with --attach")
    if args.target and not args.attach:
        raise UsageError("--target goes with --attach (the run starts its own balancer)")
    try:
        sf = load_scenario(args.scenario, attach=bool(args.attach))
    except LbtuiError as exc:
        print(f"lbtui: {exc}", file=sys.stderr)
        return EXIT_SETUP
    import os

    token = args.token or (os.environ.get("LBTUI_ADMIN_TOKEN") if args.attach else None) or None
    options = RunOptions(
        attach=args.attach, token=token, target=args.target, scale=args.duration_scale
    )
    return _run(sf, options, args)


def _run(sf: ScenarioFile, options: RunOptions, args: argparse.Namespace) -> int:
    from lbtui.chaos.progress import Log, Progress, to_line
    from lbtui.chaos.runner import EXIT_SETUP
    from lbtui.chaos.system import SetupError
    from lbtui.runtime import run_async

    def tell(p: Progress) -> None:
        print(to_line(p), file=sys.stderr, flush=True)

    def log(message: str) -> None:
        if args.progress_json:
            tell(Log(message))
        elif not args.quiet:
            print(message, file=sys.stderr, flush=True)

    try:
        result = run_async(_main(sf, options, log, tell if args.progress_json else None))
    except SetupError as exc:
        print(f"lbtui: chaos: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except Exception as exc:  # a crash is not a failed check: never let it exit 1
        import traceback

        traceback.print_exc()
        print(f"lbtui: chaos: internal error, the run was rolled back: {exc!r}", file=sys.stderr)
        return EXIT_SETUP
    written = _write_reports(result, args)
    print(render_summary(result))
    for path in written:
        print(f"report    {path}")
    return result.exit_code


async def _main(
    sf: ScenarioFile, options: RunOptions, log: object, progress: object = None
) -> RunResult:
    import asyncio
    import contextlib
    import signal

    from lbtui.chaos.runner import Experiment

    assert callable(log)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log("chaos: interrupted: stopping the load and rolling back")
        else:
            log("chaos: still rolling back; every step is bounded, please wait")
        stop.set()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        return await Experiment(sf, options, log, progress).run(stop)  # type: ignore[arg-type]
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def render_summary(result: RunResult) -> str:
    from lbtui.chaos.report import render_text

    return render_text(result, color=sys.stdout.isatty())


def _write_reports(result: RunResult, args: argparse.Namespace) -> list[str]:
    """Write the reports asked for; the paths written."""
    from pathlib import Path

    from lbtui.chaos.report import render_html, render_json, render_junit

    written: list[str] = []
    for path, render in (
        (args.report, render_html),
        (args.json, render_json),
        (args.junit, render_junit),
    ):
        if path:
            try:
                Path(path).write_text(render(result), encoding="utf-8")
            except OSError as exc:
                print(f"lbtui: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            else:
                written.append(str(path))
    return written
