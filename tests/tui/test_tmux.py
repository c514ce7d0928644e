"""`lbtui demo` in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen."""

from __future__ import annotations

import re
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
    # COLUMNS/LINES from the test runner's environment would override the terminal's size
    command = f"env -u COLUMNS -u LINES {LBTUI} demo --backends 2 --rate 60"
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
