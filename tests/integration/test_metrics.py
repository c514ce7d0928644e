"""``/metrics`` over real HTTP, parsed with prometheus-client's own parser: every value equals
the outcomes that produced it."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lbtui.config import AdminConfig
from lbtui.control.api import AdminServer
from lbtui.control.faults import FaultLink
from lbtui.control.local import LocalControl
from lbtui.control.metrics import LATENCY_BOUNDS_S, make_registry, render
from lbtui.core.faults import FaultSpec

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
async def scrape(backends, balancer) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``(lb, scrape())`` for a balancer on ``n`` real backends."""
    started: list[tuple[AdminServer, httpx.AsyncClient]] = []

    async def make(n: int = 2, **sections: Any) -> Any:
        lb = await balancer(await backends(n), **sections)
        server = AdminServer(AdminConfig(address="127.0.0.1:0"), LocalControl(lb.proxy), environ={})
        await server.start()
        http = httpx.AsyncClient(base_url=server.url, trust_env=False)
        started.append((server, http))

        async def get() -> tuple[Samples, str]:
            r = await http.get("/metrics")
            assert r.status_code == 200
            return parse(r.text), r.text

        return lb, get

    yield make
    for server, http in started:
        await http.aclose()
        await server.stop()


async def send(client, url: str, n: int) -> list[int]:
    statuses = []
    for _ in range(n):
        async with client.get(url) as r:
            await r.read()
            statuses.append(r.status)
    return statuses


async def test_counts_equal_the_requests_that_produced_them(scrape, client):
    lb, get = await scrape(2)
    b1, b2 = lb.proxy.backends
    assert await send(client, lb.url + "/", 40) == [200] * 40
    assert await send(client, lb.url + "/?status=503", 4) == [503] * 4
    m, _ = await get()
    for b in (b1, b2):
        assert value(m, "lbtui_requests_total", backend=b, code_class="2xx") == 20
        assert value(m, "lbtui_requests_total", backend=b, code_class="5xx") == 2
        assert value(m, "lbtui_requests_total", backend=b, code_class="4xx") == 0
        assert value(m, "lbtui_request_duration_seconds_count", backend=b) == 22
        assert value(m, "lbtui_request_duration_seconds_bucket", backend=b, le="+Inf") == 22
        assert value(m, "lbtui_request_duration_seconds_sum", backend=b) > 0
        buckets = [
            value(m, "lbtui_request_duration_seconds_bucket", backend=b, le=f"{x:g}")
            for x in LATENCY_BOUNDS_S
        ]
        assert buckets == sorted(buckets)  # cumulative
        assert buckets[-1] == 22  # nothing on loopback takes 30 s
        assert value(m, "lbtui_backend_in_flight", backend=b) == 0
        assert value(m, "lbtui_backend_up", backend=b) == 1
        assert value(m, "lbtui_backend_weight", backend=b) == 1
        assert value(m, "lbtui_retries_total", backend=b) == 0
        for kind in ("connect", "timeout", "reset"):
            assert value(m, "lbtui_upstream_failures_total", backend=b, kind=kind) == 0
        assert value(m, "lbtui_backend_response_bytes_total", backend=b) == sum(
            view.bytes_out_total for view in [lb.proxy.backends[b].record]
        )
        assert value(m, "lbtui_backend_response_bytes_total", backend=b) > 0
    assert value(m, "lbtui_client_responses_total", code_class="2xx") == 40
    assert value(m, "lbtui_client_responses_total", code_class="5xx") == 4
    assert value(m, "lbtui_client_in_flight") == 0
    for scope in ("global", "client", "concurrency"):
        assert value(m, "lbtui_rate_limited_total", scope=scope) == 0


async def test_breaker_state_is_one_hot(scrape):
    lb, get = await scrape(2)
    b1, b2 = lb.proxy.backends
    states = ("closed", "open", "half_open", "forced_open", "disabled")

    def one_hot(m: Samples, b: str) -> dict[str, float]:
        got = {s: value(m, "lbtui_breaker_state", backend=b, state=s) for s in states}
        assert sum(got.values()) == 1
        return got

    m, _ = await get()
    assert one_hot(m, b1)["closed"] == 1
    lb.proxy.force_breaker(b1, "open")
    m, _ = await get()
    assert one_hot(m, b1)["forced_open"] == 1
    assert one_hot(m, b2)["closed"] == 1
    assert value(m, "lbtui_backend_up", backend=b1) == 0
    assert value(m, "lbtui_backend_up", backend=b2) == 1
    assert value(m, "lbtui_breaker_opened_total", backend=b1) == 0  # forcing is not tripping


async def test_breaker_trips_and_ejections_are_counted(scrape, client):
    lb, get = await scrape(
        1,
        breaker={"window_size": 4, "min_calls": 4, "failure_rate": 50, "open_s": 60},
        ejection={"consecutive_failures": 0},
    )
    (b,) = lb.proxy.backends
    statuses = await send(client, lb.url + "/?status=500", 6)
    assert statuses[:4] == [500] * 4
    assert statuses[4:] == [503, 503]  # breaker open: no backend
    m, _ = await get()
    assert value(m, "lbtui_breaker_opened_total", backend=b) == 1
    assert value(m, "lbtui_breaker_state", backend=b, state="open") == 1
    assert value(m, "lbtui_requests_total", backend=b, code_class="5xx") == 4
    assert value(m, "lbtui_client_responses_total", code_class="5xx") == 6
    assert value(m, "lbtui_response_flags_total", flag="breaker_open") == 2
    assert value(m, "lbtui_events_total") == lb.proxy.events.last_id


async def test_rate_limited(scrape, client):
    lb, get = await scrape(2, limits={"rps": 1, "burst": 3})
    statuses = await send(client, lb.url + "/", 8)
    m, _ = await get()
    assert value(m, "lbtui_rate_limited_total", scope="global") == statuses.count(429)
    assert value(m, "lbtui_client_responses_total", code_class="4xx") == statuses.count(429)
    assert statuses.count(429) >= 4


async def test_faults_injected_counted_per_backend_and_kind(scrape, client):
    # no breaker: it would trip at 50 % failures and change who gets the requests
    lb, get = await scrape(2, breaker={"enabled": False})
    b1, _b2 = lb.proxy.backends
    lb.proxy.set_fault(b1, FaultSpec(kind="abort", status=503, percent=50))  # type: ignore[arg-type]
    statuses = await send(client, lb.url + "/", 40)
    assert statuses.count(503) == 10  # exactly half of b1's 20 (the registry's rule)
    m, _ = await get()
    assert value(m, "lbtui_faults_injected_total", backend=b1, kind="abort") == 10
    assert value(m, "lbtui_requests_total", backend=b1, code_class="5xx") == 10
    lb.proxy.set_fault(b1, FaultSpec(kind="delay", ms=1))  # type: ignore[arg-type]
    await send(client, lb.url + "/", 4)
    m, _ = await get()
    assert value(m, "lbtui_faults_injected_total", backend=b1, kind="abort") == 10  # kept
    assert value(m, "lbtui_faults_injected_total", backend=b1, kind="delay") == 2


async def test_promtool_accepts_the_exposition(scrape, client):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    lb, get = await scrape(2)
    lb.proxy.set_fault(next(iter(lb.proxy.backends)), FaultSpec(kind="delay", ms=1))  # type: ignore[arg-type]
    await send(client, lb.url + "/", 10)
    _, text = await get()
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(30):
            out, _ = await proc.communicate(text.encode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out.decode()
    assert out.decode() == ""


async def test_connect_failures_and_retries(backends, balancer, client):
    live = (await backends(1))[0]
    with socket.socket() as dead:  # bound, never listening: connections are refused
        dead.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
        lb = await balancer(
            [],
            backends=[{"name": "live", "url": live.url}, {"name": "dead", "url": dead_url}],
            ejection={"consecutive_failures": 0},
        )
        server = AdminServer(AdminConfig(address="127.0.0.1:0"), LocalControl(lb.proxy), environ={})
        async with server, httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
            assert await send(client, lb.url + "/", 10) == [200] * 10
            m = parse((await http.get("/metrics")).text)
    # every attempt on "dead" failed to connect and was retried, once, on "live"
    failed = value(m, "lbtui_upstream_failures_total", backend="dead", kind="connect")
    assert failed == lb.proxy.backends["dead"].record.requests_total
    assert failed >= 5  # round robin picks it first for at least every other request
    assert value(m, "lbtui_retries_total", backend="live") == failed
    assert value(m, "lbtui_retries_total", backend="dead") == 0
    assert value(m, "lbtui_client_retries_total") == failed
    assert value(m, "lbtui_request_duration_seconds_count", backend="dead") == failed
    assert value(m, "lbtui_requests_total", backend="live", code_class="2xx") == 10
    assert value(m, "lbtui_client_responses_total", code_class="2xx") == 10


async def test_fast_renderer_matches_prometheus_client(scrape, client):
    """``render`` is a faster ``generate_latest`` for this collector: the bytes are the same."""
    lb, get = await scrape(2)
    b1, b2 = lb.proxy.backends
    await send(client, lb.url + "/", 6)
    await send(client, lb.url + "/?status=502", 2)
    lb.proxy.force_breaker(b2, "open")
    lb.proxy.set_fault(b1, FaultSpec(kind="abort"))  # type: ignore[arg-type]
    await send(client, lb.url + "/", 2)
    link = FaultLink(lb.proxy.faults, lb.proxy.clock)
    assert render(lb.proxy, link) == generate_latest(make_registry(lb.proxy, link))
    _, text = await get()
    assert f'lbtui_breaker_state{{backend="{b2}",state="forced_open"}} 1.0' in text


async def test_groups_have_their_own_request_counts_and_latency(scrape, client):
    groups = [{"name": "stable", "backends": ["b1"]}, {"name": "canary", "backends": ["b2"]}]
    fwd = [{"group": "stable", "weight": 9}, {"group": "canary", "weight": 1}]
    lb, get = await scrape(2, groups=groups, routes=[{"forward": fwd}])
    assert await send(client, lb.url + "/", 20) == [200] * 20
    samples, text = await get()
    group_2xx = {
        g: value(samples, "lbtui_group_requests_total", group=g, code_class="2xx")
        for g in ("stable", "canary", "default")
    }
    assert group_2xx == {"stable": 18, "canary": 2, "default": 20}  # default: every backend
    assert value(samples, "lbtui_group_request_duration_seconds_count", group="canary") == 2
    assert (
        value(samples, "lbtui_group_request_duration_seconds_bucket", group="canary", le="+Inf")
        == 2
    )
    assert value(samples, "lbtui_imbalance", pool="canary") >= 0
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            out, _ = await proc.communicate(text.encode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out.decode()
    assert out.decode() == ""
