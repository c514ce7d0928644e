"""Run a chaos experiment against the balancer the console is attached to, and watch it.

The experiment runs as ``lbtui chaos run FILE --attach ADMIN --target LISTENER`` in a child
process (so its load and checks never share the console's event loop); its progress lines are
shown as they come, then the verdict and where the reports are. Esc while it runs interrupts it:
the runner rolls back everything it changed before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import RichLog, Static

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
    ]


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

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="chaos"):
            yield Static(f"chaos · {self.scenario.name}", id="question")
            yield Static("starting…", id="chaos-status")
            yield RichLog(id="chaos-log", wrap=True, markup=False, max_lines=500)
            yield Static(
                "Esc interrupts the run (it rolls back) · Esc again closes", classes="hint"
            )

    def on_mount(self) -> None:
        self.run_experiment()

    @work(exclusive=True, group="chaos", exit_on_error=False)
    async def run_experiment(self) -> None:
        log = self.query_one("#chaos-log", RichLog)
        status = self.query_one("#chaos-status", Static)
        env = dict(os.environ)
        if self.target.token:
            env["LBTUI_ADMIN_TOKEN"] = self.target.token
        started = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *chaos_command(self.target, self.scenario, self.report_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        status.update("running…")
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            log.write(line.decode(errors="replace").rstrip())
            status.update(f"running… {time.monotonic() - started:.0f} s")
        self.returncode = await self.proc.wait()
        word, meaning, colour = VERDICTS.get(
            self.returncode, ("ERROR", f"exit {self.returncode}", "red")
        )
        status.update(
            f"[b {colour}]{word}[/] — {meaning} (exit {self.returncode}) · "
            f"report {self.report_dir / (self.scenario.stem + '.html')}"
        )

    def action_close(self) -> None:
        proc = self.proc
        if proc is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            self.query_one("#chaos-status", Static).update("interrupting: rolling back…")
            return
        self.dismiss(self.returncode)
