"""Helpers for the hardening tests: raw sockets, waits with deadlines, fd and socket counts.

The hardening tests talk bytes, not a client library: what is under test is what a hostile or
broken peer can do, and a client library would refuse to send most of it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psutil
import pytest

from lbtui import config as config_mod
from lbtui.balancer.server import BalancerServer


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Wait until ``cond()`` holds, polling; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or cond}")
        await asyncio.sleep(0.02)


async def read_all(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    """Everything until the peer closes (or the deadline: then what came)."""
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            return out
        except ConnectionError:
            return out
        if not chunk:
            return out
        out += chunk


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection, half-close, return all that comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        got = await read_all(reader, timeout)
    finally:
        writer.close()
    return got


def status(answer: bytes) -> int | None:
    """The status of the first answer in ``answer`` (None: the connection closed silently)."""
    if not answer:
        return None
    line = answer.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), f"not a status line: {line[:80]!r}"
    return int(line.split(b" ")[1])


def header(answer: bytes, name: str) -> str | None:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def close_wait() -> int:
    """This process's TCP sockets in CLOSE_WAIT (the peer closed, we did not)."""
    proc = psutil.Process()
    conns = proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections()
    return sum(1 for c in conns if c.status == psutil.CONN_CLOSE_WAIT)


def client_connections(lb: BalancerServer) -> int:
    """Client connections the balancer holds open, on either listener."""
    if lb._fast is not None:
        return len(lb._fast.connections)
    assert lb._runner is not None
    server = lb._runner.server
    assert server is not None
    return len(server.connections)  # type: ignore[attr-defined]


async def _balancers(engine: str) -> AsyncIterator[Callable[..., Awaitable[BalancerServer]]]:
    started: list[BalancerServer] = []

    async def make(backend_urls: list[str], /, **sections: Any) -> BalancerServer:
        data: dict[str, Any] = {"listener": {"address": "127.0.0.1:0", "engine": engine}}
        data["backends"] = [{"name": f"b{i + 1}", "url": u} for i, u in enumerate(backend_urls)]
        data.update(sections)
        server = BalancerServer(config_mod.from_dict(data, "test"))
        await server.start()
        started.append(server)
        return server

    yield make
    for s in started:
        await s.stop()


@pytest.fixture(name="fast")
async def fast_fixture() -> AsyncIterator[Callable[..., Awaitable[BalancerServer]]]:
    """The balancer on the fast listener (what ``lbtui serve`` runs), with config sections:
    the client timeouts are the fast listener's alone."""
    async for make in _balancers("fast"):
        yield make


@pytest.fixture(name="either", params=["fast", "aiohttp"])
async def either_fixture(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[BalancerServer]]]:
    """The balancer on each listener (``[listener] engine``): what must hold on both."""
    async for make in _balancers(request.param):
        yield make
