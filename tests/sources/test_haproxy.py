"""``HaproxyControl`` against a real HAProxy: what it reads, the events it makes of changes
(with HAProxy's check result), what its actions do to HAProxy, and what it refuses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from lbtui.control.errors import Invalid, NotFound, ReadOnly, Unavailable
from lbtui.control.model import (
    AdminChanged,
    Announce,
    FaultSpec,
    HealthChanged,
    SetAdmin,
    SetFault,
    SetWeight,
    Snapshot,
)
from lbtui.sources.haproxy import HaproxyControl
from tests.sources.rig import HaproxyRig


async def eventually(cond: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.05)


async def test_snapshot_reads_servers_frontends_and_rates(haproxy: HaproxyRig) -> None:
    control = HaproxyControl(haproxy.url)
    snap = await control.snapshot()
    assert snap.source == "haproxy"
    assert [b.name for b in snap.backends] == ["be_app/s1", "be_app/s2", "be_app/s3"]
    assert [f.name for f in snap.frontends] == ["fe_main", "fe_metrics"]
    assert snap.algorithm == "roundrobin"
    assert [p.name for p in snap.pools] == ["be_app"]
    s1 = snap.backend("be_app/s1")
    assert s1.server is not None
    assert s1.server.status == "UP"
    assert s1.server.check_status == "L4OK"
    assert s1.health is not None
    assert s1.health.state == "up"
    assert (s1.admin, s1.weight_configured, s1.weight_effective) == ("active", 1, 1)
    assert s1.p99_ms is None  # HAProxy has no percentiles
    assert "set_fault" in snap.unavailable

    before = s1.requests_total
    seen = await asyncio.to_thread(lambda: [haproxy.get() for _ in range(30)])
    assert sorted(set(seen)) == ["s1", "s2", "s3"]

    async def counted() -> bool:
        s = await control.snapshot()
        return s.backend("be_app/s1").requests_total == before + 10 and s.totals.rps > 0

    await eventually(counted)
    snap = await control.snapshot()
    assert snap.backend("be_app/s1").rps > 0
    assert snap.frontends[0].rps > 0
    assert snap.frontends[0].requests_total >= 30
    assert Snapshot.from_json(snap.to_json()) == snap


async def test_a_server_going_down_is_an_event_with_haproxys_reason(haproxy: HaproxyRig) -> None:
    control = HaproxyControl(haproxy.url)
    await control.snapshot()
    haproxy.stop_origin("s2")

    async def down() -> bool:
        await control.snapshot()
        return any(isinstance(e, HealthChanged) for e in await control.events())

    await eventually(down)
    event = next(e for e in await control.events() if isinstance(e, HealthChanged))
    assert (event.backend, event.old, event.new) == ("be_app/s2", "up", "down")
    assert "L4CON" in event.message
    assert event.origin == "haproxy"
    view = (await control.snapshot()).backend("be_app/s2")
    assert view.server is not None
    assert view.server.status == "DOWN"
    assert view.server.check_status == "L4CON"
    assert not view.eligible
    assert view.weight_effective == 0


async def test_drain_maint_ready_and_weight_change_haproxy(haproxy: HaproxyRig) -> None:
    control = HaproxyControl(haproxy.url)
    await control.act(SetAdmin(backend="be_app/s1", state="draining"))
    assert haproxy.server_status("s1") == "DRAIN"
    seen = await asyncio.to_thread(lambda: [haproxy.get() for _ in range(12)])
    assert "s1" not in seen
    await control.act(SetAdmin(backend="be_app/s2", state="disabled"))
    assert haproxy.server_status("s2") == "MAINT"
    seen = await asyncio.to_thread(lambda: [haproxy.get() for _ in range(6)])
    assert set(seen) == {"s3"}
    await control.act(SetWeight(backend="be_app/s3", weight=7))
    assert haproxy.server_weight("s3") == 7
    snap = await control.snapshot()
    assert snap.backend("be_app/s1").admin == "draining"
    assert snap.backend("be_app/s2").admin == "disabled"
    assert snap.backend("be_app/s3").weight_configured == 7
    # on the timeline once each: the poll does not repeat what the console did
    actions = [e for e in await control.events() if e.kind == "action"]
    assert [(e.backend, e.message.split(" (")[0]) for e in actions] == [
        ("be_app/s1", "UP → DRAIN"),
        ("be_app/s2", "UP → MAINT"),
        ("be_app/s3", "weight 1 → 7"),
    ]
    assert await control.rollback() == ["be_app/s1", "be_app/s2", "be_app/s3"]
    assert haproxy.server_weight("s3") == 1
    assert haproxy.server_status("s1").startswith("UP")
    assert haproxy.server_status("s2").startswith("UP")


async def test_a_change_made_elsewhere_is_an_event(haproxy: HaproxyRig) -> None:
    control = HaproxyControl(haproxy.url)
    await control.snapshot()
    haproxy.command("set server be_app/s3 state drain")

    async def seen() -> bool:
        await control.snapshot()
        return any(isinstance(e, AdminChanged) for e in await control.events())

    await eventually(seen)
    e = next(e for e in await control.events() if isinstance(e, AdminChanged))
    assert (e.backend, e.old, e.new, e.origin) == ("be_app/s3", "active", "draining", "haproxy")


async def test_what_haproxy_cannot_do_is_unavailable_with_why(haproxy: HaproxyRig) -> None:
    control = HaproxyControl(haproxy.url)
    with pytest.raises(Unavailable, match="cannot inject faults"):
        await control.act(SetFault(backend="be_app/s1", fault=FaultSpec(kind="delay", ms=5)))  # type: ignore[arg-type]
    with pytest.raises(Invalid) as err:
        await control.act(SetWeight(backend="be_app/s1", weight=300))
    assert err.value.field == "weight"
    with pytest.raises(NotFound):
        await control.act(SetAdmin(backend="be_app/nope", state="draining"))
    await control.act(Announce(text="chaos x started"))
    assert (await control.events())[-1].message == "chaos x started"


async def test_read_only_refuses_and_still_reads(haproxy: HaproxyRig) -> None:
    control = HaproxyControl(haproxy.url, read_only=True)
    with pytest.raises(ReadOnly):
        await control.act(SetAdmin(backend="be_app/s1", state="draining"))
    assert haproxy.server_status("s1") == "UP"
    assert len((await control.snapshot()).backends) == 3


async def test_unreachable_socket_is_unavailable(tmp_path) -> None:
    control = HaproxyControl(f"unix://{tmp_path}/none.sock", timeout_s=1)
    with pytest.raises(Unavailable, match="unreachable"):
        await control.snapshot()
