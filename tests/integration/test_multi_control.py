"""``MultiControl`` over several real balancers, each with its admin API, all in front of the
same backends: figures summed, events merged and tagged, actions to all or to one with each
one's result, one balancer gone while the others stay live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from lbtui.balancer.server import BalancerServer
from lbtui.config import AdminConfig
from lbtui.control.api import AdminServer
from lbtui.control.client import HttpControl
from lbtui.control.errors import NotFound, ReadOnly, Unavailable
from lbtui.control.local import LocalControl
from lbtui.control.model import AdminChanged, SetAdmin, SetWeight
from lbtui.control.multi import MultiControl, PartlyDone, collect_outcomes
from tests.integration.conftest import TestBackend


@dataclass
class Fleet:
    control: MultiControl
    lbs: list[BalancerServer]
    admins: list[AdminServer]
    backends: list[TestBackend]
    client: aiohttp.ClientSession

    async def send(self, lb: int, n: int) -> None:
        for _ in range(n):
            async with self.client.get(self.lbs[lb].url + "/") as r:
                await r.read()
                assert r.status == 200


@pytest.fixture
async def fleet(backends, balancer, client) -> AsyncIterator[Callable[..., Awaitable[Fleet]]]:
    made: list[tuple[MultiControl, list[AdminServer]]] = []

    async def make(n: int = 2, *, read_only: bool = False, **sections: Any) -> Fleet:
        bs = await backends(2)
        lbs = [await balancer(bs, **sections) for _ in range(n)]
        admins = []
        for lb in lbs:
            admin = AdminServer(
                AdminConfig(address="127.0.0.1:0"), LocalControl(lb.proxy), keepalive_s=0.5,
                environ={},
            )  # fmt: skip
            await admin.start()
            admins.append(admin)
        members = [
            (f"lb{i + 1}", HttpControl(a.url, timeout_s=1.0, reconnect_for_s=1.0))
            for i, a in enumerate(admins)
        ]
        control = MultiControl(members, read_only=read_only, timeout_s=2.0)
        made.append((control, admins))
        return Fleet(control, lbs, admins, bs, client)

    yield make
    for control, admins in made:
        await control.aclose()
        for a in admins:
            await a.stop()


async def eventually(cond: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


async def test_figures_are_summed_over_the_balancers(fleet):
    f = await fleet(3)
    await f.send(0, 10)
    await f.send(1, 20)
    snap = await f.control.snapshot()
    assert snap.totals.requests_total == 30  # the third took none
    assert [b.name for b in snap.backends] == ["b1", "b2"]
    for view in snap.backends:
        assert view.requests_total == 15
        assert view.responses_total["2xx"] == 15
        assert view.rps > 0
        assert view.rps_series[-1] == pytest.approx(view.rps)
        # p99: the highest of the balancers' own
        own = [lb.backend(view.name).p99_ms for lb in _own(f.control)]
        assert view.p99_ms == max(p for p in own if p is not None)
    assert snap.totals.rps == pytest.approx(sum(s.totals.rps for s in _own(f.control)))
    assert snap.imbalance == pytest.approx(0, abs=1e-6)
    views = f.control.balancers
    assert [(v.name, v.reachable) for v in views] == [("lb1", True), ("lb2", True), ("lb3", True)]
    assert [v.snapshot.totals.requests_total for v in views if v.snapshot] == [10, 20, 0]


def _own(control: MultiControl) -> list[Any]:
    return [v.snapshot for v in control.balancers if v.snapshot is not None]


async def test_events_are_merged_in_time_order_and_tagged(fleet):
    f = await fleet(2)
    await f.control.events()  # the timeline so far
    f.control.select("lb2")
    await f.control.act(SetAdmin(backend="b1", state="draining"))
    f.control.select("lb1")
    await f.control.act(SetAdmin(backend="b2", state="draining"))
    f.control.select(None)
    events = [e for e in await f.control.events() if isinstance(e, AdminChanged)]
    assert [(e.balancer, e.backend) for e in events] == [("lb2", "b1"), ("lb1", "b2")]
    ids = [e.id for e in await f.control.events()]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert events[0].wall <= events[1].wall
    # streamed: the same timeline, then live ones from any balancer, each tagged
    got: list[Any] = []

    async def consume() -> None:
        async for e in f.control.stream_events(events[-1].id):
            got.append(e)
            if len(got) == 2:
                return

    task = asyncio.create_task(consume())
    await f.admins[1].control.act(SetWeight(backend="b1", weight=3))
    await f.admins[0].control.act(SetWeight(backend="b2", weight=4))
    async with asyncio.timeout(10):
        await task
    assert sorted((e.balancer, e.backend) for e in got) == [("lb1", "b2"), ("lb2", "b1")]
    assert got[1].id == got[0].id + 1


async def test_an_action_goes_to_every_balancer_or_the_one_chosen(fleet):
    f = await fleet(3)
    with collect_outcomes() as outcomes:
        await f.control.act(SetAdmin(backend="b1", state="draining"))
    assert [o.text() for o in outcomes] == ["lb1 ✓", "lb2 ✓", "lb3 ✓"]
    assert all(lb.proxy.backends["b1"].admin.value == "draining" for lb in f.lbs)
    f.control.select("lb2")
    with collect_outcomes() as outcomes:
        await f.control.act(SetAdmin(backend="b1", state="active"))
    assert [o.text() for o in outcomes] == ["lb2 ✓"]
    states = [lb.proxy.backends["b1"].admin.value for lb in f.lbs]
    assert states == ["draining", "active", "draining"]
    with pytest.raises(NotFound):  # one chosen: its own error, unchanged
        await f.control.act(SetAdmin(backend="nope", state="active"))
    f.control.select(None)
    with pytest.raises(NotFound) as err:  # every one refuses: the same class, each named
        await f.control.act(SetAdmin(backend="nope", state="active"))
    assert "lb1 ✖" in err.value.message
    assert "lb3 ✖" in err.value.message
    with pytest.raises(ValueError):
        f.control.select("lb9")


async def test_one_balancer_gone_the_others_stay_live(fleet):
    f = await fleet(3)
    await f.send(0, 6)
    await f.send(2, 6)
    await f.control.snapshot()
    await f.admins[2].stop()
    snap = await f.control.snapshot()  # no exception: two still answer
    assert snap.totals.requests_total == 6  # lb3's share dropped out of the sums
    lb3 = f.control.balancers[2]
    assert not lb3.reachable
    assert lb3.problem
    assert lb3.snapshot is not None
    assert lb3.snapshot.totals.requests_total == 6
    await f.send(1, 4)
    assert (await f.control.snapshot()).totals.requests_total == 10
    with collect_outcomes() as outcomes, pytest.raises(PartlyDone) as err:
        await f.control.act(SetAdmin(backend="b2", state="draining"))
    assert [o.ok for o in outcomes] == [True, True, False]
    assert "lb1 ✓; lb2 ✓; lb3 ✖" in err.value.message
    assert f.lbs[0].proxy.backends["b2"].admin.value == "draining"
    for a in f.admins[:2]:
        await a.stop()
    with pytest.raises(Unavailable, match="no balancer answers"):
        await f.control.snapshot()


async def test_read_only_holds_for_every_balancer(fleet):
    f = await fleet(2, read_only=True)
    with pytest.raises(ReadOnly):
        await f.control.act(SetAdmin(backend="b1", state="draining"))
    assert all(lb.proxy.backends["b1"].admin.value == "active" for lb in f.lbs)
