"""Proxy-side faults through the real balancer: each injected fault takes the path a real failure
would (record, retries, breaker, ejection), and the registry proves what it did."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from lbtui.core.events import EventKind
from lbtui.core.faults import FaultKind, FaultSpec
from lbtui.core.record import FailureKind

SLACK_S = 1.0


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def fault_events(lb) -> list[str]:
    return [e.message for e in lb.proxy.events.since(0) if e.kind is EventKind.FAULT]


async def test_abort_at_fifty_percent_is_exact_and_proven(backends, balancer, client):
    bs = await backends(2)
    lb = await balancer(bs, ejection={"consecutive_failures": 0}, breaker={"enabled": False})
    lb.proxy.set_fault("b1", FaultSpec(FaultKind.ABORT, status=503, percent=50))
    statuses, injected = [], 0
    for _ in range(100):
        async with client.get(lb.url + "/") as r:
            await r.read()
            statuses.append(r.status)
            injected += r.headers.get("X-Lbtui-Fault") == "abort"
    assert injected == 25  # b1 took 50 of 100 (round robin), half of them aborted
    assert statuses.count(503) == 25
    assert bs[0].hits == 25  # an aborted request never reaches the backend
    st = lb.proxy.faults.stats("b1")
    assert (st.eligible_total, st.applied_total, st.applied_percent) == (50, 25, 50.0)
    assert dict(st.client_observed) == {"503": 25}
    fig = lb.proxy.backends["b1"].record.figures(lb.proxy.clock())
    assert fig.responses_total["5xx"] == 25  # recorded as the backend's own answers
    assert fault_events(lb)[0] == "fault injected: abort 503 on 50%"


async def test_down_is_a_connect_failure_retried_elsewhere_and_ejects(backends, balancer, client):
    bs = await backends(2)
    lb = await balancer(bs, ejection={"consecutive_failures": 3})
    lb.proxy.set_fault("b1", FaultSpec(FaultKind.DOWN))
    for _ in range(10):
        async with client.get(lb.url + "/") as r:
            await r.read()
            assert r.status == 200  # a connect failure is always retried on another backend
    assert bs[0].hits == 0
    fig = lb.proxy.backends["b1"].record.figures(lb.proxy.clock())
    assert fig.failures_total[FailureKind.CONNECT] == 3
    st = lb.proxy.faults.stats("b1")
    assert st.applied_total == 3
    assert dict(st.client_observed) == {"200": 3}  # proof: clients never saw it
    assert lb.proxy.outliers.is_ejected("b1", lb.proxy.clock())  # ejection reacted as to a real one
    kinds = [e.kind for e in lb.proxy.events.since(0) if e.backend == "b1"]
    assert kinds.index(EventKind.FAULT) < kinds.index(EventKind.EJECTION)


async def test_hang_is_a_timeout(backends, balancer, client):
    bs = await backends(1)
    lb = await balancer(bs, retries={"per_try_timeout_ms": 100, "attempts": 0})
    lb.proxy.set_fault("b1", FaultSpec(FaultKind.HANG, first_n=1))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with client.get(lb.url + "/") as r:
        await r.read()
        assert r.status == 504
    assert 0.1 - 0.01 <= loop.time() - t0 <= 0.1 + SLACK_S
    assert bs[0].hits == 0
    fig = lb.proxy.backends["b1"].record.figures(lb.proxy.clock())
    assert fig.failures_total[FailureKind.TIMEOUT] == 1
    async with client.get(lb.url + "/") as r:  # first_n done: the next one passes
        assert r.status == 200
    lb.proxy.tick()
    assert "fault first 1 requests done: hang on 100% (first 1 requests)" in fault_events(lb)[-1]


async def test_delay_adds_latency_and_counts_as_the_backends(backends, balancer, client):
    bs = await backends(1)
    lb = await balancer(bs)
    lb.proxy.set_fault("b1", FaultSpec(FaultKind.DELAY, ms=150))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with client.get(lb.url + "/") as r:
        await r.read()
        assert r.status == 200
    assert 0.15 - 0.01 <= loop.time() - t0 <= 0.15 + SLACK_S
    assert lb.proxy.faults.stats("b1").client_observed == {"200": 1}


async def test_reset_cuts_the_body_after_n_bytes(backends, balancer, client):
    bs = await backends(1)
    lb = await balancer(bs)
    lb.proxy.set_fault("b1", FaultSpec(FaultKind.RESET, after_bytes=100))
    got: list[bytes] = []

    async def read_into() -> None:
        async for chunk in r.content.iter_any():
            got.append(chunk)

    async with client.get(lb.url + "/big?size=5000&sized=1") as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_into()
    assert len(b"".join(got)) == 100
    fig = lb.proxy.backends["b1"].record.figures(lb.proxy.clock())
    assert fig.failures_total[FailureKind.RESET] == 1
    assert dict(lb.proxy.faults.stats("b1").client_observed) == {"reset": 1}


async def test_bandwidth_paces_the_body(backends, balancer, client):
    bs = await backends(1)
    lb = await balancer(bs)
    lb.proxy.set_fault("b1", FaultSpec(FaultKind.BANDWIDTH, kbps=100))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with client.get(lb.url + "/big?size=20000&sized=1") as r:
        body = await r.read()
    assert len(body) == 20000
    assert 0.2 - 0.01 <= loop.time() - t0 <= 0.2 + SLACK_S


async def test_duration_ends_the_fault_by_itself_with_an_event(backends, balancer, client):
    bs = await backends(1)
    lb = await balancer(bs)
    lb.proxy.set_fault("b1", FaultSpec(FaultKind.ABORT, duration_s=0.2))
    async with client.get(lb.url + "/") as r:
        assert r.status == 503
    await until(lambda: lb.proxy.faults.get("b1") is None)  # the server's tick expires it
    assert fault_events(lb)[-1].startswith("fault expired after 200 ms: abort 503")
    async with client.get(lb.url + "/") as r:
        assert r.status == 200


async def test_stop_undoes_every_fault(backends, balancer, client):
    bs = await backends(2)
    lb = await balancer(bs)
    lb.proxy.set_fault("b1", FaultSpec(FaultKind.DOWN), owner="console")
    lb.proxy.set_fault("b2", FaultSpec(FaultKind.DELAY, ms=5))
    assert lb.proxy.clear_faults(owner="console") == ["b1"]
    assert lb.proxy.faults.get("b2") is not None
    await lb.stop()
    assert len(lb.proxy.faults) == 0
    assert fault_events(lb)[-1].startswith("fault cleared: delay 5 ms")
