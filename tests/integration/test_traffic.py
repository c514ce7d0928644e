"""Traffic management through the real balancer: limits, breakers, ejection, health, retries,
fallback — with real backends made to fail, hang or go away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.integration.test_proxy import free_port


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or cond}")


async def get_many(
    client: aiohttp.ClientSession, url: str, n: int, **kw
) -> list[aiohttp.ClientResponse]:
    out = []
    for _ in range(n):
        async with client.get(url, **kw) as r:
            await r.read()
            out.append(r)
    return out


# -- rate limiting -----------------------------------------------------------------------------


async def test_global_limit_answers_429_with_headers_and_spares_backends(
    backends, balancer, client
):
    (b,) = await backends(1)
    lb = await balancer([b], limits={"rps": 2, "burst": 5})
    statuses = []
    rejected = None
    for _ in range(12):
        async with client.get(lb.url + "/") as r:
            statuses.append(r.status)
            if r.status == 429 and rejected is None:
                rejected = (dict(r.headers), await r.json())
    assert statuses.count(200) in (5, 6)  # the burst, plus at most one refilled token
    assert statuses.count(429) == 12 - statuses.count(200)
    assert b.hits == statuses.count(200)
    headers, body = rejected
    assert headers["RateLimit-Policy"] == '"global";q=5;w=3'
    assert headers["RateLimit"].startswith('"global";r=0;t=')
    assert int(headers["Retry-After"]) >= 1
    assert body["error"] == "rate limited"
    assert body["scope"] == "global"
    fig = lb.proxy.record.figures(lb.proxy.clock())
    assert fig.rate_limited_total == {"global": statuses.count(429)}
    assert any(e.kind == "limits" and "rate limiting started" in e.message for e in lb.proxy.events)


async def test_per_client_limit_keys_on_a_header(backends, balancer, client):
    (b,) = await backends(1)
    lb = await balancer(
        [b], limits={"per_client_rps": 1, "per_client_burst": 3, "client_key": "header:X-Api-Key"}
    )
    a = [r.status for r in await get_many(client, lb.url + "/", 5, headers={"X-Api-Key": "alice"})]
    bb = [r.status for r in await get_many(client, lb.url + "/", 5, headers={"X-Api-Key": "bob"})]
    assert a.count(200) == 3
    assert bb.count(200) == 3
    assert a.count(429) == 2


async def test_concurrency_limit(backends, balancer, client):
    (b,) = await backends(1)
    b.delay_s = 0.5
    lb = await balancer([b], limits={"max_in_flight": 2})

    async def one() -> int:
        async with client.get(lb.url + "/") as r:
            await r.read()
            return r.status

    statuses = await asyncio.gather(*(one() for _ in range(5)))
    assert sorted(statuses) == [200, 200, 429, 429, 429]


async def test_limits_change_at_run_time(backends, balancer, client):
    from lbtui.config import LimitsConfig

    (b,) = await backends(1)
    lb = await balancer([b], limits={"rps": 1, "burst": 1})
    assert [r.status for r in await get_many(client, lb.url + "/", 2)] == [200, 429]
    lb.proxy.set_limits(LimitsConfig())
    assert {r.status for r in await get_many(client, lb.url + "/", 5)} == {200}
    assert any(
        e.kind == "limits" and e.message == "limits changed: none (no limits)"
        for e in lb.proxy.events
    )


async def test_max_rps_cap_skips_a_full_backend(backends, balancer, client):
    capped, free = await backends(2)
    lb = await balancer(
        [capped, free],
        backends=[
            {"name": capped.name, "url": capped.url, "max_rps": 1},
            {"name": free.name, "url": free.url},
        ],
    )
    assert {r.status for r in await get_many(client, lb.url + "/", 40)} == {200}
    # the cap's burst (2) plus at most a token or two of refill while the test runs
    assert capped.hits <= 4
    assert free.hits >= 36


# -- breakers, ejection, retries ---------------------------------------------------------------


async def test_breaker_opens_on_500s_and_retries_hide_them(backends, balancer, client):
    bad, good1, good2 = await backends(3)
    bad.status = 500
    lb = await balancer(
        [bad, good1, good2],
        breaker={"min_calls": 4, "window_size": 10, "open_s": 60},
        retries={"attempts": 1, "retry_on_status": [500, 502, 503, 504]},
        ejection={"consecutive_failures": 0},
    )
    statuses = [r.status for r in await get_many(client, lb.url + "/", 60)]
    assert statuses == [200] * 60
    assert bad.hits == 4  # min_calls, then the breaker is open
    stats = lb.proxy.backends[bad.name].breaker.stats(lb.proxy.clock())
    assert stats.state == "open"
    opened = [e for e in lb.proxy.events if e.kind == "breaker" and e.backend == bad.name]
    assert opened
    assert "failure rate 100% >= 50% over 4 calls" in opened[0].message
    assert lb.proxy.record.figures(lb.proxy.clock()).retries_total == 4


async def test_a_listed_status_passes_through_when_the_body_cannot_be_sent_again(
    backends, balancer, client
):
    """A PUT streamed beyond ``retry_buffer_bytes`` cannot be tried elsewhere
    (``RetryPolicy.decide``: body not replayable), so the backend's 503 is the answer — not
    dropped for a retry that cannot happen and turned into a 502."""
    bad, good = await backends(2)
    bad.status = 503
    lb = await balancer(
        [bad, good],
        balancer={"algorithm": "round_robin"},
        retries={"attempts": 1, "retry_on_status": [503], "retry_buffer_bytes": 1024},
        breaker={"enabled": False},
        ejection={"consecutive_failures": 0},
    )
    got = []
    for _ in range(4):
        async with client.put(lb.url + "/", data=b"x" * 4096) as r:
            await r.read()
            got.append((r.status, r.headers.get("X-Backend")))
    assert (503, bad.name) in got
    assert {s for s, _ in got} == {200, 503}
    # and a small one is tried again on the other backend
    statuses = set()
    for _ in range(4):
        async with client.put(lb.url + "/", data=b"x" * 16) as r:
            statuses.add(r.status)
    assert statuses == {200}


async def test_without_status_retries_500s_pass_through_until_the_breaker_opens(
    backends, balancer, client
):
    bad, good = await backends(2)
    bad.status = 500
    lb = await balancer(
        [bad, good],
        breaker={"min_calls": 3, "window_size": 10},
        ejection={"consecutive_failures": 0},
    )
    statuses = [r.status for r in await get_many(client, lb.url + "/", 20)]
    assert statuses.count(500) == 3
    assert statuses.count(200) == 17


async def test_forced_open_breaker_takes_no_traffic(backends, balancer, client):
    a, b = await backends(2)
    lb = await balancer([a, b])
    lb.proxy.force_breaker(a.name, "open")
    await get_many(client, lb.url + "/", 10)
    assert a.hits == 0
    lb.proxy.force_breaker(a.name, "auto")
    await get_many(client, lb.url + "/", 10)
    assert a.hits == 5


async def test_every_breaker_open_gives_503_breaker_open(backends, balancer, client):
    (a,) = await backends(1)
    lb = await balancer([a], proxy={"response_flags_header": True})
    lb.proxy.force_breaker(a.name, "open")
    async with client.get(lb.url + "/") as r:
        assert r.status == 503
        assert r.headers["X-Lbtui-Flags"] == "breaker_open"
        assert (await r.json())["detail"] == "every backend's circuit breaker is open"


async def test_timeout_retried_on_another_backend_for_get_only(backends, balancer, client):
    slow, fast = await backends(2)
    slow.delay_s = 2.0
    lb = await balancer(
        [slow, fast],
        retries={"attempts": 1, "per_try_timeout_ms": 150},
        ejection={"consecutive_failures": 0},
    )
    t0 = time.monotonic()
    statuses = [r.status for r in await get_many(client, lb.url + "/", 4)]
    assert statuses == [200] * 4
    assert time.monotonic() - t0 < 1.9
    # a POST that timed out on the slow one is not sent again
    for _ in range(2):
        async with client.post(lb.url + "/", data=b"x") as r:
            await r.read()
            last = r.status
    assert last in (200, 504)
    assert slow.hits + fast.hits >= 6


async def test_retry_budget_exhausted(backends, balancer, client):
    slow, fast = await backends(2)
    slow.delay_s = 1.0
    lb = await balancer(
        [slow, fast],
        retries={"attempts": 1, "per_try_timeout_ms": 100, "budget_percent": 0, "budget_min": 0},
        ejection={"consecutive_failures": 0},
        proxy={"response_flags_header": True},
    )
    async with client.get(lb.url + "/") as r:  # round robin: the slow one first
        assert r.status == 504
        assert r.headers["X-Lbtui-Flags"] == "upstream_timeout"
    assert fast.hits == 0
    assert any(e.kind == "retry_budget" for e in lb.proxy.events)


async def test_broken_connection_retry_needs_no_budget(backends, balancer, client, dropping):
    (b,) = await backends(1)
    lb = await balancer(
        [b],
        backends=[
            {"name": "dropper", "url": f"http://127.0.0.1:{dropping.port}"},
            {"name": b.name, "url": b.url},
        ],
        retries={"attempts": 0, "budget_percent": 0, "budget_min": 0},
        ejection={"consecutive_failures": 0},
    )
    async with client.get(lb.url + "/") as r:
        assert r.status == 200
    async with client.post(lb.url + "/", data=b"x") as r:  # round robin: dropper again
        assert r.status == 502
    assert dropping.requests == 2
    assert b.hits == 1


async def test_consecutive_failures_eject_and_readmit(backends, balancer, client):
    from tests.integration.conftest import TestBackend

    good, flaky = await backends(2)
    port = flaky.port
    await flaky.stop()
    lb = await balancer(
        [good, flaky], ejection={"consecutive_failures": 2, "base_s": 0.3, "max_percent": 50}
    )
    assert {r.status for r in await get_many(client, lb.url + "/", 10)} == {200}
    name = flaky.name
    assert lb.proxy.outliers.is_ejected(name, lb.proxy.clock())
    back = TestBackend(name)
    await back.start(port)
    try:
        await wait_for(
            lambda: any(
                e.kind == "ejection" and e.backend == name and "ended" in e.message
                for e in lb.proxy.events
            ),
            what="readmission",
        )
        await get_many(client, lb.url + "/", 10)
        assert back.hits >= 4
    finally:
        await back.stop()


# -- health checks -----------------------------------------------------------------------------


async def test_health_checks_take_down_and_bring_back_with_slow_start(backends, balancer, client):
    from tests.integration.conftest import TestBackend

    a, b = await backends(2)
    port = b.port
    lb = await balancer(
        [a, b],
        health={
            "enabled": True,
            "interval_ms": 50,
            "timeout_ms": 40,
            "rise": 2,
            "fall": 2,
            "slow_start_s": 2.0,
        },
    )
    await b.stop()
    name = b.name
    await wait_for(lambda: not lb.proxy.backends[name].healthy(), what="health down")
    assert {r.status for r in await get_many(client, lb.url + "/", 10)} == {200}
    down = [e for e in lb.proxy.events if e.kind == "health" and e.backend == name]
    assert "2 consecutive checks failed" in down[-1].message
    back = TestBackend(name)
    await back.start(port)
    try:
        await wait_for(lambda: lb.proxy.backends[name].healthy(), what="health up")
        lb.proxy.tick()
        w = lb.proxy.backends[name].weight
        assert 0.05 < w < 0.9  # ramping, not at full weight yet
        await wait_for(lambda: lb.proxy.backends[name].weight == 1.0, timeout=5, what="ramp")
        await get_many(client, lb.url + "/", 10)
        assert back.hits >= 4
    finally:
        await back.stop()


# -- fallback ----------------------------------------------------------------------------------


async def test_fallback_from_file_when_everything_is_down(balancer, client, tmp_path: Path):
    page = tmp_path / "maintenance.json"
    page.write_bytes(b'{"status": "maintenance"}\n')
    dead = [{"name": f"d{i}", "url": f"http://127.0.0.1:{free_port()}"} for i in range(2)]
    lb = await balancer(
        [],
        backends=dead,
        fallback={"status": 503, "file": str(page), "content_type": "application/json"},
    )
    t0 = time.monotonic()
    async with client.get(lb.url + "/anything") as r:
        assert r.status == 503
        assert r.headers["X-Lbtui-Fallback"] == "upstream_connect_failure"
        assert r.headers["Content-Type"] == "application/json"
        assert await r.read() == b'{"status": "maintenance"}\n'
    assert time.monotonic() - t0 < 2
    assert any(e.kind == "fallback" for e in lb.proxy.events)
    assert lb.proxy.record.figures(lb.proxy.clock()).fallback_total == {
        "upstream_connect_failure": 1
    }


async def test_stale_fallback_serves_last_good_response(backends, balancer, client):
    (b,) = await backends(1)
    lb = await balancer([b], fallback={"body": "sorry", "stale_for_s": 60})
    async with client.get(lb.url + "/page?x=1") as r:
        fresh = await r.read()
    await b.stop()
    async with client.get(lb.url + "/page?x=1") as r:
        assert r.status == 200
        assert r.headers["X-Lbtui-Fallback"] == "stale"
        assert await r.read() == fresh
    async with client.get(lb.url + "/other") as r:
        assert r.status == 503
        assert await r.read() == b"sorry"


async def test_route_has_its_own_fallback(backends, balancer, client):
    (b,) = await backends(1)
    dead = {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"}
    lb = await balancer(
        [b],
        backends=[dead, {"name": b.name, "url": b.url}],
        routes=[
            {
                "path_prefix": "/api",
                "backends": ["dead"],
                "fallback": {"status": 200, "body": "{}"},
            },
            {"path_prefix": "/", "backends": [b.name]},
        ],
    )
    async with client.get(lb.url + "/api/x") as r:
        assert r.status == 200
        assert r.headers["X-Lbtui-Fallback"] == "upstream_connect_failure"
    async with client.get(lb.url + "/x") as r:
        assert r.headers["X-Backend"] == b.name


async def test_drain_lets_in_flight_finish_and_takes_no_new(backends, balancer, client):
    from lbtui.balancer.pool import AdminState

    a, b = await backends(2)
    a.delay_s = 0.3
    lb = await balancer([a, b])

    async def slow_one() -> int:
        async with client.get(lb.url + "/") as r:
            await r.read()
            return r.status

    task = asyncio.ensure_future(slow_one())  # round robin: goes to a
    # in flight on the balancer's side and arrived at a (counted as started before it is
    # sent: waiting on the first alone let it reach a after ``hits_before`` was read)
    await wait_for(
        lambda: lb.proxy.backends[a.name].in_flight == 1 and a.hits == 1, what="in flight on a"
    )
    lb.proxy.set_admin(a.name, AdminState.DRAINING)
    hits_before = a.hits
    await get_many(client, lb.url + "/", 6)
    assert await task == 200
    assert a.hits == hits_before
    assert any("draining (1 requests in flight)" in e.message for e in lb.proxy.events)
