"""Backends that lie (issue #19, findings 4 and 7), through real sockets.

A backend connection carries exactly the response it was asked for; a response head over
``max_upstream_header_bytes`` or a status outside 100-599 is a 502 that says why; an IPv6
backend is checked and used like any other."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import pytest

from tests.integration.conftest import TestBackend
from tests.integration.hardening import (
    exchange,
    fast_fixture,  # noqa: F401  (the ``fast`` fixture)
    header,
    status,
    wait_for,
)

GET = b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
SMUGGLED = b"HTTP/1.1 200 OK\r\nX-Smuggled: yes\r\nContent-Length: 0\r\n\r\n"


class RawBackend:
    """Answers every request head with what ``answer`` returns (written as it is)."""

    def __init__(self, answer: Callable[[int], list[bytes]], after_s: float = 0.0) -> None:
        self.answer = answer
        self.after_s = after_s
        self.connections = 0
        self.requests = 0
        self.closed_by_peer = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                first, *later = self.answer(self.requests)
                writer.write(first)
                for part in later:
                    await asyncio.sleep(self.after_s)
                    writer.write(part)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_peer += 1
        writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def raw_backend() -> AsyncIterator[Callable[..., asyncio.Future[RawBackend]]]:
    started: list[RawBackend] = []

    async def make(answer: Callable[[int], list[bytes]], after_s: float = 0.0) -> RawBackend:
        b = RawBackend(answer, after_s)
        await b.start()
        started.append(b)
        return b

    yield make  # type: ignore[misc]
    for b in started:
        assert b.server is not None
        b.server.close()


UPSTREAMS = ("lean", "aiohttp")


async def test_bytes_after_a_response_are_never_a_second_response(raw_backend, fast):
    b = await raw_backend(lambda n: [OK + SMUGGLED])
    lb = await fast([b.url])
    for _ in range(3):
        got = await exchange(lb.port, GET)
        assert status(got) == 200
        assert got.endswith(b"\r\n\r\nok")
        assert header(got, "X-Smuggled") is None
    # Each connection that carried extra bytes was closed, never reused.
    await wait_for(lambda: b.closed_by_peer == 3, what="the backend's connections closed")
    assert b.connections == 3


async def test_bytes_on_an_idle_backend_connection_close_it(raw_backend, fast):
    b = await raw_backend(lambda n: [OK, SMUGGLED], after_s=0.05)
    lb = await fast([b.url])
    assert status(await exchange(lb.port, GET)) == 200
    await wait_for(lambda: b.closed_by_peer == 1, what="the idle connection closed")
    got = await exchange(lb.port, GET)
    assert status(got) == 200
    assert header(got, "X-Smuggled") is None
    assert b.connections == 2


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_a_status_outside_100_to_599_is_a_502(raw_backend, fast, upstream):
    b = await raw_backend(lambda n: [b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"])
    lb = await fast([b.url], proxy={"upstream": upstream, "max_attempts": 1})
    got = await exchange(lb.port, GET)
    assert status(got) == 502
    body = json.loads(got.split(b"\r\n\r\n", 1)[1])
    assert "999" in body["detail"]


async def test_a_huge_response_head_is_refused_quickly(raw_backend, fast):
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    b = await raw_backend(lambda n: [b"HTTP/1.1 200 OK\r\n" + filler * 20_000])  # 20 MB
    lb = await fast([b.url], proxy={"max_attempts": 1})
    t0 = time.monotonic()
    got = await exchange(lb.port, GET)
    assert time.monotonic() - t0 < 5
    assert status(got) == 502
    body = json.loads(got.split(b"\r\n\r\n", 1)[1])
    assert "over 65536 bytes" in body["detail"]


async def test_max_upstream_header_bytes_is_configurable(raw_backend, fast):
    head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 3000 + b"\r\nContent-Length: 2\r\n\r\nok"
    b = await raw_backend(lambda n: [head])
    lb = await fast([b.url], proxy={"max_upstream_header_bytes": 2048, "max_attempts": 1})
    assert status(await exchange(lb.port, GET)) == 502
    lb2 = await fast([b.url])
    assert status(await exchange(lb2.port, GET)) == 200


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_ipv6_backends_pass_health_checks_and_serve(fast, upstream):
    b = TestBackend("v6")
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", b.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "::1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        lb = await fast(
            [f"http://[::1]:{port}"],
            proxy={"upstream": upstream},
            health={"enabled": True, "interval_ms": 50, "rise": 1, "fall": 1},
        )
        backend = lb.proxy.backend("b1")
        await wait_for(lambda: b.hits >= 2, what="health checks answered")
        assert backend.health.state.value == "up"
        got = await exchange(lb.port, b"GET /x HTTP/1.0\r\n\r\n")
        assert status(got) == 200
        sent = json.loads(got.split(b"\r\n\r\n", 1)[1])
        assert ["Host", f"[::1]:{port}"] in sent["headers"]
    finally:
        await runner.cleanup()
