"""The console on a real balancer (``LocalControl``) with real backends on 127.0.0.1.

Each test presses the keys an operator would and checks two things: the balancer changed,
and the screen says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_args

import aiohttp
import pytest

from lbtui.balancer.pool import AdminState
from lbtui.balancer.server import BalancerServer
from lbtui.config import Algorithm
from lbtui.control.local import LocalControl
from lbtui.control.model import FaultView
from lbtui.fleet.supervisor import BackendSpec, Fleet
from lbtui.tui.app import LbtuiApp
from lbtui.tui.screens.choice import ChoiceScreen
from lbtui.tui.screens.confirm import ConfirmScreen
from lbtui.tui.screens.form import FormScreen
from lbtui.tui.screens.help import HelpScreen
from lbtui.tui.widgets.backends import BackendTable
from tests.integration.conftest import TestBackend
from tests.tui.conftest import SIZE, ready, wait_for, wait_text
from tests.tui.screen import screen_text

CLEAR = ("ctrl+a", "ctrl+k")


@dataclass
class Rig:
    lb: BalancerServer
    control: LocalControl
    backends: list[TestBackend]
    client: aiohttp.ClientSession

    async def send(self, n: int) -> None:
        for _ in range(n):
            async with self.client.get(self.lb.url + "/") as r:
                await r.read()


@pytest.fixture
async def rig(backends, balancer, client) -> Callable[..., Awaitable[Rig]]:
    async def make(n: int = 2, **sections: Any) -> Rig:
        bs = await backends(n)
        lb = await balancer(bs, **sections)
        return Rig(lb, LocalControl(lb.proxy), bs, client)

    return make


def cell(app: LbtuiApp, name: str, column: str) -> str:
    return app.query_one(BackendTable).get_cell(name, column).plain


async def test_backends_appear_and_rates_follow_traffic(rig):
    r = await rig(2)
    app = LbtuiApp(r.control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        text = screen_text(app)
        assert "in-process" in text
        assert "b1" in text
        assert "b2" in text
        assert cell(app, "b1", "rps") == "0"
        await r.send(40)
        await wait_for(pilot, lambda: cell(app, "b1", "rps") != "0", "b1's req/s")
        await wait_for(pilot, lambda: cell(app, "b2", "rps") != "0", "b2's req/s")
        assert float(cell(app, "b1", "rps")) > 0
        # the header's total follows too
        await wait_for(pilot, lambda: "req/s 0 " not in screen_text(app), "total req/s")


async def test_d_drains_the_selected_backend(rig):
    r = await rig(2)
    app = LbtuiApp(r.control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.query_one(BackendTable).selected == "b1"
        await pilot.press("d")
        backend = r.lb.proxy.backends["b1"]
        await wait_for(pilot, lambda: backend.admin == AdminState.DRAINING, "b1 draining")
        await wait_for(pilot, lambda: cell(app, "b1", "state") == "◐ draining", "state cell")
        text = await wait_text(pilot, "DRAINING")
        assert "no new requests; drained: nothing in flight" in text
        # confirmed by the event that comes back
        await wait_for(
            pilot, lambda: any(e.backend == "b1" for e in app.events), "b1's event in the log"
        )
        await pilot.press("d")  # again: undrain
        await wait_for(pilot, lambda: backend.admin == AdminState.ACTIVE, "b1 active again")


async def test_b_forces_the_breaker_open_after_confirmation(rig):
    r = await rig(2)
    app = LbtuiApp(r.control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("down")  # b2
        await wait_for(pilot, lambda: app.query_one(BackendTable).selected == "b2", "b2")
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen), "choices")
        await pilot.press("down", "enter")  # auto → open
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asks first")
        await pilot.press("y")
        breaker = r.lb.proxy.backends["b2"].breaker
        assert breaker is not None
        await wait_for(
            pilot,
            lambda: breaker.stats(r.lb.proxy.clock()).state.value == "forced_open",
            "forced open in the balancer",
        )
        await wait_for(pilot, lambda: "OPEN (forced)" in cell(app, "b2", "breaker"), "shown")
        assert "OPEN (forced)" in await wait_text(pilot, "forced by operator")


async def test_a_changes_the_algorithm(rig):
    r = await rig(2)
    app = LbtuiApp(r.control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen), "algorithms")
        names = list(get_args(Algorithm))
        steps = names.index("least_request") - names.index("round_robin")
        await pilot.press(*["down"] * steps, "enter")
        pool = r.lb.proxy.default_pool
        await wait_for(pilot, lambda: pool.algorithm == "least_request", "algorithm changed")
        await wait_text(pilot, "algorithm least_request")


async def test_l_sets_limits(rig):
    r = await rig(2)
    app = LbtuiApp(r.control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen), "limits form")
        await pilot.press(*CLEAR, *"100", "enter")
        adm = r.lb.proxy.admission
        await wait_for(pilot, lambda: adm.config.rps == 100, "rps limit in force")
        await wait_text(pilot, "limits rps 100")


async def test_e_injects_errors_and_the_fault_column_proves_it(rig):
    r = await rig(2)
    app = LbtuiApp(r.control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, FormScreen), "errors form")
        await pilot.press("tab", *CLEAR, *"50", "enter")  # status 503, 50 %
        await wait_for(pilot, lambda: cell(app, "b1", "fault").startswith("abort 503"), "shown")
        assert cell(app, "b1", "fault") == "abort 503 50→–"
        await r.send(40)

        def fault() -> FaultView | None:
            return app.snapshot.backend("b1").fault if app.snapshot else None

        # (the breaker and ejection may stop b1's traffic early: compare with what was counted)
        await wait_for(pilot, lambda: (f := fault()) is not None and f.eligible >= 4, "counted")
        await wait_for(pilot, lambda: cell(app, "b1", "fault") == "abort 503 50→50%", "50 %")
        f = fault()
        assert f is not None
        assert f.applied * 2 == f.eligible
        text = await wait_text(pilot, f"applied {f.applied} of {f.eligible} eligible")
        assert "(50.0 % vs 50 % requested)" in text
        await pilot.press("r")  # restore
        await wait_for(pilot, lambda: cell(app, "b1", "fault").startswith("ended"), "cleared")


async def test_help_and_quit(rig):
    r = await rig(1)
    app = LbtuiApp(r.control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await pilot.press("q")  # closes help, does not quit
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")
        assert app.is_running
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "quit")


# --- a real fleet: kill and restore processes


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with Fleet([BackendSpec("f1"), BackendSpec("f2")]) as f:
        yield f


async def test_k_kills_the_process_and_r_restarts_it(fleet, balancer):
    members = {m.name: m for m in fleet.backends}
    lb = await balancer(
        [],
        backends=[{"name": n, "url": m.url} for n, m in members.items()],
    )
    control = LocalControl(lb.proxy, fleet=fleet)
    app = LbtuiApp(control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: cell(app, "f1", "cpu") not in ("", "dead"), "process")
        pid = fleet.member("f1").pid
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asks first")
        assert f"pid {pid}" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not fleet.member("f1").alive, "f1 killed")
        await wait_for(pilot, lambda: cell(app, "f1", "cpu") == "dead", "shown dead")
        assert cell(app, "f1", "state") == "✖ down"
        assert "PROCESS DEAD" in await wait_text(pilot, f"pid {pid} is gone")
        await pilot.press("r")
        await wait_for(pilot, lambda: fleet.member("f1").alive, "f1 restarted", timeout=20)
        await wait_for(pilot, lambda: cell(app, "f1", "cpu") != "dead", "shown alive")
        assert fleet.member("f1").pid != pid
        await wait_for(
            pilot,
            lambda: any("restarted" in e.message for e in app.events),
            "restart event in the log",
        )


async def test_k_without_a_process_sets_a_down_fault(rig):
    r = await rig(2)
    app = LbtuiApp(r.control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asks first")
        assert "Take b1 down?" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: cell(app, "b1", "fault").startswith("down"), "down fault")
