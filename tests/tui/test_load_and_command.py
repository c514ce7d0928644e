"""The load panel and its keys, ``lbtui attach``'s flags, and the console's layering."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from lbtui.cli import build_parser
from lbtui.errors import UsageError
from lbtui.loadgen import LiveFigures
from lbtui.tui import command
from lbtui.tui.app import LbtuiApp
from tests.tui.conftest import SIZE, ready, wait_text
from tests.tui.screen import screen_text


class FakeLoad:
    """The ``LoadHandle`` shape, with figures that follow the rate."""

    def __init__(self, rate: float) -> None:
        self._rate = rate

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        self._rate = rate

    def live(self) -> LiveFigures:
        return LiveFigures(
            elapsed_s=10.0,
            target_rate=self._rate,
            achieved_rate=self._rate * 0.98,
            sent=2000,
            completed=1990,
            errors=3,
            in_flight=4,
            backlog=0,
            status_rates={"2xx": self._rate * 0.9, "5xx": self._rate * 0.08},
            p50_s=0.0032,
            p99_s=0.045,
            window_s=5.0,
        )


async def test_load_panel_and_rate_keys(recorded):
    load = FakeLoad(200.0)
    app = LbtuiApp(recorded, load=load)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        text = await wait_text(pilot, "offered 200/s")
        assert "achieved 196/s" in text
        assert "2xx 180/s" in text
        assert "p50 3.2 ms  p99 45 ms" in text
        await pilot.press("plus")
        assert load.rate == 250.0
        await wait_text(pilot, "offered 250/s")
        await pilot.press("minus", "minus")
        assert load.rate == 160.0
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Load: raise rate" in titles


async def test_at_80_columns_the_load_panel_keeps_both_rates_whole(recorded):
    app = LbtuiApp(recorded, load=FakeLoad(200.0))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        text = await wait_text(pilot, "200/s → 196/s")
        panel = next(line for line in text.splitlines() if "200/s → 196/s" in line)
        assert "…" not in panel.split("200/s → 196/s")[1].split("│")[0]
        assert "p99 45 ms" in text


async def test_without_load_the_rate_keys_are_hidden(recorded):
    app = LbtuiApp(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "rate+" not in screen_text(app).splitlines()[-1]
        await pilot.press("plus")
        await pilot.pause()
        assert app.is_running
        assert "#load" not in [f"#{w.id}" for w in app.query("*")]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["attach", *argv])


def test_attach_flags():
    args = parse(
        "http://127.0.0.1:9901",
        "--token",
        "t",
        "--read-only",
        "--refresh",
        "500ms",
        "--filter",
        "api",
        "--sort=-rps",
    )
    assert (args.url, args.token, args.read_only, args.filter) == (
        ["http://127.0.0.1:9901"],
        "t",
        True,
        "api",
    )
    assert command.options(args) == (0.5, "-rps")
    assert args._run is command.run


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["http://127.0.0.1:1", "--refresh", "soon"], "--refresh"),
        (["http://127.0.0.1:1", "--refresh", "1ms"], "at least 50ms"),
        (["http://127.0.0.1:1", "--sort", "colour"], "--sort: cannot sort by"),
        (["127.0.0.1:9901"], r"expected an http\(s\):// admin API, a unix:// or tcp://"),
        (["unix://"], "expected unix:///PATH/TO/SOCKET"),
        (["tcp://127.0.0.1"], "expected tcp://HOST:PORT"),
        (["unix:///run/haproxy.sock", "--preset", "envoy"], "--preset and --query go with"),
        (["http://127.0.0.1:1", "http://127.0.0.1:2", "--target", "http://x:3"], "--target"),
        (["a=http://127.0.0.1:1", "a=http://127.0.0.1:2"], "two balancers with the same name"),
    ],
)
def test_attach_refuses_bad_flags(argv, message):
    with pytest.raises(UsageError, match=message):
        command.options(parse(*argv))


def test_console_never_imports_the_balancer():
    code = (
        "import sys, lbtui.tui.app, lbtui.tui.command, lbtui.tui.recorded; "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mods = set(out.stdout.split())
    assert "textual" in mods
    assert not any(m == "lbtui.balancer" or m.startswith("lbtui.balancer.") for m in mods)
    assert "aiohttp" not in mods  # attach needs httpx only
