"""`lbtui demo` in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

LBTUI = Path(sys.executable).with_name("lbtui")


def lbtui_command(args: str) -> str:
    """The shell command tmux runs: this test run's ``lbtui``, with its PYTHONPATH (a tmux
    server started earlier would not pass it on), without COLUMNS/LINES (they would override
    the terminal's size)."""
    path = os.environ.get("PYTHONPATH")
    keep = f"PYTHONPATH={shlex.quote(path)} " if path else ""
    return f"env -u COLUMNS -u LINES {keep}{LBTUI} {args}"


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout


@pytest.fixture
def session() -> Iterator[str]:
    name = f"lbtui-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, timeout=10)


def wait_screen(name: str, cond: Callable[[str], bool], timeout: float, what: str) -> str:
    end = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < end:
        screen = tmux("capture-pane", "-t", name, "-p")
        if cond(screen):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; screen was:\n{screen}")


def row(screen: str, backend: str) -> str:
    for line in screen.splitlines():
        if line.strip().startswith(backend + " "):
            return line
    return ""


def test_demo_in_a_real_terminal(session: str) -> None:
    started = time.monotonic()
    command = lbtui_command("demo --backends 2 --rate 60")
    tmux(
        "new-session", "-d", "-s", session, "-x", "180", "-y", "50",
        f"{command}; echo LBTUI-EXITED $?; sleep 60",
    )  # fmt: skip
    # a tmux server started earlier may impose its own default size: set it for this window
    subprocess.run(["tmux", "resize-window", "-t", session, "-x", "180", "-y", "50"], timeout=10)
    pane_pid = int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())

    def live(screen: str) -> bool:
        line = row(screen, "api-1")
        # the req/s column comes after weight, in-flight and conns: any non-zero rate will do
        return bool(line) and re.search(r"\s[1-9][0-9.]*\s", line.split("1/1", 1)[-1]) is not None

    wait_screen(session, live, 20, "live numbers for api-1")
    first_live_s = time.monotonic() - started
    screen = tmux("capture-pane", "-t", session, "-p")
    assert "api-2" in screen
    assert "lbtui demo" in screen
    fleet = [
        p
        for p in psutil.Process(pane_pid).children(recursive=True)
        if "lbtui.fleet.backend" in " ".join(p.cmdline())
    ]
    assert len(fleet) == 2

    # kill the selected backend (the first row) and confirm
    tmux("send-keys", "-t", session, "k")
    wait_screen(session, lambda s: "Kill" in s or "kill" in s, 5, "the kill confirmation")
    tmux("send-keys", "-t", session, "y")
    screen = wait_screen(
        session,
        lambda s: "process killed" in s and ("✖" in row(s, "api-1") or "dead" in row(s, "api-1")),
        15,
        "api-1 shown dead",
    )

    # restore it
    tmux("send-keys", "-t", session, "r")
    wait_screen(session, lambda s: "process restarted" in s, 15, "the restart event")

    # quit: the terminal is handed back and every fleet process is gone
    tmux("send-keys", "-t", session, "q")
    wait_screen(session, lambda s: "LBTUI-EXITED 0" in s, 30, "lbtui to exit 0")
    end = time.monotonic() + 10
    alive = [p for p in fleet if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    while alive and time.monotonic() < end:
        time.sleep(0.1)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive
    left = [
        p
        for p in psutil.Process(pane_pid).children(recursive=True)
        if "lbtui.fleet.backend" in " ".join(p.cmdline())
    ]
    assert not left
    # the issue asks for live numbers within 3 s; CI machines are shared, so allow slack here
    # and report the figure (bench/tui.py measures it properly)
    assert first_live_s < 15, first_live_s


def test_demo_at_80x24_keeps_the_figures_and_the_columns(session: str) -> None:
    """The smallest terminal (issue 13, item 3): the header's figures and the link state,
    every backend's name, state, breaker, req/s, p99 and err%, nothing wrapped over the next
    line, and a footer of whole keys; q quits and leaves no process behind."""
    command = lbtui_command("demo --backends 3 --rate 60")
    tmux(
        "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
        f"{command}; echo LBTUI-EXITED $?; sleep 60",
    )  # fmt: skip
    subprocess.run(["tmux", "resize-window", "-t", session, "-x", "80", "-y", "24"], timeout=10)
    pane_pid = int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())

    def live(screen: str) -> bool:
        return all(re.search(rf"^ {b} .*\s[1-9][0-9.]*\s", screen, re.M) for b in ("api-1",))

    screen = wait_screen(session, live, 30, "live numbers at 80×24")
    lines = screen.splitlines()
    assert len(lines) <= 24
    assert all(len(line) <= 80 for line in lines)
    header, figures = lines[0], lines[1]
    assert "lbtui demo" in header
    assert "● live" in header
    for label in ("req/s 1s ", "success ", "429/s ", "L ", "M "):
        assert label in figures, figures
    head = next(line for line in lines if line.strip().startswith("backend"))
    for column in ("backend", "state", "breaker", "req/s 1s", "p99 10s", "err%"):
        assert column in head, head
    for b in ("api-1", "api-2", "api-3"):
        cells = row(screen, b).split()
        assert cells[:3] == [b, "●", "up"], cells
        assert cells[3] == "closed", cells
        assert len(cells) == 7, cells  # req/s, p99, err% too: nothing cut
    footer = lines[-1]
    assert footer.rstrip().endswith("^p palette")
    assert "? help" in footer
    assert "q quit" in footer
    fleet = [
        p
        for p in psutil.Process(pane_pid).children(recursive=True)
        if "lbtui.fleet.backend" in " ".join(p.cmdline())
    ]
    tmux("send-keys", "-t", session, "q")
    wait_screen(session, lambda s: "LBTUI-EXITED 0" in s, 30, "lbtui to exit 0")
    end = time.monotonic() + 10
    alive = [p for p in fleet if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    while alive and time.monotonic() < end:
        time.sleep(0.1)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive
