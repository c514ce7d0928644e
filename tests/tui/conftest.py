"""Console tests: the app on a recorded snapshot, or on a real balancer on 127.0.0.1.

The integration fixtures (real aiohttp backends, the balancer) are reused as they are; waits
are for conditions with deadlines, through ``pilot.pause()`` so the app keeps running.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from lbtui.tui.app import LbtuiApp
from lbtui.tui.recorded import RecordedControl
from tests.integration.conftest import backends, balancer, client  # noqa: F401 (fixtures)
from tests.tui.screen import screen_text

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "snapshots"
MAIN = FIXTURES / "main.json"
SIZE = (160, 48)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Wall-clock times render the same everywhere."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def recorded() -> RecordedControl:
    return RecordedControl.load(MAIN)


async def wait_for(
    pilot: Pilot[None], cond: Callable[[], object], what: str, timeout: float = 10.0
) -> None:
    """Let the app run until ``cond()`` is truthy, within a deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await pilot.pause(0.02)


async def wait_text(pilot: Pilot[None], text: str, timeout: float = 10.0) -> str:
    """Wait until the screen shows ``text``; returns the screen."""
    app = pilot.app
    await wait_for(pilot, lambda: text in screen_text(app), f"screen shows {text!r}", timeout)
    return screen_text(app)


async def ready(pilot: Pilot[None]) -> LbtuiApp:
    """Wait for the first snapshot to be on screen."""
    app = pilot.app
    assert isinstance(app, LbtuiApp)
    await wait_for(pilot, lambda: app.snapshot is not None, "first snapshot")
    await pilot.pause()
    return app
