"""The answers the balancer writes itself are built once (``answers.py``, ``exchange.refusal``)
and read the same on both listeners: a refusal at the edge, a 503 with no backend, a 429."""

from __future__ import annotations

import json

from lbtui.balancer.pool import AdminState
from tests.integration.hardening import (
    either_fixture,  # noqa: F401  (the ``either`` fixture)
    exchange,
    header,
    status,
)


def body(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


async def test_a_refusal_is_one_answer_on_both_listeners(backends, either):
    (b,) = await backends(1)
    lb = await either([b.url])
    got = await exchange(lb.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert status(got) == 405
    assert header(got, "Allow") == "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"
    assert header(got, "Content-Type") == "text/plain; charset=utf-8"
    assert body(got) == b"405: Method Not Allowed"


async def test_no_backend_is_the_same_json_503_on_both_listeners(backends, either):
    (b,) = await backends(1)
    lb = await either([b.url], proxy={"response_flags_header": True})
    lb.proxy.set_admin("b1", AdminState.DISABLED)
    got = await exchange(lb.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status(got) == 503
    assert header(got, "Content-Type") == "application/json"
    assert header(got, "X-Lbtui-Flags") == "no_healthy_backend"
    assert json.loads(body(got)) == {
        "error": "no backend available",
        "backend": None,
        "detail": "no backend can take the request",
    }
