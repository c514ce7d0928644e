"""Watching costs what changed: ``/api/v1/state`` deltas, the per-backend state and metrics
caches (same answers as reading everything), and rebuilds that yield to the event loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web

from lbtui.balancer.proxy import Proxy
from lbtui.config import AdminConfig, from_dict
from lbtui.control.api import AdminServer
from lbtui.control.client import HttpControl
from lbtui.control.exposition import Exposition
from lbtui.control.local import LocalControl
from lbtui.control.metrics import render
from lbtui.control.model import RemoveBackend, SetWeight, Snapshot
from lbtui.control.snapshot import build_snapshot
from lbtui.control.statecache import StateCache


async def send(client: Any, url: str, n: int) -> None:
    for _ in range(n):
        async with client.get(url) as r:
            await r.read()


@pytest.fixture
async def admin(backends, balancer) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``(lb, server)`` for a balancer on ``n`` real backends with its admin API."""
    started: list[AdminServer] = []

    async def make(n: int = 3) -> Any:
        lb = await balancer(await backends(n))
        server = AdminServer(AdminConfig(address="127.0.0.1:0"), LocalControl(lb.proxy), environ={})
        await server.start()
        started.append(server)
        return lb, server

    yield make
    for server in started:
        await server.stop()


def fleet(n: int, clock: Callable[[], float]) -> Proxy:
    backends = [{"name": f"b{i}", "url": f"http://127.0.0.1:{10000 + i}"} for i in range(n)]
    return Proxy(from_dict({"backends": backends}, "test"), clock=clock)


def traffic(proxy: Proxy, names: list[str], now: float) -> None:
    for name in names:
        rec = proxy.backends[name].record
        rec.started(now)
        rec.finished(200, 0.004, 10, 64, now)


# --- deltas over HTTP -------------------------------------------------------------------------


async def test_a_console_gets_only_what_changed(admin, client):
    lb, server = await admin(3)
    await send(client, lb.url + "/", 6)
    control = HttpControl(server.url)
    try:
        first = await control.snapshot()
        assert control.changed is None  # the first answer is whole
        assert [b.requests_total for b in first.backends] == [2, 2, 2]

        names = [b.name for b in first.backends]
        await control.act(SetWeight(backend=names[1], weight=7))
        second = await control.snapshot()
        assert names[1] in (control.changed or ())
        assert second.backend(names[1]).weight_configured == 7
        # the merged answer is what a whole one says
        whole = Snapshot.from_json(
            (await httpx.AsyncClient().get(server.url + "/api/v1/state")).content
        )
        assert [b.name for b in second.backends] == [b.name for b in whole.backends]
        assert [b.weight_configured for b in second.backends] == [
            b.weight_configured for b in whole.backends
        ]

        await control.act(RemoveBackend(backend=names[0]))
        third = await control.snapshot()
        assert [b.name for b in third.backends] == names[1:]
    finally:
        await control.aclose()


async def test_a_delta_of_a_quiet_balancer_is_empty(admin):
    _lb, server = await admin(3)
    async with httpx.AsyncClient(base_url=server.url) as http:
        full = (await http.get("/api/v1/state")).json()
        assert "delta" not in full
        assert len(full["backends"]) == 3
        since = {"since": full["version"], "epoch": full["epoch"]}
        quiet = (await http.get("/api/v1/state", params=since)).json()
        assert quiet["delta"] is True
        assert quiet["backends"] == []
        assert quiet["names"] == [b["name"] for b in full["backends"]]
        # another run's versions, or versions from the future: the whole state
        for params in ({"since": 0, "epoch": "other"}, {"since": 10**9, "epoch": full["epoch"]}):
            again = (await http.get("/api/v1/state", params=params)).json()
            assert "delta" not in again
            assert len(again["backends"]) == 3
        bad = await http.get("/api/v1/state", params={"since": "x"})
        assert bad.status_code == 422


async def test_attach_reads_an_older_balancer_whole():
    """A balancer from before deltas answers the whole state and ignores ``since``: the client
    reads each answer as it comes and never asks with ``since``."""
    proxy = fleet(3, time.monotonic)
    asked: list[dict[str, str]] = []

    async def state(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        return web.Response(
            body=build_snapshot(proxy).to_json_bytes(), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/api/v1/state", state)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    control = HttpControl(f"http://127.0.0.1:{port}")
    try:
        for _ in range(3):
            snap = await control.snapshot()
            assert [b.name for b in snap.backends] == ["b0", "b1", "b2"]
            assert control.changed is None
        assert asked == [{}, {}, {}]
    finally:
        await control.aclose()
        await runner.cleanup()


# --- the caches say what reading everything says -----------------------------------------------


async def test_the_state_cache_answers_what_a_full_read_does():
    t = [1000.0]
    proxy = fleet(40, lambda: t[0])
    cache = StateCache(LocalControl(proxy))
    names = list(proxy.backends)
    for step in range(30):
        t[0] += 1.0  # a new tick: every view that moves with time is read again
        traffic(proxy, names[step % 7 :: 7], t[0])
        cached = Snapshot.from_json(await cache.body())
        whole = build_snapshot(proxy, t[0])
        assert cached.backends == whole.backends, step
        assert cached.imbalance == pytest.approx(whole.imbalance)
    # within a tick a new outcome shows at once; figures over windows are the tick's
    t[0] += 0.3
    traffic(proxy, names[:1], t[0])
    cached = Snapshot.from_json(await cache.body())
    assert (
        cached.backends[0].requests_total == build_snapshot(proxy, t[0]).backends[0].requests_total
    )
    # nothing new and the same tick: nothing is rebuilt
    rebuilt = cache.rebuilt
    await cache.body()
    assert cache.rebuilt == rebuilt
    # a minute later every window is empty: idle backends stop costing a rebuild per tick
    t[0] += 120
    await cache.body()
    rebuilt = cache.rebuilt
    spliced = cache.spliced
    for _ in range(3):
        t[0] += 1.0
        await cache.body()
    assert cache.rebuilt == rebuilt
    assert cache.spliced == spliced


async def test_spliced_views_read_as_a_full_read_does():
    """A view whose record alone moved (new outcomes, or the "now" window sliding) gets its
    figures and its breaker's calls spliced in, not rebuilt, and must still say exactly what
    reading everything says."""
    t = [1000.0]
    proxy = fleet(24, lambda: t[0])
    cache = StateCache(LocalControl(proxy))
    names = list(proxy.backends)
    traffic(proxy, names, t[0])
    await cache.body()
    spliced, rebuilt = cache.spliced, cache.rebuilt
    for step in range(40):
        t[0] += 0.1  # one "now" slot: rates move with no new outcome
        if step % 5 == 0:  # new outcomes: the record's totals and the breaker's calls move too
            for name in names[step % 3 :: 3]:
                b = proxy.backends[name]
                b.record.started(t[0])
                failed = step % 10 == 0 and name == names[0]
                b.record.finished(503 if failed else 200, 0.004, 10, 64, t[0])
                assert b.breaker is not None
                b.breaker.record(failed, 0.004, t[0])
        cached = Snapshot.from_json(await cache.body())
        whole = build_snapshot(proxy, t[0])
        assert cached.backends == whole.backends, step
        assert cached.imbalance == pytest.approx(whole.imbalance)
    assert cache.spliced > spliced + 100  # most answers were splices, not rebuilds
    assert cache.rebuilt == rebuilt


def _timeless(text: bytes) -> bytes:
    """Without the pools' L samples: L is read from rates over the last second, which move
    between two reads however little time passes."""
    return b"\n".join(x for x in text.split(b"\n") if not x.startswith(b"lbtui_imbalance{"))


async def test_cached_metrics_are_the_bytes_render_writes(admin, client):
    lb, server = await admin(3)
    async with httpx.AsyncClient(base_url=server.url) as http:
        for round_ in range(3):
            await send(client, lb.url + "/", 4 + round_)
            await send(client, lb.url + "/?status=503", round_)
            if round_ == 1:
                lb.proxy.force_breaker(next(iter(lb.proxy.backends)), "open")
            text = (await http.get("/metrics")).content
            assert _timeless(text) == _timeless(render(lb.proxy, server.control.faults)), round_


async def test_big_rebuilds_yield_to_the_event_loop():
    t = [1000.0]
    proxy = fleet(600, lambda: t[0])
    traffic(proxy, list(proxy.backends), t[0])
    cache = StateCache(LocalControl(proxy), slice_s=0.001)
    expo = Exposition(proxy, None, slice_s=0.001)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    body = await cache.body()
    during_state = ticks - before
    before = ticks
    text = await expo.render()
    during_metrics = ticks - before
    done.set()
    await task
    assert len(json.loads(body)["backends"]) == 600
    assert text == render(proxy, None)
    # 600 views take tens of milliseconds: other tasks ran between the slices
    assert during_state >= 3, during_state
    assert during_metrics >= 3, during_metrics


async def test_a_health_check_shows_at_the_next_tick():
    """A check that changes no state (one more passed) waits for the tick; a fall is an event
    and shows at once."""
    t = [1000.0]
    backends = [{"name": f"b{i}", "url": f"http://127.0.0.1:{10000 + i}"} for i in range(3)]
    config = from_dict({"backends": backends, "health": {"enabled": True, "fall": 1}}, "test")
    proxy = Proxy(config, clock=lambda: t[0])
    cache = StateCache(LocalControl(proxy), tick_s=1.0)  # (the tick's length is not the point)
    await cache.body()
    health = proxy.backends["b1"].health
    assert health is not None
    health.record_check(True, t[0], "HTTP 200")
    t[0] += 0.1
    same_tick = Snapshot.from_json(await cache.body()).backend("b1")
    assert same_tick.health is not None
    assert same_tick.health.consecutive_successes == 0
    t[0] += 1.0
    next_tick = Snapshot.from_json(await cache.body()).backend("b1")
    assert next_tick.health is not None
    assert next_tick.health.consecutive_successes == 1
    proxy.health_result(proxy.backends["b1"], False, "HTTP 503")
    t[0] += 0.1
    fell = Snapshot.from_json(await cache.body()).backend("b1")
    assert fell.health is not None
    assert fell.health.state == "down"


async def test_health_checks_are_spliced_in_not_rebuilt():
    """At 1,000 backends checked every 2 s, half the views see a new check each second: a check
    that changes no state splices the health object in at the next tick, and the answer still
    reads exactly as reading everything does."""
    t = [1000.0]
    backends = [{"name": f"b{i}", "url": f"http://127.0.0.1:{10000 + i}"} for i in range(12)]
    config = from_dict({"backends": backends, "health": {"enabled": True, "fall": 3}}, "test")
    proxy = Proxy(config, clock=lambda: t[0])
    cache = StateCache(LocalControl(proxy))
    names = list(proxy.backends)
    traffic(proxy, names, t[0])
    await cache.body()
    rebuilt = cache.rebuilt
    for step in range(12):
        t[0] += 1.0
        for name in names[step % 2 :: 2]:
            health = proxy.backends[name].health
            assert health is not None
            ok = not (step == 5 and name == names[1])  # one failed check: no state change yet
            health.record_check(ok, t[0], "HTTP 200" if ok else 'HTTP 503 "busy, \\ retry"')
        if step % 3 == 0:
            traffic(proxy, names[:4], t[0])
        cached = Snapshot.from_json(await cache.body())
        whole = build_snapshot(proxy, t[0])
        assert cached.backends == whole.backends, step
    assert cache.rebuilt == rebuilt  # every check and outcome was a splice
    b1 = Snapshot.from_json(await cache.body()).backend(names[1])
    assert b1.health is not None
    assert b1.health.consecutive_successes >= 1


async def test_a_poll_catches_up_on_outcomes_and_leaves_time_to_the_background():
    """``catch_up`` (what a watched poll pays): the backends with new outcomes or named by an
    event are read again at once, exactly; the others' time-moving figures wait for the next
    background ``refresh``, which brings every view to what a full read says."""
    t = [1000.0]
    proxy = fleet(30, lambda: t[0])
    cache = StateCache(LocalControl(proxy))
    names = list(proxy.backends)
    traffic(proxy, names, t[0])
    await cache.body()
    t[0] += 0.35  # rate slots moved for every backend
    traffic(proxy, names[:3], t[0])
    proxy.set_weight(names[5], 4.0)  # an event
    spliced, rebuilt = cache.spliced, cache.rebuilt
    await cache.catch_up()
    assert cache.spliced - spliced == 3  # the three with new outcomes, not the thirty that rated
    assert cache.rebuilt - rebuilt == 1  # the one an event named
    kept = Snapshot.from_json(await cache.answer())
    whole = build_snapshot(proxy, t[0])
    for name in [*names[:3], names[5]]:
        assert kept.backend(name) == whole.backend(name), name
    assert kept.backend(names[9]).requests_total == 1  # counters are right everywhere
    assert kept.backend(names[9]).rps_series != whole.backend(names[9]).rps_series
    await cache.refresh(paced=True)
    assert Snapshot.from_json(await cache.answer()).backends == whole.backends


async def test_a_watched_state_is_kept_in_the_background(admin, client):
    """Polled steadily, the state is refreshed in the background and a poll only catches up:
    what requests and actions changed still shows in the very next answer; polls that stop
    stop the background work."""
    lb, server = await admin(3)
    keeper = server.keeper
    keeper.watch_s = 0.5
    async with httpx.AsyncClient(base_url=server.url) as http:

        async def state() -> Snapshot:
            r = await http.get("/api/v1/state")
            assert r.status_code == 200
            return Snapshot.from_json(r.content)

        deadline = time.monotonic() + 10
        while keeper.caught_up < 3 or keeper.passes < 2:
            assert time.monotonic() < deadline, (keeper.caught_up, keeper.passes)
            await state()
            await asyncio.sleep(0.05)
        before = sum(b.requests_total for b in (await state()).backends)
        await send(client, lb.url + "/", 5)
        after = await state()
        assert sum(b.requests_total for b in after.backends) == before + 5
        name = after.backends[0].name
        assert (await http.post(f"/api/v1/backends/{name}/drain")).status_code == 200
        assert (await state()).backend(name).admin == "draining"
        r = await http.get("/api/v1/state")
        assert "keep;dur=" in r.headers["Server-Timing"]
    deadline = time.monotonic() + 10
    while keeper.keeping:  # nobody polls: the background task ends by itself
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    caught_up = keeper.caught_up
    await state_once(server.url)
    assert keeper.caught_up == caught_up  # answered whole, as a first poll is


async def test_steady_scrapes_write_the_moved_lines_in_the_background(admin, client):
    """Scraped steadily, ``/metrics`` writes the lines of the backends that moved between
    scrapes in the background; every scrape is still exactly what reading everything writes,
    counters as of the scrape."""
    lb, server = await admin(3)
    keeper = server.metrics_keeper
    keeper.shortest_s = 0.1  # (its pass at most every 100 ms, not 250: a quicker test)
    async with httpx.AsyncClient(base_url=server.url) as http:
        deadline = time.monotonic() + 10
        while keeper.passes < 3:
            assert time.monotonic() < deadline, keeper.passes
            await send(client, lb.url + "/", 2)
            r = await http.get("/metrics")
            assert r.status_code == 200
            assert _timeless(r.content) == _timeless(render(lb.proxy, server.control.faults))
            await asyncio.sleep(0.1)
        assert "keep;dur=" in r.headers["Server-Timing"]


async def state_once(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/api/v1/state")).status_code == 200


def _containers_held_by(*roots: object) -> dict[int, str]:
    """The ids of the collector-tracked objects reachable from ``roots`` (not through modules,
    classes or functions): what the balancer and its caches hold, and nothing a thread left by
    another test allocates meanwhile."""
    import gc
    import types

    stop = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)
    seen: dict[int, str] = {}
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, stop) or not gc.is_tracked(obj):
            continue
        seen[id(obj)] = type(obj).__name__
        todo.extend(gc.get_referents(obj))
    return seen


async def test_polls_leave_the_collector_little_new_to_scan():
    """A poll under traffic changes most views, but their figures are written into the objects
    already kept (and the lines of ``/metrics`` kept as tuples of numbers): what outlives an
    answer and lands in the collector's older generations stays small, so full collections of
    a 1,000-backend balancer stay short and rare."""
    import gc

    t = [1000.0]
    proxy = fleet(300, lambda: t[0])
    names = list(proxy.backends)
    cache = StateCache(LocalControl(proxy))
    expo = Exposition(proxy, None)
    traffic(proxy, names, t[0])
    for _ in range(3):  # every view and every backend's lines built once, health at rest
        t[0] += 1.0
        traffic(proxy, names, t[0])
        await cache.body()
        await expo.render()
    gc.collect()
    gc.disable()
    try:
        before = _containers_held_by(cache, expo)
        for _ in range(4):
            t[0] += 0.25
            traffic(proxy, names[::2], t[0])
            await cache.body()
        t[0] += 1.0
        traffic(proxy, names, t[0])
        await expo.render()
        # what is left is what outlived the answers (tuples of numbers and strings are let go
        # by the collector once it has seen them, nested ones one level a collection)
        for _ in range(3):
            gc.collect()
        after = _containers_held_by(cache, expo)
        kept = [kind for i, kind in after.items() if i not in before]
    finally:
        gc.enable()
    # the whole answer is a few objects; a view or a backend's lines made anew would be
    # several containers each (300 backends: over a thousand). A backend whose rate moved
    # has a new balance ``Member`` (one small frozen object, read by the pools' L and M)
    members = kept.count("Member")
    assert members <= len(names), members
    assert len(kept) - members < 150, sorted(set(kept))


async def test_metrics_of_new_outcomes_alone_are_the_bytes_render_writes():
    """Backends that only got outcomes (no event) have just the families those moved written
    again: requests, failures, the histogram, in flight (up and back down), retries, bytes."""
    from lbtui.core.record import FailureKind

    t = [1000.0]
    proxy = fleet(30, lambda: t[0])
    names = list(proxy.backends)
    expo = Exposition(proxy, None)
    traffic(proxy, names, t[0])
    await expo.render()
    open_: list[str] = []
    for step in range(12):
        t[0] += 0.5
        for name in names[step % 4 :: 4]:
            rec = proxy.backends[name].record
            if step % 3 == 0:
                rec.started(t[0])  # left in flight until the next step
                open_.append(name)
            elif step % 3 == 1:
                rec.started(t[0])
                rec.failed(FailureKind.TIMEOUT, 0.5, 0, t[0])
            else:
                rec.started(t[0])
                rec.finished(404 if step % 2 else 200, 0.02 * step, 5, 10 * step, t[0])
        if step % 3 == 1:
            for name in open_:  # back down: in flight as it was two scrapes ago
                proxy.backends[name].record.finished(200, 0.01, 0, 64, t[0])
            open_.clear()
        text = await expo.render()
        assert _timeless(text) == _timeless(render(proxy, None)), step


async def test_group_sums_follow_the_members_that_moved():
    """The groups' series are kept and moved by the members that got outcomes (overlapping
    groups: a backend in two counts in both), and summed again whole only when a group's
    members change: at every scrape the bytes ``render`` writes."""
    from lbtui.config import from_dict

    t = [1000.0]
    backends = [{"name": f"b{i}", "url": f"http://127.0.0.1:{10000 + i}"} for i in range(12)]
    groups = [
        {"name": "a", "backends": [f"b{i}" for i in range(6)]},
        {"name": "b", "backends": [f"b{i}" for i in range(4, 12)]},
    ]
    proxy = Proxy(from_dict({"backends": backends, "groups": groups}, "test"), clock=lambda: t[0])
    names = list(proxy.backends)
    expo = Exposition(proxy, None)
    text = await expo.render()
    assert _timeless(text) == _timeless(render(proxy, None))
    resummed = expo._group_sums.resummed
    for step in range(8):
        t[0] += 0.5
        for i, name in enumerate(names[step % 3 :: 3]):
            rec = proxy.backends[name].record
            rec.started(t[0])
            # response bytes past a million on the way: written with an exponent, as Go does
            rec.finished((200, 503, 404)[i % 3], 0.001 * (step + 1) ** 2, 0, 400_000 * step, t[0])
        text = await expo.render()
        assert _timeless(text) == _timeless(render(proxy, None)), step
    assert b'lbtui_group_requests_total{code_class="2xx",group="b"}' in text
    assert b"e+06\n" in text
    assert expo._group_sums.resummed == resummed  # moved member by member
    await LocalControl(proxy).act(RemoveBackend(backend="b5"))
    t[0] += 0.5
    traffic(proxy, ["b4", "b6"], t[0])
    text = await expo.render()
    assert _timeless(text) == _timeless(render(proxy, None))
    assert expo._group_sums.resummed > resummed


async def test_the_caches_first_build_is_frozen_once():
    """``lbtui serve`` has each cache freeze what it keeps once it is first built (full
    collections then leave the 1,000 views and line sets alone), and only then."""
    import gc

    t = [1000.0]
    proxy = fleet(50, lambda: t[0])
    names = list(proxy.backends)
    cache = StateCache(LocalControl(proxy))
    expo = Exposition(proxy, None)
    cache.freeze_built = expo.freeze_built = True
    frozen = gc.get_freeze_count()
    try:
        traffic(proxy, names, t[0])
        await cache.body()
        after_state = gc.get_freeze_count()
        await expo.render()
        after_metrics = gc.get_freeze_count()
        assert frozen + 50 * 3 < after_state < after_metrics  # entries, figures, members
        for _ in range(3):
            t[0] += 1.0
            traffic(proxy, names, t[0])
            await cache.body()
            await expo.render()
        # nothing frozen again (what was frozen and since freed has left the count)
        assert gc.get_freeze_count() <= after_metrics
        assert not cache.freeze_built
        assert not expo.freeze_built
    finally:
        gc.unfreeze()
