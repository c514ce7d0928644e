"""Several processes on one listener (``[listener] workers = 2``): real worker processes, real
sockets. What must behave as one balancer does: the totals, the rate limit, breaker trips,
operator actions; and a worker that dies is started again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lbtui import config as config_mod
from lbtui.control.model import Snapshot, WorkerView
from lbtui.control.runtime import BalancerRuntime, run_balancer
from lbtui.control.snapshot import build_snapshot
from lbtui.core.events import BreakerChanged, WorkerExited, WorkerRestarted
from tests.integration.conftest import TestBackend

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balancing")

Make = Callable[..., Awaitable[BalancerRuntime]]


async def until(check: Callable[[], Any], deadline_s: float = 15.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy, failing after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def two_workers() -> AsyncIterator[Make]:
    started: list[BalancerRuntime] = []

    async def make(servers: list[TestBackend], /, **sections: Any) -> BalancerRuntime:
        data: dict[str, Any] = {
            "listener": {"address": "127.0.0.1:0", "workers": 2},
            "admin": {"address": "127.0.0.1:0"},
            "backends": [{"name": b.name, "url": b.url} for b in servers],
            **sections,
        }
        rt = run_balancer(config_mod.from_dict(data, "test"))
        await rt.start()
        started.append(rt)
        return rt

    yield make
    for rt in started:
        group = rt.server.workers
        pids = list(group.pids.values()) if group is not None else []
        await rt.stop()
        for pid in pids:  # stop() waited for them; anything left is a defect, and is stopped
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"worker pid {pid} outlived the balancer")


@pytest.fixture
async def fresh() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that opens a new connection for every request, so that the kernel spreads
    them over the processes."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def snapshot(rt: BalancerRuntime) -> Snapshot:
    return build_snapshot(rt.server.proxy)


def served(rt: BalancerRuntime) -> dict[int, int]:
    return {w.index: w.requests_total for w in snapshot(rt).workers}


async def get_many(session: aiohttp.ClientSession, url: str, n: int, path: str = "/") -> list[int]:
    statuses = []
    for _ in range(n):
        async with session.get(url + path) as resp:
            await resp.read()
            statuses.append(resp.status)
    return statuses


async def reported(rt: BalancerRuntime, total: int) -> Snapshot:
    """The snapshot once every process has reported ``total`` requests in all."""

    def check() -> Snapshot | None:
        snap = snapshot(rt)
        return snap if snap.totals.requests_total == total else None

    result: Snapshot = await until(check, what=f"{total} requests reported")
    return result


async def both_served(rt: BalancerRuntime, total: int, each: int) -> Snapshot:
    """Once ``total`` requests are reported: every process took at least ``each``."""
    snap = await reported(rt, total)
    assert min(w.requests_total for w in snap.workers) >= each, snap.workers
    return snap


async def test_both_processes_serve_and_the_totals_add_up(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    two_workers: Make,
    fresh: aiohttp.ClientSession,
) -> None:
    servers = await backends(2)
    rt = await two_workers(servers)
    assert sorted(rt.server.workers.pids) == [1]  # type: ignore[union-attr]
    statuses = await get_many(fresh, rt.server.url, 80)
    assert statuses == [200] * 80
    snap = await reported(rt, 80)
    counts = {w.index: w.requests_total for w in snap.workers}
    assert set(counts) == {0, 1}
    assert sum(counts.values()) == 80
    assert min(counts.values()) >= 15, counts  # the kernel spread 80 connections over both
    assert sum(b.requests_total for b in snap.backends) == 80
    assert [b.requests_total for b in snap.backends] == [s.hits for s in servers]
    assert snap.totals.responses_total["2xx"] == 80
    assert rt.admin is not None
    async with aiohttp.ClientSession() as scraper, scraper.get(rt.admin.url + "/metrics") as resp:
        metrics = await resp.text()
    assert 'lbtui_client_responses_total{code_class="2xx"} 80.0' in metrics
    for index, n in counts.items():
        assert f'lbtui_worker_requests_total{{worker="{index}"}} {n:.1f}' in metrics
        assert f'lbtui_worker_up{{worker="{index}"}} 1.0' in metrics


async def test_the_rate_limit_is_one_quota_for_all_processes(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    two_workers: Make,
    fresh: aiohttp.ClientSession,
) -> None:
    servers = await backends(1)
    rt = await two_workers(servers, limits={"rps": 0.5, "burst": 10})
    t0 = time.monotonic()
    statuses = await get_many(fresh, rt.server.url, 60)
    elapsed = time.monotonic() - t0
    admitted = statuses.count(200)
    # One bucket: the burst plus what refilled meanwhile; per-process buckets would admit ~20.
    assert 10 <= admitted <= 10 + int(elapsed * 0.5) + 1, (admitted, elapsed)
    assert statuses.count(429) == 60 - admitted
    await both_served(rt, 60, 10)  # both took part
    assert servers[0].hits == admitted


async def test_a_breaker_trip_in_one_process_stops_every_process_sending(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    two_workers: Make,
    fresh: aiohttp.ClientSession,
) -> None:
    good, bad = await backends(2)
    bad.status = 500
    rt = await two_workers(
        [good, bad],
        breaker={"window_size": 20, "min_calls": 20, "failure_rate": 50, "open_s": 60},
        ejection={"consecutive_failures": 0},
    )

    def tripped() -> bool:
        view = snapshot(rt).backend(bad.name)
        return view.breaker is not None and view.breaker.state == "open"

    sent = 0
    for _ in range(200):
        await get_many(fresh, rt.server.url, 1)
        sent += 1
        if tripped():
            break
    assert tripped()
    hits = bad.hits
    before = {w.index: w.requests_total for w in (await reported(rt, sent)).workers}
    statuses = await get_many(fresh, rt.server.url, 60)
    # No process sends to the open backend any more (one request may have been on its way).
    assert bad.hits - hits <= 1, (hits, bad.hits)
    assert statuses.count(200) >= 59
    snap = await reported(rt, sent + 60)
    after = {w.index: w.requests_total for w in snap.workers}
    assert all(after[i] - before.get(i, 0) >= 10 for i in after), (before, after)
    trips = [
        e
        for e in rt.server.proxy.events
        if isinstance(e, BreakerChanged) and e.backend == bad.name and e.new == "open"
    ]
    assert len(trips) == 1, [e.message for e in trips]


async def test_operator_actions_reach_every_process(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    two_workers: Make,
    fresh: aiohttp.ClientSession,
) -> None:
    servers = await backends(1)
    # Only the fault answers here: no breaker or ejection reacting to its 503s.
    rt = await two_workers(
        servers, breaker={"enabled": False}, ejection={"consecutive_failures": 0}
    )
    assert rt.admin is not None
    api = rt.admin.url + "/api/v1"
    async with aiohttp.ClientSession() as admin:
        async with admin.put(
            f"{api}/backends/{servers[0].name}/fault",
            json={"kind": "abort", "percent": 100, "status": 503},
        ) as resp:
            assert resp.status == 200, await resp.text()
        statuses = await get_many(fresh, rt.server.url, 40)
        assert statuses == [503] * 40
        await reported(rt, 40)
        fault = rt.control.snapshot_now().backend(servers[0].name).fault
        assert fault is not None
        # The proof counts every process's share, not the first one's alone.
        assert (fault.requests, fault.applied, fault.client_observed) == (40, 40, {"503": 40})
        async with admin.delete(f"{api}/backends/{servers[0].name}/fault") as resp:
            assert resp.status == 200, await resp.text()
    statuses = await get_many(fresh, rt.server.url, 40)
    assert statuses == [200] * 40
    await both_served(rt, 80, 10)


async def test_a_worker_that_dies_is_started_again_and_no_count_goes_back(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    two_workers: Make,
    fresh: aiohttp.ClientSession,
) -> None:
    servers = await backends(1)
    rt = await two_workers(servers)
    group = rt.server.workers
    assert group is not None
    await get_many(fresh, rt.server.url, 40)
    await reported(rt, 40)
    old = group.pids[1]
    os.kill(old, signal.SIGKILL)
    await until(lambda: 1 not in group.pids, what="worker 1 seen gone")
    gone = snapshot(rt)
    assert [(w.index, w.alive) for w in gone.workers] == [(0, True), (1, False)]
    assert gone.totals.requests_total == 40  # its counts stay in the totals
    await until(lambda: group.pids.get(1, old) != old, what="worker 1 started again")
    views: list[WorkerView] = snapshot(rt).workers
    assert [(w.index, w.alive) for w in views] == [(0, True), (1, True)]
    statuses = await get_many(fresh, rt.server.url, 40)
    assert statuses == [200] * 40
    snap = await reported(rt, 80)
    assert snap.totals.responses_total["2xx"] == 80
    events = list(rt.server.proxy.events)
    exits = [e for e in events if isinstance(e, WorkerExited)]
    assert [(e.worker, e.pid, e.exit_code) for e in exits] == [(1, old, -9)], exits
    assert f"pid {old}) exited with code -9" in exits[0].message
    restarts = [e for e in events if isinstance(e, WorkerRestarted)]
    assert [(e.worker, e.pid) for e in restarts] == [(1, group.pids[1])], restarts


def test_serve_with_workers_stops_them_all_on_sigterm(tmp_path: Path) -> None:
    conf = tmp_path / "lbtui.toml"
    conf.write_text(
        '[listener]\naddress = "127.0.0.1:0"\nworkers = 3\n[admin]\nenabled = false\n'
        '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbtui", "serve", "--config", str(conf)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "lbtui: balancing" in line, line
        import psutil

        children = [
            c
            for c in psutil.Process(proc.pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        assert len(children) == 2, [c.cmdline() for c in children]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_the_console_shows_the_processes_and_its_actions_reach_them_all(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    two_workers: Make,
    fresh: aiohttp.ClientSession,
) -> None:
    from lbtui.tui.app import LbtuiApp
    from tests.tui.conftest import SIZE, ready, wait_text

    a, b = await backends(2)
    rt = await two_workers([a, b])
    app = LbtuiApp(rt.control)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_text(pilot, "processes 2")
        await pilot.press("d")  # drain the selected (first) backend
        await wait_text(pilot, "DRAINING")
    assert rt.server.proxy.backends[a.name].admin.value == "draining"
    hits = a.hits
    statuses = await get_many(fresh, rt.server.url, 40)
    assert statuses == [200] * 40
    assert a.hits == hits  # no process sends to the drained backend
    await both_served(rt, 40, 10)


async def test_a_second_balancer_cannot_share_the_port(
    backends: Callable[[int], Awaitable[list[TestBackend]]], two_workers: Make
) -> None:
    """SO_REUSEPORT would let a forgotten second balancer take half the connections."""
    servers = await backends(1)
    rt = await two_workers(servers)
    data: dict[str, Any] = {
        "listener": {"address": f"127.0.0.1:{rt.server.port}", "workers": 2},
        "admin": {"enabled": False},
        "backends": [{"name": "x", "url": servers[0].url}],
    }
    second = run_balancer(config_mod.from_dict(data, "test"))
    with pytest.raises(OSError, match="another lbtui with workers listens there"):
        await second.start()
    assert second.server.workers is None


async def test_limits_and_backends_changed_at_run_time_hold_in_every_process(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    two_workers: Make,
    fresh: aiohttp.ClientSession,
) -> None:
    first, second = await backends(2)
    rt = await two_workers([first])
    assert rt.admin is not None
    api = rt.admin.url + "/api/v1"
    async with aiohttp.ClientSession() as admin:
        async with admin.post(f"{api}/backends", json={"name": "late", "url": second.url}) as r:
            assert r.status == 201, await r.text()
        statuses = await get_many(fresh, rt.server.url, 40)
        assert statuses == [200] * 40
        assert first.hits + second.hits == 40
        # Round robin in each process: 20 ± 2 each; had one process not learnt of "late",
        # that one would have sent it nothing.
        assert min(first.hits, second.hits) >= 18, (first.hits, second.hits)
        async with admin.put(f"{api}/limits", json={"rps": 0.5, "burst": 5}) as r:
            assert r.status == 200, await r.text()
    t0 = time.monotonic()
    statuses = await get_many(fresh, rt.server.url, 40)
    admitted = statuses.count(200)
    assert 5 <= admitted <= 5 + int((time.monotonic() - t0) * 0.5) + 1, admitted
    await both_served(rt, 80, 20)


async def test_a_restarted_worker_starts_where_the_others_are(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    two_workers: Make,
    fresh: aiohttp.ClientSession,
) -> None:
    """Not a fresh balancer: the open breaker stays open, and the limits changed at run time
    hold, with the tokens already taken still taken."""
    good, bad = await backends(2)
    bad.status = 500
    rt = await two_workers(
        [good, bad],
        breaker={"window_size": 20, "min_calls": 20, "failure_rate": 50, "open_s": 60},
        ejection={"consecutive_failures": 0},
    )
    group = rt.server.workers
    assert group is not None
    assert rt.admin is not None
    for _ in range(200):
        await get_many(fresh, rt.server.url, 1)
        view = snapshot(rt).backend(bad.name).breaker
        if view is not None and view.state == "open":
            break
    async with aiohttp.ClientSession() as admin:
        limits = {"per_client_rps": 0.01, "per_client_burst": 30}
        async with admin.put(rt.admin.url + "/api/v1/limits", json=limits) as r:
            assert r.status == 200, await r.text()
    assert await get_many(fresh, rt.server.url, 30) == [200] * 30  # the burst, used up
    hits = bad.hits
    old = group.pids[1]
    os.kill(old, signal.SIGKILL)
    await until(lambda: group.pids.get(1, old) != old, what="worker 1 started again")
    statuses = await get_many(fresh, rt.server.url, 30)
    assert statuses == [429] * 30  # no fresh burst from the restart
    assert bad.hits == hits
    async with (
        aiohttp.ClientSession() as admin,
        admin.put(rt.admin.url + "/api/v1/limits", json={"per_client_rps": None}) as r,
    ):
        assert r.status == 200, await r.text()
    assert await get_many(fresh, rt.server.url, 30) == [200] * 30
    assert bad.hits == hits  # and the breaker is open in the new worker too


async def test_a_stopped_worker_does_not_stall_the_balancer(
    backends: Callable[[int], Awaitable[list[TestBackend]]],
    two_workers: Make,
    fresh: aiohttp.ClientSession,
) -> None:
    """A worker that reads nothing (SIGSTOP here; a hang elsewhere): what the primary sends it
    waits in a buffer, and the primary goes on answering at once."""
    servers = await backends(2)
    rt = await two_workers(servers)
    group = rt.server.workers
    assert group is not None
    pid = group.pids[1]
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        for i in range(2000):  # far more than a pipe holds (~270 such messages)
            rt.server.proxy.set_weight(servers[0].name, 1 + i % 5)
        assert time.monotonic() - t0 < 2.0
    finally:
        os.kill(pid, signal.SIGCONT)
    rt.server.proxy.set_weight(servers[0].name, 1)
    statuses = await get_many(fresh, rt.server.url, 40)
    assert statuses == [200] * 40
    await both_served(rt, 40, 10)  # the worker serves again
    assert group.pids[1] == pid  # and was not restarted: it caught up
