"""``lbtui demo --replicas 3``'s data plane, as the console sees it: three balancers sharing one
limit through a ``redis-server`` the demo started, each knowing the others; killing a replica
greys it out and the others serve on; stopping the store is an event and 0 on the metric, and
starting it again brings the replicas back to sharing, without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from lbtui.control.model import ReplicaKill, ReplicaRestart, Snapshot, StoreStart, StoreStop
from lbtui.control.multi import MultiControl
from lbtui.demo import DataPlaneProcess, DemoOptions
from lbtui.fleet.redis_server import INSTALL_HINT, redis_server_path

pytestmark = pytest.mark.skipif(redis_server_path() is None, reason=INSTALL_HINT)


@pytest.fixture
def dataplane() -> Iterator[DataPlaneProcess]:
    dp = DataPlaneProcess(DemoOptions(backends=2, rate=60.0, replicas=3))
    dp.start()
    yield dp
    dp.stop()


Cond = Callable[[Snapshot, MultiControl], bool]


async def wait_for_snapshot(control: MultiControl, cond: Cond, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond(await control.snapshot(), control):
        if time.monotonic() > deadline:
            raise AssertionError(f"not met in time; balancers: {control.balancers}")
        await asyncio.sleep(0.2)


async def test_three_replicas_share_one_store_and_survive_kills_and_outages(
    dataplane: DataPlaneProcess,
) -> None:
    control = dataplane.control
    assert isinstance(control, MultiControl)
    try:
        await replicas_under_chaos(dataplane, control)
    finally:
        await control.aclose()  # on this test's loop: its HTTP clients belong to it


async def replicas_under_chaos(dataplane: DataPlaneProcess, control: MultiControl) -> None:
    names = ["replica-1", "replica-2", "replica-3"]
    assert control.names == names
    assert "redis://127.0.0.1" in dataplane.store_note
    await wait_for_snapshot(control, lambda s, c: all(b.reachable for b in c.balancers))
    first = next(b for b in control.balancers if b.name == "replica-1")
    assert first.snapshot is not None
    await wait_for_snapshot(
        control,
        lambda s, c: all(
            b.snapshot is not None and b.snapshot.limits.peers == names for b in c.balancers
        ),
    )
    assert first.snapshot.limits.store_up is True

    control.select("replica-1")  # replica-1's admin API acts on the others and on the store
    await control.act(ReplicaKill(replica="replica-3"))
    await wait_for_snapshot(
        control,
        lambda s, c: [b.name for b in c.balancers if not b.reachable] == ["replica-3"],
    )
    await control.act(ReplicaRestart(replica="replica-3"))
    await wait_for_snapshot(control, lambda s, c: all(b.reachable for b in c.balancers))

    await control.act(StoreStop())
    await wait_for_snapshot(
        control,
        lambda s, c: all(b.snapshot and b.snapshot.limits.store_up is False for b in c.balancers),
    )
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(dataplane.admin_url + "/metrics")).text
    assert "lbtui_limit_store_up 0.0" in metrics
    await control.act(StoreStart())
    await wait_for_snapshot(
        control,
        lambda s, c: all(b.snapshot and b.snapshot.limits.store_up for b in c.balancers),
    )
    kinds = [e.message for e in await control.events()]
    assert any("replica replica-3 killed" in m for m in kinds)
    assert any("limit store" in m and "lost" in m for m in kinds)
    async with httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {dataplane.token}"}
        load = (await http.get(dataplane.admin_url + "/api/v1/load", headers=auth)).json()
    assert load["target_rate"] == pytest.approx(60.0)
    assert load["status_rates"].get("5xx", 0.0) == 0.0
