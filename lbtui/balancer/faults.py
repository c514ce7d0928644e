"""Proxy-side fault injection, the application: the few async steps the pipeline runs for a
:class:`~lbtui.core.faults.FaultDecision` (the decisions themselves are in ``lbtui.core.faults``).

Each injected fault surfaces exactly as the real thing would, so that the pipeline records it,
retries it, and feeds it to breakers and ejection through its one outcome path:

- ``down``  → :class:`~lbtui.errors.UpstreamConnectError` before anything is sent;
- ``hang``  → waits the read timeout, then :class:`~lbtui.errors.UpstreamTimeout`;
- ``delay`` → sleeps, then the request is forwarded;
- ``abort`` → an :class:`InjectedResponse`, an ``UpstreamResponse`` the backend never sent;
- ``reset`` → the body stream raises :class:`~lbtui.errors.UpstreamBroken` after ``after_bytes``;
- ``bandwidth`` → the body stream is paced to ``kbps``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from http import HTTPStatus
from typing import NoReturn

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from lbtui.balancer.upstream import UpstreamResponse
from lbtui.core.faults import FaultDecision, FaultKind
from lbtui.errors import UpstreamBroken, UpstreamConnectError, UpstreamTimeout

FAULT_HEADER = "X-Lbtui-Fault"
PACE_S = 0.05
"""A throttled body goes out in slices of this much time's worth of bytes."""


async def apply_delay(decision: FaultDecision) -> None:
    """Wait the decision's delay (before the request is forwarded)."""
    if decision.delay_s > 0:
        await asyncio.sleep(decision.delay_s)


async def hang(timeout_s: float, backend: str) -> NoReturn:
    """Answer nothing until the read timeout, then time out as a silent backend would."""
    await asyncio.sleep(timeout_s)
    raise UpstreamTimeout(backend, f"no response within {timeout_s * 1e3:.0f} ms (injected hang)")


async def throttled(
    chunks: AsyncIterator[bytes],
    kbps: float,
    *,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[bytes]:
    """``chunks`` re-sliced and paced so that the body takes ``size / (kbps·1000)`` seconds.

    Each slice is released when the bytes up to its end are due (the first after its own
    share of time), so the rate holds from the first byte and does not drift with slow
    writes: a slice that is late is not followed by a burst beyond the rate's schedule."""
    if kbps <= 0:
        raise ValueError(f"kbps must be > 0, got {kbps}")
    rate = kbps * 1000.0
    slice_len = max(1, int(rate * PACE_S))
    now = clock or asyncio.get_running_loop().time
    start = now()
    sent = 0
    try:
        async for chunk in chunks:
            for i in range(0, len(chunk), slice_len):
                piece = chunk[i : i + slice_len]
                wait = start + (sent + len(piece)) / rate - now()
                if wait > 0:
                    await asyncio.sleep(wait)
                sent += len(piece)
                yield piece
    finally:
        await _close(chunks)


async def reset_after(
    chunks: AsyncIterator[bytes], n_bytes: int, backend: str = ""
) -> AsyncIterator[bytes]:
    """The first ``n_bytes`` of ``chunks``, then :class:`UpstreamBroken` — also when the body
    is shorter: an applied reset always cuts (Toxiproxy let connections escape, #148)."""
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be ≥ 0, got {n_bytes}")
    left = n_bytes
    try:
        if left:
            async for chunk in chunks:
                if len(chunk) >= left:
                    yield chunk[:left]
                    break
                left -= len(chunk)
                yield chunk
    finally:
        await _close(chunks)
    raise UpstreamBroken(backend, f"connection reset after {n_bytes} body bytes (injected reset)")


def body_fault(
    decision: FaultDecision, chunks: AsyncIterator[bytes], backend: str
) -> AsyncIterator[bytes]:
    """``chunks`` with a reset or bandwidth decision applied (others: unchanged)."""
    if decision.kind is FaultKind.RESET:
        return reset_after(chunks, decision.after_bytes or 0, backend)
    if decision.kind is FaultKind.BANDWIDTH and decision.kbps:
        return throttled(chunks, decision.kbps)
    return chunks


async def before_send(
    decision: FaultDecision, backend: str, timeout_s: float
) -> UpstreamResponse | None:
    """The steps a fault takes before the request would be sent to ``backend``.

    Raises ``UpstreamConnectError`` (down) or, after ``timeout_s``, ``UpstreamTimeout`` (hang);
    returns the injected response for abort; sleeps for delay; returns None when the request
    is to be forwarded (delay, reset, bandwidth)."""
    kind = decision.kind
    if kind is FaultKind.DELAY:
        await apply_delay(decision)
    elif kind is FaultKind.DOWN:
        raise UpstreamConnectError(backend, "connect failed: Connection refused (injected down)")
    elif kind is FaultKind.HANG:
        await hang(timeout_s, backend)
    elif kind is FaultKind.ABORT:
        return InjectedResponse(decision, backend)
    return None


def _abort_parts(decision: FaultDecision, backend: str) -> tuple[int, str, bytes]:
    status = decision.status or 503
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Injected Fault"
    body = (
        json.dumps(
            {
                "error": "fault injected",
                "fault": "abort",
                "backend": backend,
                "detail": f"abort {status} injected by the balancer; the backend was not called",
            }
        ).encode()
        + b"\n"
    )
    return status, reason, body


def fault_response(decision: FaultDecision, backend: str) -> web.Response:
    """An abort as a finished client response: the status, a small JSON body saying it was
    injected, and ``X-Lbtui-Fault: abort``."""
    status, reason, body = _abort_parts(decision, backend)
    resp = web.Response(status=status, reason=reason, body=body, content_type="application/json")
    resp.headers[FAULT_HEADER] = "abort"
    return resp


class InjectedResponse(UpstreamResponse):
    """An abort as if ``backend`` had answered it: the pipeline treats it like any backend
    response (failure statuses, retry on status, record, breaker, ejection)."""

    __slots__ = ("_body", "_hdrs", "_reason", "_status")

    def __init__(self, decision: FaultDecision, backend: str) -> None:
        self._backend = backend
        self._read_timeout_s = 0.0
        self._status, self._reason, self._body = _abort_parts(decision, backend)
        self._hdrs = CIMultiDictProxy(
            CIMultiDict(
                {
                    "Content-Type": "application/json",
                    "Content-Length": str(len(self._body)),
                    FAULT_HEADER: "abort",
                }
            )
        )

    @property
    def status(self) -> int:
        return self._status

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._hdrs

    @property
    def content_length(self) -> int | None:
        return len(self._body)

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _close(chunks: AsyncIterator[bytes]) -> None:
    if isinstance(chunks, AsyncGenerator):
        await chunks.aclose()
