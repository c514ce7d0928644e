"""Request bodies and slow clients (issue #19, findings 2 and 3), through real sockets.

A malformed body ends its request at once, with its in-flight slot, its backend connection and
its client connection; a slow head or body meets a deadline; an oversized body meets a limit."""

from __future__ import annotations

import asyncio

from tests.integration.hardening import (
    client_connections,
    close_wait,
    either_fixture,  # noqa: F401  (the ``either`` fixture)
    exchange,
    fast_fixture,  # noqa: F401  (the ``fast`` fixture)
    open_fds,
    read_all,
    status,
    wait_for,
)

CHUNKED_HEAD = (
    b"POST /upload HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
)


async def test_fifty_malformed_chunked_bodies_free_every_slot_and_socket(backends, either):
    (b,) = await backends(1)
    lb = await either([b.url], limits={"max_in_flight": 50})
    assert status(await exchange(lb.port, b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n", 0.5)) == 200
    fds = open_fds()
    clients = [await asyncio.open_connection("127.0.0.1", lb.port) for _ in range(50)]
    for _, w in clients:
        w.write(CHUNKED_HEAD)
    # The heads (and a first chunk) have reached the backend: every slot is taken.
    await wait_for(lambda: b.hits >= 51, what="fifty uploads under way at the backend")
    assert lb.proxy.record.in_flight == 50
    for _, w in clients:
        w.write(b"zz\r\n")  # not a chunk size
    answers = await asyncio.gather(*(read_all(r, 10) for r, _ in clients))
    for got in answers:
        # Nothing was answered yet: the client learns why, and the connection closes.
        assert status(got) in (400, None)
    for _, w in clients:
        w.close()
    await wait_for(lambda: lb.proxy.record.in_flight == 0, what="no request in flight")
    await wait_for(lambda: client_connections(lb) == 0, what="client connections closed")
    # Not a 429: the slots are free.
    assert status(await exchange(lb.port, b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n", 0.5)) == 200
    await wait_for(lambda: close_wait() == 0, what="no socket left in CLOSE_WAIT")
    await wait_for(lambda: open_fds() <= fds + 2, what=f"fds back near {fds}")


async def test_malformed_small_body_is_answered_400_before_any_backend(backends, either):
    (b,) = await backends(1)
    lb = await either([b.url])
    got = await exchange(
        lb.port,
        b"POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
    )
    assert status(got) in (400, None)
    await wait_for(lambda: lb.proxy.record.in_flight == 0)
    await wait_for(lambda: client_connections(lb) == 0, what="the connection closed")


async def test_slowloris_heads_get_408_and_are_closed(backends, fast):
    (b,) = await backends(1)
    lb = await fast([b.url], proxy={"client_header_timeout_s": 0.5})
    clients = [await asyncio.open_connection("127.0.0.1", lb.port) for _ in range(20)]
    for _, w in clients:
        w.write(b"GET / HTTP/1.1\r\nHost: lb\r\n")

    async def drip(w: asyncio.StreamWriter) -> None:
        try:
            for _ in range(30):
                w.write(b"X")  # one header byte at a time, forever
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass

    drips = [asyncio.ensure_future(drip(w)) for _, w in clients]
    answers = await asyncio.gather(*(read_all(r, 5) for r, _ in clients))
    for d in drips:
        d.cancel()
    for _, w in clients:
        w.close()
    assert [status(a) for a in answers] == [408] * 20
    await wait_for(lambda: not lb._fast.connections, what="slowloris connections closed")
    assert b.hits == 0


async def test_a_silent_head_is_closed_too(backends, fast):
    (b,) = await backends(1)
    lb = await fast([b.url], proxy={"client_header_timeout_s": 0.3})
    got = await exchange(lb.port, b"GET / HTT", 5)
    assert status(got) == 408


async def test_a_body_that_stops_is_cut_and_frees_its_slot(backends, fast):
    (b,) = await backends(1)
    lb = await fast([b.url], proxy={"client_body_timeout_s": 0.5}, limits={"max_in_flight": 1})
    # 10 of 100 bytes: read whole before any backend is asked, so the answer is a 408.
    got = await exchange(
        lb.port, b"POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 100\r\n\r\n0123456789", 5
    )
    assert status(got) == 408
    await wait_for(lambda: lb.proxy.record.in_flight == 0)
    # A chunked body streams: its head is at the backend when it stops. Cut all the same.
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(CHUNKED_HEAD)
    await wait_for(lambda: b.hits >= 1, what="the upload reached the backend")
    got = await read_all(reader, 5)
    writer.close()
    assert status(got) in (408, None)
    await wait_for(lambda: lb.proxy.record.in_flight == 0, what="the slot freed")
    assert status(await exchange(lb.port, b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n", 0.5)) == 200


async def test_a_slow_backend_is_not_a_slow_client(backends, fast):
    (b,) = await backends(1)
    lb = await fast([b.url], proxy={"client_header_timeout_s": 0.3, "client_body_timeout_s": 0.3})
    got = await exchange(
        lb.port,
        b"POST /sleep?s=0.8 HTTP/1.1\r\nHost: lb\r\nContent-Length: 3\r\nConnection: close"
        b"\r\n\r\nabc",
    )
    assert status(got) == 200


async def test_keepalive_connection_survives_between_requests_and_then_closes(backends, fast):
    (b,) = await backends(1)
    lb = await fast([b.url], proxy={"client_header_timeout_s": 0.3})
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    for _ in range(2):
        writer.write(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert status(head) == 200
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(0.5)  # idle longer than the header timeout: not a slow head
    writer.close()


async def test_bodies_over_max_body_bytes_get_413(backends, either):
    (b,) = await backends(1)
    lb = await either([b.url], proxy={"max_body_bytes": 1000})
    got = await exchange(lb.port, b"POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 5000\r\n\r\n")
    assert status(got) == 413
    assert b.hits == 0
    small = await exchange(
        lb.port, b"POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    assert status(small) == 200
    chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
    got = await exchange(
        lb.port,
        b"POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3,
    )
    assert status(got) in (413, None)
    await wait_for(lambda: lb.proxy.record.in_flight == 0)
    assert all(r["body_size"] <= 1000 for r in b.requests)
