"""What a client listener must get right beyond forwarding, on both engines (``balancer`` runs
every test on the fast listener and on aiohttp's): pipelining, HTTP/1.0, a body nobody read,
limits, a client that goes away, the answer head the listener adds, graceful shutdown."""

from __future__ import annotations

import asyncio
import json

import pytest

from lbtui.balancer.listener import FastListener


async def read_answers(
    reader: asyncio.StreamReader, n: int
) -> list[tuple[bytes, dict[str, str], bytes]]:
    """``n`` answers with a Content-Length, in order: (status line, headers, body)."""
    out = []
    for _ in range(n):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 10)
        out.append((lines[0].encode(), headers, body))
    return out


async def test_pipelined_requests_are_answered_in_order(backends, balancer):
    bs = await backends(2)
    bs[0].delay_s = 0.05  # the first answer is the slow one: order must still hold
    lb = await balancer(bs)
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    try:
        writer.write(b"".join(f"GET /p{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(6)))
        answers = await read_answers(reader, 6)
    finally:
        writer.close()
    assert [json.loads(body)["raw_path"] for _, _, body in answers] == [f"/p{i}" for i in range(6)]
    assert all(status.startswith(b"HTTP/1.1 200") for status, _, _ in answers)


async def test_http_10_closes_unless_asked_to_keep_alive(backends, balancer):
    (b,) = await backends(1)
    lb = await balancer([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(b"GET /a HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
    ((status, headers, _),) = await read_answers(reader, 1)
    assert status.startswith(b"HTTP/1.0 200")
    assert headers["connection"].lower() == "keep-alive"
    writer.write(b"GET /b HTTP/1.0\r\nHost: t\r\n\r\n")
    ((status, _, body),) = await read_answers(reader, 1)
    assert status.startswith(b"HTTP/1.0 200")
    assert json.loads(body)["raw_path"] == "/b"
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed after a plain 1.0 request
    writer.close()


async def test_answer_head_has_date_server_and_length(backends, balancer):
    (b,) = await backends(1)
    lb = await balancer([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    ((status, headers, body),) = await read_answers(reader, 1)
    writer.close()
    assert status == b"HTTP/1.1 200 OK"
    assert headers["content-length"] == str(len(body))
    assert "date" in headers
    assert "server" in headers
    assert "connection" not in headers  # HTTP/1.1 keep-alive: nothing to say
    assert "transfer-encoding" not in headers


async def test_a_body_nobody_read_does_not_break_the_connection(backends, balancer):
    """A POST rejected before its (large) body is read: the body is skipped and the next
    request on the same connection is parsed where it starts."""
    (b,) = await backends(1)
    lb = await balancer([b], limits={"rps": 0.001, "burst": 1})
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    try:
        writer.write(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
        ((status, _, _),) = await read_answers(reader, 1)
        assert status.startswith(b"HTTP/1.1 200")
        body = b"z" * 300_000
        writer.write(
            b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        writer.write(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        answers = await read_answers(reader, 2)
    finally:
        writer.close()
    assert [a[0].split(b" ")[1] for a in answers] == [b"429", b"429"]
    assert b.hits == 1


async def test_a_client_that_leaves_mid_answer_is_not_the_backends_fault(backends, balancer):
    (b,) = await backends(1)
    lb = await balancer([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(b"GET /big?size=50000000 HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(reader.readexactly(100_000), 10)
    writer.transport.abort()
    backend = lb.proxy.backends[b.name]
    for _ in range(200):
        if backend.record.in_flight == 0:
            break
        await asyncio.sleep(0.05)
    fig = backend.record.figures(lb.proxy.clock())
    assert fig.in_flight == 0
    assert sum(fig.failures_total.values()) == 0
    assert lb.proxy.record.in_flight == 0


async def test_graceful_shutdown_finishes_what_is_in_flight(backends, balancer):
    (b,) = await backends(1)
    lb = await balancer([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(lb.stop())
    ((status, _, _),) = await read_answers(reader, 1)
    await asyncio.wait_for(stopping, 10)
    writer.close()
    assert status.startswith(b"HTTP/1.1 200")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", lb.port)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 20000 + b"\r\n\r\n", b"431"),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
            b"431",
        ),
    ],
    ids=["long-target", "long-field", "many-fields"],
)
async def test_fast_listener_limits(backends, balancer, raw, status):
    (b,) = await backends(1)
    lb = await balancer([b])
    if not isinstance(lb._fast, FastListener):
        pytest.skip("the fast listener's own statuses (aiohttp answers 400)")
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(raw)
    got = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert got.split(b"\r\n", 1)[0].split(b" ")[1] == status
    assert b"Connection: close" in got
    assert b.hits == 0
