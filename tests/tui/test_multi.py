"""``lbtui attach URL URL URL``: one console over three real balancer processes (``lbtui serve``
with the admin API) in front of the same two backends. What the console shows: the balancers
panel, backend rows summed over the balancers, the per-balancer breakdown, the merged timeline
tagged with each balancer; actions to every balancer or to the one chosen, with each one's
result; and, when one balancer process is killed, its share greyed while the rest stay live."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from lbtui.control.client import HttpControl
from lbtui.control.model import AdminChanged
from lbtui.control.multi import MultiControl
from lbtui.tui.multi_app import MultiApp
from lbtui.tui.screens.choice import ChoiceScreen
from tests.tui.conftest import SIZE, wait_for, wait_text
from tests.tui.screen import screen_text


class Balancer:
    """``lbtui serve`` as a process of its own (so that the test can kill it), on ports the
    kernel picks, read back from the line it starts with."""

    STARTED = re.compile(rb"balancing (http://\S+) .* admin API (http://\S+)")

    def __init__(self, backends: list[Any]) -> None:
        self.backends = backends
        self.url = self.admin = ""
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 60.0) -> None:
        flags = [f"--backend={b.name}={b.url}" for b in self.backends]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lbtui", "serve", "--listen", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", *flags,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            line = await self.proc.stderr.readline()
        found = self.STARTED.search(line)
        assert found, line
        self.url, self.admin = found[1].decode(), found[2].decode()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def three(backends) -> AsyncIterator[list[Balancer]]:
    bs = await backends(2)
    lbs = [Balancer(bs) for _ in range(3)]
    try:
        await asyncio.gather(*(lb.start() for lb in lbs))
        yield lbs
    finally:
        for lb in lbs:
            await lb.kill()


async def send(client: aiohttp.ClientSession, lb: Balancer, n: int) -> None:
    for _ in range(n):
        async with client.get(lb.url + "/") as r:
            await r.read()
            assert r.status == 200


def last_notice(app: MultiApp) -> tuple[str, str]:
    note = list(app._notifications)[-1]
    return note.title, str(note.message)


async def notice(pilot: Any, app: MultiApp, before: int, what: str) -> tuple[str, str]:
    await wait_for(pilot, lambda: len(app._notifications) > before, what, 15)
    return last_notice(app)


def admin_on(app: MultiApp, backend: str) -> list[str | None]:
    """The backend's admin state as each balancer last said it."""
    out: list[str | None] = []
    for v in app.multi.balancers:
        out.append(v.snapshot.backend(backend).admin if v.snapshot is not None else None)
    return out


async def test_one_console_over_three_balancers_and_one_killed(three, client):
    control = MultiControl(
        [(f"lb{i + 1}", HttpControl(lb.admin, timeout_s=1.0, reconnect_for_s=1.0))
         for i, lb in enumerate(three)],
        timeout_s=2.0,
    )  # fmt: skip
    app = MultiApp(control, refresh_s=0.1)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await _watch(pilot, app, client, three)
    finally:
        await control.aclose()


async def _watch(pilot: Any, app: MultiApp, client: aiohttp.ClientSession, lbs: Any) -> None:
    lb1, lb2, lb3 = lbs
    text = await wait_text(pilot, "3 of 3 live", 20)
    assert text.count("● live") == 4  # three balancers and the header's link
    # traffic through two of them: each backend row is the sum
    await send(client, lb1, 10)
    await send(client, lb2, 20)

    def summed() -> bool:
        s = app.snapshot
        return s is not None and [b.requests_total for b in s.backends] == [15, 15]

    await wait_for(pilot, summed, "rows summed over the balancers", 15)
    breakdown = str(app.breakdown.render())
    assert "on each balancer" in breakdown
    for name in ("lb1", "lb2", "lb3"):
        assert name in breakdown

    # d on b1 with every balancer the target: each drains, one notice lists them all
    before = len(app._notifications)
    await pilot.press("d")
    title, message = await notice(pilot, app, before, "the drain's notice")
    assert title == "✓ drain b1 on 3 balancers"
    assert message == "lb1 ✓ · lb2 ✓ · lb3 ✓"
    await wait_for(pilot, lambda: admin_on(app, "b1") == ["draining"] * 3, "drained on all", 15)

    def tagged() -> set[str | None]:
        return {e.balancer for e in app.events if isinstance(e, AdminChanged)}

    await wait_for(pilot, lambda: tagged() == {"lb1", "lb2", "lb3"}, "events from each", 15)
    log = " ".join(screen_text(app).split())
    for name in ("lb1", "lb2", "lb3"):
        assert f"{name} action b1 admin state active → draining" in log

    # one balancer process killed: its share greys, the others stay live
    await lb3.kill()
    await wait_text(pilot, "2 of 3 live", 20)
    await wait_text(pilot, "✖ gone")
    assert app.link.ok
    assert "● live" in str(app.query_one("#totals-1").render())
    assert not app.query_one("#body").has_class("-stale")
    gone = app.multi.balancers[2]
    assert not gone.reachable
    assert "unreachable" in gone.problem
    await send(client, lb1, 6)  # b1 is draining: all six go to b2
    await wait_for(
        pilot,
        lambda: app.snapshot is not None and app.snapshot.totals.requests_total == 36,
        "the live balancers' figures keep moving",
        15,
    )
    await wait_for(pilot, lambda: "lb3 " in str(app.breakdown.render()), "breakdown")
    assert "ago" in str(app.breakdown.render())  # lb3's last figures, with their age

    # undrain on every balancer: two do it, the killed one cannot, and the notice says so
    before = len(app._notifications)
    await pilot.press("d")
    title, message = await notice(pilot, app, before, "the undrain's notice")
    assert title == "undrain b1 partly done on 3 balancers"
    assert message.startswith("lb1 ✓ · lb2 ✓ · lb3 ✖ ")
    await wait_for(
        pilot, lambda: admin_on(app, "b1")[:2] == ["active", "active"], "undrained on two", 15
    )

    # t: actions to lb1 only
    await pilot.press("t")
    await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen), "the selector")
    await pilot.press("down", "enter")
    await wait_text(pilot, "actions → lb1")
    before = len(app._notifications)
    await pilot.press("d")
    title, message = await notice(pilot, app, before, "the drain on lb1's notice")
    assert (title, message) == ("✓ drain b1 on lb1", "lb1 ✓")
    await wait_for(
        pilot, lambda: admin_on(app, "b1")[:2] == ["draining", "active"], "drained on lb1", 15
    )


async def test_read_only_console_over_two_refuses_for_both(three):
    lb1, lb2, _ = three
    members = [(n, HttpControl(lb.admin, read_only=True)) for n, lb in (("a", lb1), ("b", lb2))]
    control = MultiControl(members, read_only=True)
    app = MultiApp(control, refresh_s=0.1)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_text(pilot, "2 of 2 live", 20)
            assert "READ-ONLY" in screen_text(app)
            footer = str(app.query_one("#keys").render())
            assert "act on" not in footer
            assert "drain" not in footer
            before = len(app._notifications)
            await pilot.press("d")
            _, message = await notice(pilot, app, before, "refused")
            assert "read-only" in message
            await pilot.pause(0.3)
            assert admin_on(app, "b1") == ["active", "active"]
    finally:
        await control.aclose()


def test_attach_names_each_url_and_refuses_what_it_cannot_do(capsys):
    from lbtui.cli import main
    from lbtui.errors import UsageError
    from lbtui.tui.command import members

    one_host = members(["http://127.0.0.1:9901", "http://127.0.0.1:9902"])
    assert one_host == [(":9901", "http://127.0.0.1:9901"), (":9902", "http://127.0.0.1:9902")]
    assert members(["eu=http://10.0.0.1:9901", "http://10.0.0.2:9901"]) == [
        ("eu", "http://10.0.0.1:9901"),
        ("10.0.0.2:9901", "http://10.0.0.2:9901"),
    ]
    with pytest.raises(UsageError, match="same name"):
        members(["a=http://10.0.0.1:1", "a=http://10.0.0.2:2"])
    with pytest.raises(UsageError, match="expected an http"):
        members(["http://10.0.0.1:1", "ftp://10.0.0.2:21"])
    code = main(["attach", "http://127.0.0.1:1", "http://127.0.0.1:2", "--target", "http://x:3"])
    assert code == 2
    assert "--target: chaos runs drive one balancer" in capsys.readouterr().err
