"""The answers the balancer writes itself, built once as :class:`~lbtui.balancer.exchange.Answer`.

A 429 (``admission.py``), a fallback (``fallback.py``), and the gateway errors below: 502 when
the connection failed or broke, 504 on a timeout, 503 when no backend could take the request,
500 for a defect of lbtui's own. Each error has a short JSON body naming the backend and the
reason, and (with ``response_flags_header``) ``X-Lbtui-Flags`` carrying the response flag, as
Envoy's access log does. Every listener renders these the same way (the fast one from the text
pairs, aiohttp's through ``web.Response``), so no listener builds an error of its own.
"""

from __future__ import annotations

import json
from typing import Final

from lbtui.balancer.exchange import Answer
from lbtui.balancer.job import StatusFailure
from lbtui.balancer.pool import Backend
from lbtui.errors import UpstreamBroken, UpstreamConnectError, UpstreamError, UpstreamTimeout

JSON: Final = "application/json"
FLAGS_HEADER: Final = "X-Lbtui-Flags"


class Flag:
    """Response flags (Envoy's access-log flags): why the balancer did not simply pass through."""

    NO_HEALTHY_BACKEND: Final = "no_healthy_backend"
    BREAKER_OPEN: Final = "breaker_open"
    RATE_LIMITED: Final = "rate_limited"
    UPSTREAM_CONNECT_FAILURE: Final = "upstream_connect_failure"
    UPSTREAM_TIMEOUT: Final = "upstream_timeout"
    UPSTREAM_RESET: Final = "upstream_reset"
    RETRY_LIMIT: Final = "retry_limit_reached"
    RETRY_BUDGET: Final = "retry_budget_exhausted"
    RETRIED: Final = "retried"
    FAULT: Final = "fault_injected"
    FALLBACK: Final = "fallback"
    INTERNAL_ERROR: Final = "internal_error"
    DOWNSTREAM_DISCONNECT: Final = "downstream_disconnect"


def json_answer(
    status: int,
    payload: dict[str, object],
    headers: list[tuple[str, str]] | None = None,
    flags: str | None = None,
) -> Answer:
    """A JSON answer (one line), with ``headers`` and the flags header when ``flags`` is set."""
    pairs = [("Content-Type", JSON)]
    if headers:
        pairs += headers
    if flags is not None:
        pairs.append((FLAGS_HEADER, flags))
    return Answer(status, None, pairs, json.dumps(payload).encode() + b"\n")


def error_answer(
    status: int, error: str, flag: str, backend: str | None, detail: str, flags_header: bool
) -> Answer:
    """A gateway error with its JSON body: ``{"error", "backend", "detail"}``."""
    return json_answer(
        status,
        {"error": error, "backend": backend, "detail": detail},
        None,
        flag if flags_header else None,
    )


def internal_error(exc: BaseException, flags_header: bool) -> Answer:
    """A defect of lbtui's own: the client still gets a JSON answer (the caller logs it)."""
    return error_answer(
        500, "internal proxy error", Flag.INTERNAL_ERROR, None, type(exc).__name__, flags_header
    )


def final_failure(last: UpstreamError | None) -> UpstreamError | None:
    """The failure a client is told of: retries of a listed status that ran out are a plain
    broken exchange to it."""
    if isinstance(last, StatusFailure):
        return UpstreamBroken(last.backend, f"answered {last.status} on every try")
    return last


def failure_reason(last: UpstreamError | None, breaker_open: bool) -> str:
    """The response flag of a request no backend answered (``last`` from :func:`final_failure`)."""
    if last is None:
        return Flag.BREAKER_OPEN if breaker_open else Flag.NO_HEALTHY_BACKEND
    return last.reason


def gateway_error(
    last: UpstreamError | None, tried: list[Backend], reason: str, flags_header: bool
) -> Answer:
    """The 502, 503 or 504 for a request no backend answered (and no fallback covers)."""
    if last is None:
        detail = (
            "every backend's circuit breaker is open"
            if reason == Flag.BREAKER_OPEN
            else "no backend can take the request"
        )
        return error_answer(503, "no backend available", reason, None, detail, flags_header)
    if isinstance(last, UpstreamTimeout):
        return error_answer(
            504, "upstream timeout", reason, last.backend, last.detail, flags_header
        )
    detail = last.detail
    if len(tried) > 1:
        detail += f" (tried {', '.join(b.name for b in tried)})"
    error = (
        "upstream connect failure"
        if isinstance(last, UpstreamConnectError)
        else "upstream connection broken"
    )
    return error_answer(502, error, reason, last.backend, detail, flags_header)
