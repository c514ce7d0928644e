"""One contract for every source a console attaches to, each with the real thing behind it:
lbtui's admin API (``lbtui serve``, a process), HAProxy's Runtime API (Debian's ``haproxy``),
and Prometheus (Debian's ``prometheus``) scraping that HAProxy's exporter and that lbtui's
``/metrics``. All of them front the same three origins, so the same traffic and the same
assertions run on each: the console cannot tell them apart except by what they can do.

What a source cannot do it refuses with ``Unavailable`` and the reason its snapshot's
``unavailable`` announces (or ``ReadOnly`` when it only watches); the lbtui-specific contract
(limits, breakers, faults, fleet) is ``tests/integration/test_control_contract.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from lbtui.control.errors import NotFound, ReadOnly, Unavailable
from lbtui.control.interface import Control
from lbtui.control.model import Event, SetAdmin, SetWeight, Snapshot
from lbtui.sources import open_control
from lbtui.sources.presets import PRESETS
from lbtui.sources.prometheus import PrometheusControl
from tests.integration.test_control_contract import every_action
from tests.sources.prom_rig import LbtuiRig, PrometheusRig
from tests.sources.rig import HaproxyRig

SOURCES = ["lbtui", "haproxy", "prometheus-haproxy", "prometheus-lbtui"]


@dataclass
class Source:
    kind: str
    url: str
    control: Control
    get: Callable[[], str]
    """One request through the balancer this source watches: the origin that answered."""
    prefix: str
    """How the source names origin ``s1``: ``be_app/`` on HAProxy, nothing on lbtui."""

    @property
    def steers(self) -> bool:
        return not self.kind.startswith("prometheus")

    async def send(self, n: int) -> Counter[str]:
        answered = await asyncio.to_thread(lambda: [self.get() for _ in range(n)])
        return Counter(self.prefix + a for a in answered)


@pytest.fixture(params=SOURCES)
async def source(
    request: pytest.FixtureRequest, haproxy: HaproxyRig, lbtui_serve: LbtuiRig
) -> AsyncIterator[Callable[..., Source]]:
    made: list[Control] = []

    def make(*, read_only: bool = False) -> Source:
        kind = request.param
        if kind == "lbtui":
            url, get, prefix = lbtui_serve.admin_url, lbtui_serve.get, ""
        elif kind == "haproxy":
            url, get, prefix = haproxy.url, haproxy.get, "be_app/"
        else:
            prom: PrometheusRig = request.getfixturevalue("prometheus")
            preset = kind.removeprefix("prometheus-")
            url = prom.url
            get, prefix = (haproxy.get, "be_app/") if preset == "haproxy" else (lbtui_serve.get, "")
        if kind.startswith("prometheus"):
            fast = dataclasses.replace(PRESETS[preset], window="3s", window_s=3.0)
            control: Control = PrometheusControl(url, fast)
        else:
            control = open_control(url, read_only=read_only)
        made.append(control)
        return Source(kind, url, control, get, prefix)

    yield make
    for control in made:
        if control.describe_target().startswith("http://") and not control.read_only:
            for name in ("s1", "s2", "s3"):
                await control.act(SetAdmin(backend=name, state="active"))
                await control.act(SetWeight(backend=name, weight=1))
        await control.aclose()


async def eventually(cond: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.1)


async def test_describe_target_is_the_url(source) -> None:
    s = source()
    assert s.control.describe_target() == s.url


async def test_rows_and_rates_after_traffic(source) -> None:
    s = source()
    names = [s.prefix + n for n in ("s1", "s2", "s3")]
    await s.control.snapshot()  # a source that counts from its reads has its baseline
    await s.send(30)

    async def counted() -> bool:
        snap = await s.control.snapshot()
        return [b.name for b in snap.backends] == names and all(
            b.rps > 0 and b.requests_total >= 10 for b in snap.backends
        )

    try:
        await eventually(counted)
    except AssertionError:
        snap = await s.control.snapshot()
        raise AssertionError([(b.name, b.rps, b.requests_total) for b in snap.backends]) from None
    snap = await s.control.snapshot()
    assert snap.totals.rps > 0
    assert all(b.admin == "active" and b.eligible for b in snap.backends)
    assert all(b.error_ratio == 0 for b in snap.backends)
    assert Snapshot.from_json(snap.to_json_bytes()) == snap
    assert [p.name for p in snap.pools] != []
    assert sorted(n for p in snap.pools for n in p.backends) == names


async def test_events_list_and_stream_in_order(source) -> None:
    s = source()
    snap = await s.control.snapshot()
    events = await s.control.events()
    assert events
    assert all(isinstance(e, Event) for e in events)
    assert [e.id for e in events] == sorted({e.id for e in events})
    assert snap.last_event_id >= events[-1].id
    assert await s.control.events(events[-1].id) == []
    backlog: list[Event] = []
    async with asyncio.timeout(10):
        async for e in s.control.stream_events(0):
            backlog.append(e)
            if e.id == events[-1].id:
                break
    assert [e.id for e in backlog] == [e.id for e in events]


async def test_drain_and_weight_or_refused(source) -> None:
    s = source()
    first, second = s.prefix + "s1", s.prefix + "s2"
    if not s.steers:
        assert s.control.read_only
        with pytest.raises(ReadOnly):
            await s.control.act(SetAdmin(backend=first, state="draining"))
        return
    await s.control.act(SetAdmin(backend=first, state="draining"))
    assert first not in await s.send(9)
    view = (await s.control.snapshot()).backend(first)
    assert view.admin == "draining"
    assert view.weight_effective == 0
    await s.control.act(SetAdmin(backend=first, state="active"))
    await s.control.act(SetWeight(backend=second, weight=3))
    assert (await s.control.snapshot()).backend(second).weight_configured == 3
    await s.control.act(SetAdmin(backend=second, state="disabled"))
    assert second not in await s.send(6)
    assert (await s.control.snapshot()).backend(second).admin == "disabled"
    await s.control.act(SetAdmin(backend=second, state="active"))
    await s.control.act(SetWeight(backend=second, weight=1))
    with pytest.raises(NotFound):
        await s.control.act(SetAdmin(backend=s.prefix + "nope", state="draining"))
    actions = [e for e in await s.control.events() if e.kind == "action"]
    assert len(actions) >= 6  # every change this console made is on its timeline


async def test_every_action_done_or_refused_with_why(source) -> None:
    s = source()
    snap = await s.control.snapshot()
    name = s.prefix + "s3"
    for action in every_action(name, "http://127.0.0.1:9"):
        if action.kind in ("remove_backend", "add_backend", "set_forward") and s.kind == "lbtui":
            continue  # the lbtui contract covers them (this rig has no routes to forward)
        refused: Exception | None = None
        try:
            await s.control.act(action)
        except (Unavailable, ReadOnly) as exc:
            refused = exc
        if refused is None:
            assert s.steers
            assert action.kind not in snap.unavailable
        elif isinstance(refused, ReadOnly):
            assert not s.steers
        else:
            assert isinstance(refused, Unavailable)
            assert refused.message
            assert refused.message == snap.unavailable.get(action.kind, refused.message)
    if s.kind == "haproxy":
        assert {"set_fault", "force_breaker", "set_algorithm", "set_limits"} <= set(
            snap.unavailable
        )


async def test_read_only_refuses_and_reads(source) -> None:
    s = source(read_only=True)
    assert s.control.read_only
    for action in every_action(s.prefix + "s1", "http://127.0.0.1:9"):
        with pytest.raises(ReadOnly):
            await s.control.act(action)
    assert len((await s.control.snapshot()).backends) == 3
