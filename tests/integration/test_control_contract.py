"""One contract for the ``Control`` implementations: ``LocalControl`` (in-process),
``HttpControl`` (through the admin API), ``ThreadedControl``, ``MultiControl`` over one
balancer, and (for actions) ``RecordedControl``, against a real balancer and real backends.
The same assertions run on each, so ``lbtui attach`` cannot drift from ``lbtui demo``."""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from lbtui.config import AdminConfig
from lbtui.control.api import AdminServer
from lbtui.control.client import HttpControl
from lbtui.control.errors import Conflict, Invalid, NotFound, ReadOnly, Unavailable
from lbtui.control.interface import Control
from lbtui.control.local import LocalControl
from lbtui.control.model import (
    ACTION_KINDS,
    Action,
    AddBackend,
    AdminChanged,
    Announce,
    ClearFault,
    Event,
    FaultSpec,
    FleetKill,
    FleetKnobs,
    FleetRestart,
    ForceBreaker,
    GenericEvent,
    RemoveBackend,
    ReplicaKill,
    ReplicaRestart,
    SetAdmin,
    SetAlgorithm,
    SetFault,
    SetForward,
    SetLimits,
    SetWeight,
    Snapshot,
    StoreStart,
    StoreStop,
    event_to_json_bytes,
)
from lbtui.control.multi import MultiControl
from lbtui.control.threaded import ThreadedControl
from lbtui.tui.recorded import RecordedControl
from tests.integration.conftest import TestBackend

TOKEN = "contract"


@dataclass
class Rig:
    control: Control
    lb: Any
    backends: list[TestBackend]
    client: aiohttp.ClientSession

    async def send(self, n: int) -> collections.Counter[str]:
        """``n`` GETs through the balancer, one after another; who answered each."""
        seen: collections.Counter[str] = collections.Counter()
        for _ in range(n):
            async with self.client.get(self.lb.url + "/") as r:
                await r.read()
                seen[r.headers.get("X-Backend", str(r.status))] += 1
        return seen


async def build_control(
    kind: str, lb: Any, read_only: bool, made: list[tuple[Control, AdminServer | None]]
) -> Control:
    local = LocalControl(lb.proxy)
    if kind == "recorded":
        return RecordedControl(local.snapshot_now(), read_only=read_only)
    if kind in ("local", "threaded"):
        local.read_only = read_only
        made.append((local, None))
        if kind == "threaded":
            # Every call handed over with run_coroutine_threadsafe, as ``lbtui demo`` does
            # (here to the balancer's own loop, which this test runs on).
            return ThreadedControl(local, asyncio.get_running_loop())
        return local
    server = AdminServer(
        AdminConfig(address="127.0.0.1:0", token=TOKEN), local, keepalive_s=0.5, environ={}
    )
    await server.start()
    http = HttpControl(server.url, TOKEN, read_only=read_only, reconnect_for_s=2.0)
    if kind == "multi":
        # ``lbtui attach URL URL…`` over one balancer: that balancer, unchanged
        multi = MultiControl([("lb", http)], read_only=read_only)
        made.append((multi, server))
        return multi
    made.append((http, server))
    return http


def _rig_fixture(kinds: list[str]) -> Any:
    @pytest.fixture(params=kinds)
    async def fixture(
        request, backends, balancer, client
    ) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
        made: list[tuple[Control, AdminServer | None]] = []

        async def make(n: int = 2, *, read_only: bool = False, **sections: Any) -> Rig:
            bs = await backends(n)
            lb = await balancer(bs, **sections)
            control = await build_control(request.param, lb, read_only, made)
            return Rig(control, lb, bs, client)

        yield make
        for control, server in made:
            await control.aclose()
            if server is not None:
                await server.stop()

    return fixture


rig = _rig_fixture(["local", "http", "threaded", "multi"])
"""The controls that steer a real balancer: the whole contract."""
any_control = _rig_fixture(["local", "http", "threaded", "multi", "recorded"])
"""Every control, the recorded one too: the action contract."""


async def eventually(cond: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


async def test_describe_target(rig):
    r = await rig()
    target = r.control.describe_target()
    assert target == "in-process" or target.startswith("http://127.0.0.1:")


async def test_snapshot_shows_backends_and_rates_after_traffic(rig):
    r = await rig(2)
    b1, b2 = (b.name for b in r.backends)
    snap = await r.control.snapshot()
    assert isinstance(snap, Snapshot)
    assert [b.name for b in snap.backends] == [b1, b2]
    assert snap.totals.requests_total == 0

    await r.send(40)
    snap = await r.control.snapshot()
    assert snap.algorithm == "round_robin"
    assert snap.totals.requests_total == 40
    assert snap.totals.responses_total["2xx"] == 40
    assert snap.totals.rps > 0
    assert snap.totals.success_ratio == 1.0
    assert sum(snap.totals.rps_series) > 0
    for view in snap.backends:
        assert view.requests_total == 20
        assert view.responses_total["2xx"] == 20
        assert view.in_flight == 0
        assert view.rps > 0
        assert view.rps_series[-1] == view.rps  # the sparkline ends with the table's figure
        assert view.p50_ms is not None
        assert view.p90_ms is not None
        assert view.p99_ms is not None
        assert view.p999_ms is not None
        assert 0 < view.p50_ms <= view.p90_ms <= view.p99_ms <= view.p999_ms
        assert view.error_ratio == 0
        assert view.bytes_per_s > 0
        assert view.admin == "active"
        assert view.breaker is not None
        assert view.breaker.state == "closed"
        assert view.breaker.calls == 20
        assert view.health is None  # no active checks configured
        assert not view.ejected
        assert view.weight_effective == view.weight_configured == 1
        assert view.connections_source in ("connector", "in_flight")
        assert view.open_connections >= 0
    # round robin over two equal backends: perfectly balanced, nothing over a cap
    assert snap.imbalance == pytest.approx(0, abs=1e-9)
    assert snap.overload == 0
    assert snap.last_event_id == r.lb.proxy.events.last_id


async def test_drain_stops_new_requests(rig):
    r = await rig(2)
    first, second = r.backends
    await r.control.act(SetAdmin(backend=first.name, state="draining"))
    before = first.hits
    seen = await r.send(10)
    assert first.hits == before
    assert seen == {second.name: 10}
    view = (await r.control.snapshot()).backend(first.name)
    assert view.admin == "draining"
    assert view.weight_effective == 0
    await r.control.act(SetAdmin(backend=first.name, state="active"))
    assert (await r.send(10)) == {first.name: 5, second.name: 5}
    await r.control.act(SetAdmin(backend=second.name, state="disabled"))
    assert (await r.send(4)) == {first.name: 4}
    assert (await r.control.snapshot()).backend(second.name).admin == "disabled"


async def test_set_weight(rig):
    r = await rig(2, balancer={"algorithm": "weighted_round_robin"})
    a, b = (x.name for x in r.backends)
    await r.control.act(SetWeight(backend=a, weight=3))
    view = (await r.control.snapshot()).backend(a)
    assert view.weight_configured == 3
    assert view.weight_effective == 3
    assert (await r.send(40)) == {a: 30, b: 10}
    await r.control.act(SetWeight(backend=b, weight=0))
    assert (await r.send(8)) == {a: 8}


async def test_set_algorithm_changes_distribution(rig):
    r = await rig(2)
    a, b = (x.name for x in r.backends)
    await r.control.act(SetWeight(backend=a, weight=3))
    assert (await r.send(40)) == {a: 20, b: 20}  # round robin ignores weights
    await r.control.act(SetAlgorithm(algorithm="weighted_round_robin"))
    assert (await r.control.snapshot()).algorithm == "weighted_round_robin"
    assert (await r.send(40)) == {a: 30, b: 10}
    with pytest.raises(Invalid) as err:
        await r.control.act(SetAlgorithm(algorithm="fastest"))
    assert err.value.field == "algorithm"
    assert (await r.control.snapshot()).algorithm == "weighted_round_robin"


async def test_force_breaker_open_stops_traffic_and_shows(rig):
    r = await rig(2)
    a, b = (x.name for x in r.backends)
    await r.control.act(ForceBreaker(backend=a, mode="open"))
    view = (await r.control.snapshot()).backend(a)
    assert view.breaker is not None
    assert view.breaker.state == "forced_open"
    assert view.breaker.reason == "forced by operator"
    assert (await r.send(10)) == {b: 10}
    await r.control.act(ForceBreaker(backend=a, mode="auto"))
    assert (await r.control.snapshot()).backend(a).breaker.state == "closed"  # type: ignore[union-attr]
    assert (await r.send(10)) == {a: 5, b: 5}
    events = await r.control.events()
    transitions = [e for e in events if e.kind == "breaker" and e.backend == a]
    assert [(e.data["old"], e.data["new"]) for e in transitions] == [
        ("closed", "forced_open"),
        ("forced_open", "closed"),
    ]
    # forcing the state it is already in is still on the timeline
    await r.control.act(ForceBreaker(backend=a, mode="auto"))
    assert (await r.control.events())[-1].message == "breaker force auto: no change"


async def test_events_appear_and_stream(rig):
    r = await rig(2)
    a, b = (x.name for x in r.backends)
    await r.control.act(SetAdmin(backend=a, state="draining"))
    events = await r.control.events()
    assert all(isinstance(e, Event) for e in events)
    last = events[-1]
    assert (last.kind, last.backend, last.data["action"]) == ("action", a, "draining")
    assert last.wall > 1e9
    assert await r.control.events(last.id) == []

    got: list[Event] = []

    async def consume() -> None:
        async for e in r.control.stream_events(last.id):
            got.append(e)
            if len(got) == 2:
                return

    task = asyncio.create_task(consume())
    await r.control.act(SetWeight(backend=b, weight=4))
    await r.control.act(SetAdmin(backend=a, state="active"))
    async with asyncio.timeout(10):
        await task
    assert [(e.backend, e.data["action"]) for e in got] == [(b, "weight"), (a, "active")]
    assert got[0].id == last.id + 1
    assert got == (await r.control.events(last.id))

    # from the beginning: the backlog first, in order
    backlog: list[Event] = []
    async with asyncio.timeout(10):
        async for e in r.control.stream_events(0):
            backlog.append(e)
            if e.id == got[-1].id:
                break
    assert [e.id for e in backlog] == [e.id for e in await r.control.events(0)]


async def test_events_are_typed_and_a_newer_kind_passes_through(rig):
    """Every control hands out the typed classes; an event of a kind this version has no class
    for (what a newer balancer sends to an older console) arrives as a GenericEvent with its
    payload intact, listed and streamed, and writes the bytes it came with."""
    r = await rig(2)
    a = r.backends[0].name
    await r.control.act(SetAdmin(backend=a, state="draining"))
    newer = r.lb.proxy.events.emit(
        GenericEvent(backend=a, message="quota 97% used", name="quota", fields={"used": 0.97})
    )
    events = await r.control.events()
    drained = next(e for e in events if isinstance(e, AdminChanged))
    assert (drained.backend, drained.old, drained.new) == (a, "active", "draining")
    last = events[-1]
    assert isinstance(last, GenericEvent)
    assert (last.kind, last.backend, last.data) == ("quota", a, {"used": 0.97})
    assert event_to_json_bytes(last) == event_to_json_bytes(newer)
    async with asyncio.timeout(10):
        async for e in r.control.stream_events(newer.id - 1):
            assert isinstance(e, GenericEvent)
            assert e.message == "quota 97% used"
            break


async def test_errors_are_the_same(rig):
    r = await rig(1)
    name = r.backends[0].name
    with pytest.raises(NotFound):
        await r.control.act(SetWeight(backend="nope", weight=1))
    with pytest.raises(NotFound):
        await r.control.act(SetAdmin(backend="nope", state="draining"))
    with pytest.raises(NotFound):
        await r.control.act(RemoveBackend(backend="nope"))
    with pytest.raises(Invalid) as err:
        await r.control.act(SetWeight(backend=name, weight=-2))
    assert err.value.field == "weight"
    with pytest.raises(Invalid) as err:
        await r.control.act(ForceBreaker(backend=name, mode="ajar"))  # type: ignore[arg-type]
    assert err.value.field == "mode"
    with pytest.raises(Invalid) as err:
        await r.control.act(SetLimits(limits={"rps": 0}))
    assert err.value.field == "rps"
    with pytest.raises(Invalid) as err:
        await r.control.act(AddBackend(name="x", url="gopher://x:70"))
    assert err.value.field == "url"
    with pytest.raises(Conflict):
        await r.control.act(AddBackend(name=name, url=r.backends[0].url))
    with pytest.raises(Unavailable):
        await r.control.act(FleetKill(backend=name))
    with pytest.raises(Unavailable):
        await r.control.act(FleetKnobs(backend=name, knobs={"latency_ms": 1}))
    assert (await r.control.snapshot()).backend(name).weight_configured == 1


async def test_read_only_refuses_every_action(rig):
    r = await rig(1, read_only=True)
    name = r.backends[0].name
    assert r.control.read_only
    for call in (
        r.control.act(SetAdmin(backend=name, state="draining")),
        r.control.act(SetWeight(backend=name, weight=2)),
        r.control.act(SetAlgorithm(algorithm="random")),
        r.control.act(SetLimits(limits={"rps": 1})),
        r.control.act(ForceBreaker(backend=name, mode="open")),
        r.control.act(RemoveBackend(backend=name)),
        r.control.act(AddBackend(name="x", url=r.backends[0].url)),
        r.control.act(ClearFault(backend=name)),
    ):
        with pytest.raises(ReadOnly):
            await call
    snap = await r.control.snapshot()  # seeing is still allowed
    assert snap.backend(name).admin == "active"
    assert snap.backend(name).weight_configured == 1


async def test_add_and_remove_backend(rig):
    r = await rig(1)
    first = r.backends[0]
    (extra,) = [TestBackend("extra")]
    await extra.start()
    try:
        await r.control.act(AddBackend(name="extra", url=extra.url, weight=2))
        view = (await r.control.snapshot()).backend("extra")
        assert view.url == extra.url
        assert view.weight_configured == 2
        assert (await r.send(10)) == {first.name: 5, "extra": 5}
        await r.control.act(RemoveBackend(backend="extra"))
        assert [b.name for b in (await r.control.snapshot()).backends] == [first.name]
        assert (await r.send(4)) == {first.name: 4}
    finally:
        await extra.stop()


async def test_limits(rig):
    r = await rig(1)
    await r.control.act(SetLimits(limits={"rps": 1, "burst": 2}))
    snap = await r.control.snapshot()
    assert snap.limits.config["rps"] == 1
    assert snap.limits.config["burst"] == 2
    seen = await r.send(6)
    assert seen["429"] >= 3
    snap = await r.control.snapshot()
    assert snap.totals.rate_limited_total["global"] == seen["429"]
    assert snap.limits.global_rejected_total == seen["429"]
    await r.control.act(SetLimits(limits={"rps": None}))
    assert (await r.control.snapshot()).limits.global_tokens is None


async def test_faults_are_set_shown_and_cleared(rig):
    r = await rig(2)
    name = r.backends[0].name
    spec = FaultSpec(kind="delay", ms=2, jitter_ms=1, percent=50, duration_s=30)  # type: ignore[arg-type]
    await r.control.act(SetFault(backend=name, fault=spec))
    view = (await r.control.snapshot()).backend(name).fault
    assert view is not None
    assert view.spec == spec
    assert view.active
    assert view.description == "delay 2±1 ms on 50% for 30 s"
    assert view.remaining_s is not None
    assert 0 < view.remaining_s <= 30
    await r.control.act(ClearFault(backend=name))
    view = (await r.control.snapshot()).backend(name).fault
    assert view is not None
    assert not view.active
    assert view.ended == "cleared"
    changes = [
        (e.kind, e.data.get("change")) for e in await r.control.events() if e.backend == name
    ]
    assert changes[-2:] == [("fault", "set"), ("fault", "end")]
    await r.control.act(ClearFault(backend=name))  # nothing to clear: still on the timeline
    assert (await r.control.events())[-1].message == "no fault to clear"
    with pytest.raises(NotFound):
        await r.control.act(SetFault(backend="nope", fault=spec))


async def test_actions_as_data(rig):
    r = await rig(2)
    a, b = (x.name for x in r.backends)
    await r.control.act(SetAdmin(backend=a, state="draining"))
    await r.control.act(SetWeight(backend=b, weight=7))
    snap = await r.control.snapshot()
    assert snap.backend(a).admin == "draining"
    assert snap.backend(b).weight_configured == 7


async def test_snapshot_json_round_trip(rig):
    r = await rig(2, balancer={"algorithm": "p2c_ewma"})
    await r.send(10)
    await r.control.act(
        SetFault(backend=r.backends[0].name, fault=FaultSpec(kind="abort", status=502))
    )  # type: ignore[arg-type]
    snap = await r.control.snapshot()
    assert Snapshot.from_json(snap.to_json()) == snap
    assert Snapshot.from_json(snap.to_json_bytes()) == snap
    assert snap.backends[0].score is not None
    assert set(snap.backends[0].score) == {"ewma_ms", "penalty", "in_flight", "cost"}


async def test_http_stream_resumes_after_the_connection_drops(backends, balancer):
    """HttpControl only: the admin API restarts on the same port; the stream picks up from the
    last id it saw, without losing or repeating an event."""
    lb = await balancer(await backends(2))
    a, b = lb.proxy.backends
    local = LocalControl(lb.proxy)
    server = AdminServer(AdminConfig(address="127.0.0.1:0"), local, keepalive_s=0.5, environ={})
    await server.start()
    port = server.port
    http = HttpControl(server.url, reconnect_for_s=10.0)
    got: list[Event] = []
    stream = http.stream_events(lb.proxy.events.last_id)
    try:
        await local.act(SetAdmin(backend=a, state="draining"))
        async with asyncio.timeout(10):
            got.append(await anext(stream))
        await server.stop()
        await local.act(SetAdmin(backend=a, state="active"))  # while nobody listens
        await local.act(SetWeight(backend=b, weight=3))
        server = AdminServer(
            AdminConfig(address=f"127.0.0.1:{port}"), local, keepalive_s=0.5, environ={}
        )
        await server.start()
        async with asyncio.timeout(10):
            got.append(await anext(stream))
            got.append(await anext(stream))
        assert [(e.backend, e.data["action"]) for e in got] == [
            (a, "draining"),
            (a, "active"),
            (b, "weight"),
        ]
        assert [e.id for e in got] == list(range(got[0].id, got[0].id + 3))
    finally:
        await stream.aclose()
        await http.aclose()
        await server.stop()


async def test_http_unreachable_is_unavailable():
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        await _unreachable(closed.getsockname()[1])


async def _unreachable(port: int) -> None:
    http = HttpControl(f"http://127.0.0.1:{port}", timeout_s=1.0)
    try:
        with pytest.raises(Unavailable, match="unreachable"):
            await http.snapshot()
        with pytest.raises(Unavailable):
            await http.act(SetAdmin(backend="x", state="draining"))
    finally:
        await http.aclose()


async def test_rollback_clears_this_sessions_faults_only(rig):
    r = await rig(2)
    a, b = (x.name for x in r.backends)
    proxy = r.lb.proxy
    await r.control.act(SetFault(backend=a, fault=FaultSpec(kind="abort")))  # type: ignore[arg-type]
    proxy.set_fault(b, FaultSpec(kind="down"), owner="someone else")  # type: ignore[arg-type]
    assert await r.control.rollback() == [a]  # type: ignore[attr-defined]
    assert proxy.faults.get(a) is None
    assert proxy.faults.get(b) is not None
    assert await r.control.rollback() == []  # type: ignore[attr-defined]


# -- the action contract: every Control, the recorded one too -----------------------------------


def every_action(name: str, url: str) -> list[Action]:
    """One of each kind of action, on backend ``name`` (``url`` for an added one)."""
    made: dict[str, Action] = {
        "add_backend": AddBackend(name="added", url=url),
        "remove_backend": RemoveBackend(backend=name),
        "set_weight": SetWeight(backend=name, weight=2),
        "set_admin": SetAdmin(backend=name, state="draining"),
        "set_algorithm": SetAlgorithm(algorithm="random"),
        "set_limits": SetLimits(limits={"rps": 1000}),
        "force_breaker": ForceBreaker(backend=name, mode="open"),
        "set_fault": SetFault(backend=name, fault=FaultSpec(kind="abort")),  # type: ignore[arg-type]
        "clear_fault": ClearFault(backend=name),
        "fleet_kill": FleetKill(backend=name),
        "fleet_restart": FleetRestart(backend=name),
        "fleet_knobs": FleetKnobs(backend=name, knobs={"latency_ms": 1}),
        "replica_kill": ReplicaKill(replica="replica-2"),
        "replica_restart": ReplicaRestart(replica="replica-2"),
        "store_stop": StoreStop(),
        "store_start": StoreStart(),
        "announce": Announce(text="chaos x started"),
        "set_forward": SetForward(route="main", weights={"g": 2}),
    }
    assert set(made) == set(ACTION_KINDS), "a new action needs a line here"
    return [made[k] for k in ACTION_KINDS]


ROUTED = {"groups": [{"name": "g"}], "routes": [{"name": "main", "forward": [{"group": "g"}]}]}
"""A route for ``set_forward`` to act on."""


async def test_every_action_is_done_and_on_the_timeline(any_control):
    r = await any_control(2, **ROUTED)
    a, b = (x.name for x in r.backends)
    for action in every_action(a, r.backends[1].url):
        if isinstance(action, RemoveBackend):
            action = RemoveBackend(backend=b)  # keep ``a`` for the actions after it
        before = (await r.control.snapshot()).last_event_id
        try:
            await r.control.act(action)
        except Unavailable:
            # fleet, replica and store actions without a fleet or replicas (every control
            # says so the same way)
            assert action.kind.startswith(("fleet_", "replica_", "store_")), action
            continue
        assert (await r.control.snapshot()).last_event_id > before, action


async def test_every_action_refused_when_read_only(any_control):
    r = await any_control(2, read_only=True)
    for action in every_action(r.backends[0].name, r.backends[1].url):
        with pytest.raises(ReadOnly):
            await r.control.act(action)


async def test_actions_on_an_unknown_backend_say_not_found(any_control):
    r = await any_control(2)
    for action in every_action("nope", r.backends[1].url):
        if getattr(action, "backend", None) != "nope" or action.kind.startswith("fleet_"):
            continue
        with pytest.raises(NotFound):
            await r.control.act(action)
