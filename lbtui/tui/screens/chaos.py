"""Run a chaos experiment against the balancer the console is attached to, and watch it.

The experiment runs as ``lbtui chaos run FILE --attach ADMIN --target LISTENER
--progress-json`` in a child process (so its load and checks never share the console's event
loop). Its progress comes as JSON lines (``lbtui.chaos.progress``) and is shown live: elapsed
of total, the timeline with each action ticked off as it fires, each check's status so far,
then the verdict and where the reports are. Esc while it runs interrupts it: the runner rolls
back everything it changed before it exits. The runner itself puts the run's start and end on
the balancer's event timeline (an ``Announce`` action), so they reach this console's event log
as every other console's, and ``/api/v1/events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import RichLog, Static

from lbtui.chaos.progress import (
    ActionFired,
    CheckLine,
    Finished,
    Log,
    Progress,
    Started,
    Tick,
    from_line,
)

VERDICTS = {
    0: ("PASSED", "every check held", "green"),
    1: ("FAILED", "a check failed", "red"),
    2: ("NOT RUN", "the experiment could not be carried out", "yellow"),
    3: ("ABORTED", "a guardrail stopped it", "red"),
    130: ("INTERRUPTED", "stopped before the end; everything was rolled back", "yellow"),
}


@dataclass(frozen=True, slots=True)
class ChaosTarget:
    """Where an experiment started from the console goes."""

    admin_url: str
    target_url: str
    token: str | None = None
    scenario_dir: Path | None = None


def scenario_files(directory: Path | None) -> list[Path]:
    if directory is None or not directory.is_dir():
        return []
    return sorted(directory.glob("*.toml"))


def chaos_command(target: ChaosTarget, scenario: Path, report_dir: Path) -> list[str]:
    stem = scenario.stem
    return [
        sys.executable,
        "-m",
        "lbtui",
        "chaos",
        "run",
        str(scenario),
        "--attach",
        target.admin_url,
        "--target",
        target.target_url,
        "--report",
        str(report_dir / f"{stem}.html"),
        "--json",
        str(report_dir / f"{stem}.json"),
        "--progress-json",
    ]


CHECK_MARK = {
    "waiting": ("·", "bright_black"),
    "holding": ("●", "green"),
    "failing": ("●", "yellow"),
    "passed": ("✓", "bold green"),
    "failed": ("✖", "bold red"),
}


@dataclass
class _Plan:
    """What the screen knows about the run so far."""

    name: str = ""
    total_s: float = 0.0
    actions: list[str] = field(default_factory=list)
    fired: dict[int, ActionFired] = field(default_factory=dict)
    checks: list[CheckLine] = field(default_factory=list)
    elapsed_s: float = 0.0


def plan_text(plan: _Plan, done: bool) -> Text:
    """The timeline (fired or to come) and the checks with their status, for people."""
    text = Text()
    text.append("timeline\n", "bold")
    if not plan.actions:
        text.append("  (no actions: load only)\n", "bright_black")
    for i, planned in enumerate(plan.actions, start=1):
        fired = plan.fired.get(i)
        if fired is None:
            mark, style = ("–", "bright_black") if done else ("·", "bright_black")
            text.append(f"  {mark} {planned}\n", style)
            continue
        ok = fired.ok
        text.append("  ✓ " if ok else "  ✖ ", "bold green" if ok else "bold red")
        text.append(f"{fired.description}", "" if ok else "red")
        detail = f" — {fired.detail}" if fired.detail else ""
        text.append(f"  at +{fired.at_s:.1f} s{detail}\n", "bright_black")
    text.append("checks", "bold")
    text.append(" (so far; the verdict judges at the end)\n" if not done else "\n", "bright_black")
    for c in plan.checks:
        mark, style = CHECK_MARK.get(c.status, ("?", ""))
        text.append(f"  {mark} {c.status:<8} ", style)
        text.append(c.name)
        if c.figure:
            text.append(f" — {c.figure}", "bright_black")
        text.append("\n")
    text.rstrip()
    return text


def bar(elapsed: float, total: float, width: int = 24) -> str:
    share = 0.0 if total <= 0 else min(1.0, max(0.0, elapsed / total))
    full = round(share * width)
    return "█" * full + "░" * (width - full)


class ChaosScreen(ModalScreen[int | None]):
    """One experiment's progress and verdict."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "stop / close", id="chaos.close"),
    ]

    def __init__(self, target: ChaosTarget, scenario: Path) -> None:
        super().__init__()
        self.target = target
        self.scenario = scenario
        self.report_dir = Path(tempfile.mkdtemp(prefix="lbtui-chaos-"))
        self.proc: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None
        self.plan = _Plan(name=scenario.stem)
        self._started_at: float | None = None
        """Monotonic time of the run's start as seen here (between ticks, the clock runs on)."""

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="chaos"):
            yield Static(f"chaos · {self.scenario.name}", id="question")
            yield Static("starting…", id="chaos-status")
            yield Static(
                "Esc interrupts the run (it rolls back) · Esc again closes",
                id="chaos-hint",
                classes="hint",
            )
            yield VerticalScroll(Static("", id="chaos-plan"), id="chaos-plan-box")
            yield RichLog(id="chaos-log", wrap=True, markup=False, max_lines=500)

    def on_mount(self) -> None:
        self.run_experiment()
        self.set_interval(0.5, self._tick)

    def _tick(self) -> None:
        if self.returncode is None and self._started_at is not None:
            elapsed = max(self.plan.elapsed_s, time.monotonic() - self._started_at)
            self._status(elapsed)

    def _status(self, elapsed: float) -> None:
        total = self.plan.total_s
        self.query_one("#chaos-status", Static).update(
            Text.assemble(
                ("running ", "bold"),
                (f"{min(elapsed, total):.0f} s of {total:.0f} s  ", ""),
                (bar(elapsed, total), "cyan"),
            )
        )

    def _show_plan(self, done: bool = False) -> None:
        self.query_one("#chaos-plan", Static).update(plan_text(self.plan, done))

    def take(self, p: Progress | None, line: str) -> None:
        """One line from the run: progress updates the plan; anything else goes to the log."""
        log = self.query_one("#chaos-log", RichLog)
        match p:
            case Started():
                self.plan.name, self.plan.total_s = p.name, p.total_s
                self.plan.actions = list(p.actions)
                self.plan.checks = [CheckLine(c, "waiting") for c in p.checks]
                self._started_at = time.monotonic()
                self._status(0.0)
                self._show_plan()
            case ActionFired():
                self.plan.fired[p.number] = p
                self._show_plan()
            case Tick():
                self.plan.elapsed_s = p.elapsed_s
                self.plan.checks = list(p.checks)
                self._status(p.elapsed_s)
                self._show_plan()
            case Finished():
                self.plan.checks = list(p.checks)
                self._show_plan(done=True)
                if p.reason:
                    log.write(f"ended: {p.reason}")
            case Log():
                log.write(p.text)
            case None:
                if line.strip():
                    log.write(line)

    @work(exclusive=True, group="chaos", exit_on_error=False)
    async def run_experiment(self) -> None:
        log = self.query_one("#chaos-log", RichLog)
        status = self.query_one("#chaos-status", Static)
        env = dict(os.environ)
        if self.target.token:
            env["LBTUI_ADMIN_TOKEN"] = self.target.token
        self.proc = await asyncio.create_subprocess_exec(
            *chaos_command(self.target, self.scenario, self.report_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        status.update("setting up…")
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        summary = asyncio.create_task(self.proc.stdout.read())
        while True:
            raw = await self.proc.stderr.readline()
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip()
            self.take(from_line(line), line)
        self.returncode = await self.proc.wait()
        for line in (await summary).decode(errors="replace").splitlines():
            log.write(line)
        word, meaning, colour = VERDICTS.get(
            self.returncode, ("ERROR", f"exit {self.returncode}", "red")
        )
        status.update(
            Text.assemble(
                (word, f"bold {colour}"),
                f" — {meaning} (exit {self.returncode}) · report "
                f"{self.report_dir / (self.scenario.stem + '.html')}",
            )
        )
        self._show_plan(done=True)
        self.query_one("#chaos-hint", Static).update("Esc closes")

    def action_close(self) -> None:
        proc = self.proc
        if proc is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            self.query_one("#chaos-status", Static).update("interrupting: rolling back…")
            return
        self.dismiss(self.returncode)
