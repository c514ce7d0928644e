"""The async fault helpers on a real event loop, and a reset over a real socket.

Timing assertions are deadline-tolerant: a paced stream may never be *faster* than its schedule
(tight lower bound), and may be slower by whatever a busy 2-core machine adds (loose upper one).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from lbtui.balancer.faults import (
    FAULT_HEADER,
    InjectedResponse,
    apply_delay,
    before_send,
    body_fault,
    fault_response,
    hang,
    reset_after,
    throttled,
)
from lbtui.balancer.upstream import UpstreamResponse
from lbtui.core.faults import FaultDecision, FaultKind
from lbtui.errors import UpstreamBroken, UpstreamConnectError, UpstreamTimeout

SLACK_S = 1.0
"""What a loaded CI machine may add to a short timed step."""
EARLY_S = 0.01
"""Timer granularity: a sleep may wake this much early by the loop's clock."""


class Source:
    """An async generator of ``chunks`` that notes whether it was closed."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False
        self.taken = 0

    async def gen(self) -> AsyncIterator[bytes]:
        try:
            for c in self.chunks:
                self.taken += 1
                yield c
        finally:
            self.closed = True


async def collect(it: AsyncIterator[bytes], into: list[bytes] | None = None) -> list[bytes]:
    """The chunks of ``it``; each also goes to ``into`` as it arrives (kept if ``it`` raises)."""
    out = [] if into is None else into
    async for c in it:
        out.append(c)
    return out


def elapsed_since(t0: float) -> float:
    return asyncio.get_running_loop().time() - t0


def loop_time() -> float:
    return asyncio.get_running_loop().time()


# -- bandwidth ---------------------------------------------------------------------------------


async def test_throttled_stream_takes_size_over_rate():
    body = bytes(range(256)) * 100  # 25 600 B
    kbps = 128.0  # 128 000 B/s → 0.2 s
    t0 = loop_time()
    out = await collect(throttled(Source([body[:1000], body[1000:]]).gen(), kbps))
    took = elapsed_since(t0)
    assert b"".join(out) == body
    assert max(len(c) for c in out) <= int(kbps * 1000 * 0.05)  # paced in small slices
    expected = len(body) / (kbps * 1000)
    assert expected - EARLY_S <= took <= expected + SLACK_S


async def test_throttled_rate_holds_from_the_first_byte():
    kbps = 10.0  # 500-byte slices, each due 50 ms after the previous one
    src = Source([b"x" * 2000])
    arrivals: list[float] = []
    t0 = loop_time()
    async for _ in throttled(src.gen(), kbps):
        arrivals.append(elapsed_since(t0))
    assert len(arrivals) == 4
    for i, at in enumerate(arrivals, start=1):
        assert at >= i * 0.05 - EARLY_S
    assert src.closed


async def test_throttled_refuses_a_zero_rate():
    with pytest.raises(ValueError, match="kbps must be > 0"):
        await collect(throttled(Source([b"x"]).gen(), 0))


# -- reset -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 9])
async def test_reset_after_lets_exactly_n_bytes_through_then_breaks(n: int):
    src = Source([b"abcd", b"efgh", b"ijklmnop"])
    got: list[bytes] = []
    with pytest.raises(UpstreamBroken, match=f"reset after {n} body bytes") as info:
        await collect(reset_after(src.gen(), n, "api-1"), got)
    assert b"".join(got) == b"abcdefghijklmnop"[:n]
    assert info.value.backend == "api-1"
    assert info.value.reason == "upstream_reset"
    # the upstream body is let go, not left half-read (n = 0: never started)
    assert src.closed or src.taken == 0


async def test_reset_after_cuts_even_a_body_shorter_than_n():
    src = Source([b"ab"])
    got: list[bytes] = []
    with pytest.raises(UpstreamBroken):
        await collect(reset_after(src.gen(), 100, "api-1"), got)
    assert got == [b"ab"]


async def test_reset_does_not_read_the_body_when_n_is_zero():
    src = Source([b"abcd"])
    with pytest.raises(UpstreamBroken):
        await collect(reset_after(src.gen(), 0, "api-1"))
    assert src.taken == 0


async def test_body_fault_dispatches_on_kind():
    with pytest.raises(UpstreamBroken):
        await collect(body_fault(FaultDecision(FaultKind.RESET, after_bytes=2), gen(), "b"))
    slow = body_fault(FaultDecision(FaultKind.BANDWIDTH, kbps=1000), gen(), "b")
    assert b"".join(await collect(slow)) == b"abcdef"
    same = gen()
    assert body_fault(FaultDecision(FaultKind.DELAY, delay_s=0.1), same, "b") is same


async def gen() -> AsyncIterator[bytes]:
    yield b"abc"
    yield b"def"


async def test_reset_over_a_real_socket_cuts_the_client_connection():
    """As the proxy does it: head out, n body bytes, then the transport is closed."""
    body = b"z" * 10_000

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = len(body)
        await resp.prepare(request)

        async def upstream() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 1000):
                yield body[i : i + 1000]

        try:
            async for chunk in reset_after(upstream(), 2500, "api-1"):
                await resp.write(chunk)
        except UpstreamBroken:
            assert request.transport is not None
            request.transport.close()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        got: list[bytes] = []
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as r,
        ):
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await collect(r.content.iter_any(), got)
        assert b"".join(got) == body[:2500]
    finally:
        await runner.cleanup()


# -- hang and delay ----------------------------------------------------------------------------


async def test_hang_times_out_after_the_timeout():
    t0 = loop_time()
    with pytest.raises(UpstreamTimeout, match="no response within 80 ms") as info:
        await hang(0.08, "api-1")
    assert 0.08 - EARLY_S <= elapsed_since(t0) <= 0.08 + SLACK_S
    assert info.value.backend == "api-1"
    assert info.value.reason == "upstream_timeout"


async def test_apply_delay_waits_the_decided_delay():
    t0 = loop_time()
    await apply_delay(FaultDecision(FaultKind.DELAY, delay_s=0.06))
    assert 0.06 - EARLY_S <= elapsed_since(t0) <= 0.06 + SLACK_S
    t0 = loop_time()
    await apply_delay(FaultDecision(FaultKind.DELAY, delay_s=0.0))
    assert elapsed_since(t0) < SLACK_S


# -- before_send: the pre-forward steps, as the pipeline runs them -----------------------------


async def test_before_send_down_is_a_connect_failure():
    with pytest.raises(UpstreamConnectError, match="injected down") as info:
        await before_send(FaultDecision(FaultKind.DOWN), "api-1", 5.0)
    assert info.value.reason == "upstream_connect_failure"


async def test_before_send_hang_is_a_timeout():
    with pytest.raises(UpstreamTimeout):
        await before_send(FaultDecision(FaultKind.HANG), "api-1", 0.02)


@pytest.mark.parametrize(
    "decision",
    [
        FaultDecision(FaultKind.DELAY, delay_s=0.01),
        FaultDecision(FaultKind.RESET, after_bytes=0),
        FaultDecision(FaultKind.BANDWIDTH, kbps=1),
    ],
)
async def test_before_send_lets_forwarded_kinds_through(decision: FaultDecision):
    assert await before_send(decision, "api-1", 5.0) is None


async def test_before_send_abort_is_a_response_the_backend_never_sent():
    up = await before_send(FaultDecision(FaultKind.ABORT, status=503), "api-1", 5.0)
    assert isinstance(up, InjectedResponse)
    assert isinstance(up, UpstreamResponse)  # the pipeline handles it like any other
    assert (up.status, up.reason) == (503, "Service Unavailable")
    assert up.headers[FAULT_HEADER] == "abort"
    assert up.headers["Content-Type"] == "application/json"
    body = await up.read()
    assert up.content_length == len(body)
    assert b"".join(await collect(up.chunks())) == body
    info = json.loads(body)
    assert info["error"] == "fault injected"
    assert info["backend"] == "api-1"
    up.release()
    up.close()


def test_fault_response_is_a_small_json_answer_saying_so():
    resp = fault_response(FaultDecision(FaultKind.ABORT, status=429), "api-2")
    assert resp.status == 429
    assert resp.headers[FAULT_HEADER] == "abort"
    assert resp.content_type == "application/json"
    assert isinstance(resp.body, bytes)
    info = json.loads(resp.body)
    assert info == {
        "error": "fault injected",
        "fault": "abort",
        "backend": "api-2",
        "detail": "abort 429 injected by the balancer; the backend was not called",
    }
