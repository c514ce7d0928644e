"""The balancer forwarding real HTTP between real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from tests.integration.conftest import pattern_bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def raw_request(port: int, data: bytes, *, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        if read_until_close:
            return await asyncio.wait_for(reader.read(), 10)
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_round_robin_spreads_evenly(backends, balancer, client):
    bs = await backends(4)
    lb = await balancer(bs)
    for _ in range(400):
        async with client.get(lb.url + "/") as r:
            assert r.status == 200
            await r.read()
    assert [b.hits for b in bs] == [100, 100, 100, 100]
    # every outcome is in the record, once
    for b in bs:
        fig = lb.proxy.backends[b.name].record.figures(lb.proxy.clock())
        assert fig.requests_total == 100
        assert fig.responses_total["2xx"] == 100
        assert fig.in_flight == 0
    assert lb.proxy.record.requests_total == 400
    assert lb.proxy.record.responses_total[2] == 400


async def test_weighted_round_robin_follows_weights(backends, balancer, client):
    bs = await backends(3)
    lb = await balancer(
        bs,
        balancer={"algorithm": "weighted_round_robin"},
        backends=[
            {"name": bs[0].name, "url": bs[0].url, "weight": 5},
            {"name": bs[1].name, "url": bs[1].url, "weight": 1},
            {"name": bs[2].name, "url": bs[2].url, "weight": 1},
        ],
    )
    order = []
    for _ in range(14):
        async with client.get(lb.url + "/") as r:
            order.append(r.headers["X-Backend"])
            await r.read()
    a, b, c = (x.name for x in bs)
    assert order == [a, a, b, a, c, a, a] * 2


async def test_ip_hash_sticks_one_client_to_one_backend(backends, balancer, client):
    bs = await backends(4)
    lb = await balancer(bs, balancer={"algorithm": "ip_hash"})
    seen = set()
    for _ in range(40):
        async with client.get(lb.url + "/") as r:
            seen.add(r.headers["X-Backend"])
    assert len(seen) == 1


async def test_consistent_hash_on_header(backends, balancer, client):
    bs = await backends(4)
    lb = await balancer(bs, balancer={"algorithm": "consistent_hash", "hash_on": "header:X-User"})
    first: dict[str, str] = {}
    for rnd in range(3):
        for user in range(60):
            async with client.get(lb.url + "/", headers={"X-User": f"u{user}"}) as r:
                got = r.headers["X-Backend"]
                if rnd == 0:
                    first[f"u{user}"] = got
                else:
                    assert first[f"u{user}"] == got
    # 60 keys over 4 backends: every backend gets some
    assert len(set(first.values())) == 4


async def test_consistent_hash_on_cookie(backends, balancer):
    bs = await backends(3)
    lb = await balancer(bs, balancer={"algorithm": "consistent_hash", "hash_on": "cookie:sid"})
    for sid in ("alpha", "beta", "gamma"):
        seen = set()
        for _ in range(10):
            async with (
                aiohttp.ClientSession(cookies={"sid": sid}) as s,
                s.get(lb.url + "/") as r,
            ):
                seen.add(r.headers["X-Backend"])
        assert len(seen) == 1


async def test_random_and_least_request_use_every_backend(backends, balancer, client):
    for algorithm in ("random", "least_request", "least_connections"):
        bs = await backends(3)
        lb = await balancer(bs, balancer={"algorithm": algorithm})
        for _ in range(150):
            async with client.get(lb.url + "/") as r:
                assert r.status == 200
                await r.read()
        assert all(b.hits >= 15 for b in bs), (algorithm, [b.hits for b in bs])
        assert sum(b.hits for b in bs) == 150


async def _concurrent_gets(client, url: str, n: int, concurrency: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem, client.get(url) as r:
            assert r.status == 200
            counts[r.headers["X-Backend"]] += 1
            await r.read()

    await asyncio.gather(*(one() for _ in range(n)))
    return counts


@pytest.mark.parametrize("algorithm", ["least_connections", "least_request", "p2c_ewma"])
async def test_load_aware_algorithms_avoid_a_slow_backend(backends, balancer, client, algorithm):
    bs = await backends(3)
    bs[0].delay_s = 0.2
    lb = await balancer(bs, balancer={"algorithm": algorithm})
    counts = await _concurrent_gets(client, lb.url + "/", 240, 12)
    # round robin would send 80 to the slow one
    assert counts[bs[0].name] < 40, counts


async def test_headers_are_rewritten(backends, balancer):
    (b,) = await backends(1)
    lb = await balancer([b])
    req = (
        b"GET /echo HTTP/1.1\r\n"
        b"Host: shop.example.test:8443\r\n"
        b"Connection: keep-alive, X-Drop-Me\r\n"
        b"X-Drop-Me: secret\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"TE: trailers\r\n"
        b"Proxy-Authorization: Basic eDp5\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"Via: 1.0 edge\r\n"
        b"X-Repeat: one\r\n"
        b"X-Repeat: two\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    raw = await raw_request(lb.port, req, read_until_close=False)
    body = raw.split(b"\r\n\r\n", 1)[1]
    info = json.loads(body)
    headers = info["headers"]
    names = [k.lower() for k, _ in headers]
    for gone in ("x-drop-me", "keep-alive", "te", "proxy-authorization", "proxy-connection"):
        assert gone not in names, gone
    got = {k.lower(): v for k, v in headers}
    assert got["host"] == "shop.example.test:8443"
    assert got["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == "shop.example.test:8443"
    assert got["via"] == "1.0 edge, 1.1 lbtui"
    assert [v for k, v in headers if k.lower() == "x-repeat"] == ["one", "two"]


async def test_raw_path_and_query_are_byte_exact(backends, balancer, client):
    (b,) = await backends(1)
    lb = await balancer([b])
    raw = "/a%2Fb/%7Euser/caf%C3%A9;p=1?q=%20x&y=1&y=2&z=%2B"
    async with client.get(URL(lb.url + raw, encoded=True)) as r:
        info = await r.json()
    assert info["raw_path"] == raw


async def test_response_headers_status_and_repeated_cookies(backends, balancer, client):
    (b,) = await backends(1)
    lb = await balancer([b])
    async with client.get(lb.url + "/cookies?status=418") as r:
        assert r.status == 418
        assert r.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    async with client.get(lb.url + "/hop") as r:
        assert "X-Secret" not in r.headers
        assert "Keep-Alive" not in r.headers
        assert r.headers["X-Backend"] == b.name


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(backends, balancer, status):
    (b,) = await backends(1)
    lb = await balancer([b])
    raw = await raw_request(
        lb.port,
        f"GET /x?status={status} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(),
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode())
    assert body == b""


async def test_head_has_no_body_but_keeps_length(backends, balancer):
    (b,) = await backends(1)
    lb = await balancer([b])
    raw = await raw_request(
        lb.port, b"HEAD /big?size=5000&sized=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nContent-Length: 5000" in head
    assert body == b""


async def _chunks(n: int, size: int = 1 << 20) -> AsyncIterator[bytes]:
    left = n
    while left:
        k = min(left, size)
        yield pattern_bytes(k)
        left -= k


@pytest.mark.parametrize("sized", [True, False])
async def test_large_bodies_stream_byte_exact(backends, balancer, client, sized):
    (b,) = await backends(1)
    lb = await balancer([b])
    n = 48 * 1024 * 1024 + 7
    # download
    digest = hashlib.sha256()
    got = 0
    async with client.get(lb.url + f"/big?size={n}&sized={int(sized)}") as r:
        assert r.status == 200
        if sized:
            assert r.headers["Content-Length"] == str(n)
        else:
            assert r.headers["Transfer-Encoding"] == "chunked"
        async for chunk in r.content.iter_any():
            digest.update(chunk)
            got += len(chunk)
    assert got == n
    assert digest.hexdigest() == hashlib.sha256(pattern_bytes(n)).hexdigest()
    # upload
    headers = {"Content-Length": str(n)} if sized else {}
    async with client.put(lb.url + "/up", data=_chunks(n), headers=headers) as r:
        info = await r.json()
    assert info["body_size"] == n
    assert info["body_sha256"] == hashlib.sha256(pattern_bytes(n)).hexdigest()


async def test_read_timeout_gives_504_naming_backend(backends, balancer, client):
    (b,) = await backends(1)
    lb = await balancer([b], proxy={"read_timeout_ms": 200})
    async with client.get(lb.url + "/sleep?s=3") as r:
        assert r.status == 504
        body = await r.json()
    assert body["backend"] == b.name
    assert body["error"] == "upstream timeout"
    assert "200 ms" in body["detail"]


async def test_connect_failure_fails_over(backends, balancer, client):
    bs = await backends(2)
    dead = {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"}
    lb = await balancer(bs, backends=[dead] + [{"name": b.name, "url": b.url} for b in bs])
    for _ in range(30):
        async with client.get(lb.url + "/") as r:
            assert r.status == 200
            await r.read()
    assert sum(b.hits for b in bs) == 30
    fig = lb.proxy.backends["dead"].record.figures(lb.proxy.clock())
    # five connect failures in a row eject it (passive ejection); then it gets no more tries
    assert fig.failures_total["connect"] == 5
    ejections = [e for e in lb.proxy.events if e.kind == "ejection" and e.backend == "dead"]
    assert ejections
    assert "5 consecutive failures" in ejections[0].message


async def test_post_fails_over_on_connect_failure(backends, balancer, client):
    (b,) = await backends(1)
    dead = {"name": "dead", "url": f"http://127.0.0.1:{free_port()}"}
    lb = await balancer([b], backends=[dead, {"name": b.name, "url": b.url}])
    for _ in range(4):
        async with client.post(lb.url + "/p", data=b"x" * 100_000) as r:
            assert r.status == 200
            assert (await r.json())["body_size"] == 100_000


async def test_all_backends_refusing_gives_502(balancer, client):
    dead = [{"name": f"d{i}", "url": f"http://127.0.0.1:{free_port()}"} for i in range(2)]
    lb = await balancer([], backends=dead, proxy={"response_flags_header": True})
    async with client.get(lb.url + "/") as r:
        assert r.status == 502
        assert r.headers["X-Lbtui-Flags"] == "upstream_connect_failure"
        body = await r.json()
    assert body["error"] == "upstream connect failure"
    assert "tried d" in body["detail"]


async def test_idempotent_request_retried_once_after_broken_connection(
    backends, balancer, client, dropping
):
    (b,) = await backends(1)
    lb = await balancer(
        [b],
        ejection={"consecutive_failures": 0},
        backends=[
            {"name": "dropper", "url": f"http://127.0.0.1:{dropping.port}"},
            {"name": b.name, "url": b.url},
        ],
    )
    for _ in range(6):
        async with client.get(lb.url + "/") as r:
            assert r.status == 200
            await r.read()
    # each GET reached the dropper once (never twice) and was retried once on the good backend
    assert dropping.requests == 6
    assert b.hits == 6


async def test_post_that_reached_a_backend_is_never_resent(backends, balancer, client, dropping):
    (b,) = await backends(1)
    lb = await balancer(
        [b],
        backends=[
            {"name": "dropper", "url": f"http://127.0.0.1:{dropping.port}"},
            {"name": b.name, "url": b.url},
        ],
    )
    async with client.post(lb.url + "/order", data=b"buy") as r:
        assert r.status == 502
        body = await r.json()
    assert body["backend"] == "dropper"
    assert dropping.requests == 1
    assert b.hits == 0


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"4"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 40000 + b"\r\n\r\n", b"4"),
    ],
    ids=["garbage", "bad-header", "bad-length", "long-line", "huge-header"],
)
async def test_malformed_requests_get_4xx_and_service_goes_on(
    backends, balancer, client, raw, expect
):
    (b,) = await backends(1)
    lb = await balancer([b])
    got = await raw_request(lb.port, raw)
    status_line = got.split(b"\r\n", 1)[0]
    assert status_line.split(b" ")[1].startswith(expect), status_line
    assert b.hits == 0
    async with client.get(lb.url + "/") as r:
        assert r.status == 200


async def test_routes_send_paths_and_hosts_to_their_pools(backends, balancer, client):
    api, static1, static2 = await backends(3)
    lb = await balancer(
        [api, static1, static2],
        routes=[
            {
                "path_prefix": "/static",
                "host": "cdn.example.test",
                "backends": [static1.name, static2.name],
            },
            {"path_prefix": "/", "backends": [api.name]},
        ],
    )
    for _ in range(4):
        async with client.get(lb.url + "/static/x.css", headers={"Host": "cdn.example.test"}) as r:
            assert r.headers["X-Backend"] in (static1.name, static2.name)
        async with client.get(lb.url + "/static/x.css", headers={"Host": "other.test"}) as r:
            assert r.headers["X-Backend"] == api.name
    assert static1.hits == 2
    assert static2.hits == 2


@pytest.mark.parametrize("upstream", ["lean", "aiohttp"])
async def test_both_upstream_clients_forward_the_same_bytes(backends, balancer, client, upstream):
    bs = await backends(2)
    lb = await balancer(bs, proxy={"upstream": upstream})
    n = 3 * 1024 * 1024 + 1
    async with client.get(lb.url + f"/big?size={n}") as r:
        assert await r.read() == pattern_bytes(n)
    async with client.put(lb.url + "/up", data=_chunks(n)) as r:
        assert (await r.json())["body_sha256"] == hashlib.sha256(pattern_bytes(n)).hexdigest()
    raw = await raw_request(
        lb.port, b"HEAD /big?size=10&sized=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert raw.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK"
    assert raw.endswith(b"\r\n\r\n")
    async with client.get(lb.url + "/x?status=204") as r:
        assert r.status == 204
    # keep-alive connections are reused: many requests, few connections
    for _ in range(20):
        async with client.get(lb.url + "/") as r:
            await r.read()
    if upstream == "lean":
        opened = sum(
            lb.proxy.upstream.open_connections(b.host, b.port) for b in lb.proxy.backends.values()
        )
        assert 1 <= opened <= 4
