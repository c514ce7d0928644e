"""Header rewriting is written three times (over text for aiohttp, over bytes, and sorted line by
line as llhttp calls back in the fast listener and the lean upstream): all must agree, on any
mix of headers — hop-by-hop ones, ``Connection`` naming others, repeated forwarding headers,
odd case."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from lbtui.balancer.connections import _Conn, _HostPool
from lbtui.balancer.exchange import (
    render_response_headers,
    request_block,
    request_headers,
    response_headers,
)
from lbtui.balancer.lean_upstream import LeanResponse, LeanUpstream
from lbtui.balancer.listener import ClientConnection, FastListener, FastRequest
from lbtui.balancer.proxy import Proxy
from lbtui.config import from_dict

NAMES = [
    "Host", "Connection", "Keep-Alive", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    "Proxy-Authorization", "Proxy-Foo", "X-Forwarded-For", "X-Forwarded-Proto",
    "X-Forwarded-Host", "Via", "Content-Length", "Content-Type", "Date", "Server", "X-A", "X-B",
    "Cookie", "Set-Cookie", "close",
]  # fmt: skip
TOKENS = ["keep-alive", "close", "x-a", "X-B", "upgrade", "host", "via", "te", "date"]


def _case(s: str, flips: list[bool]) -> str:
    flips = flips + [False] * (len(s) - len(flips))
    return "".join(c.upper() if f else c.lower() for c, f in zip(s, flips, strict=True))


@st.composite
def header_lists(draw: Any) -> list[tuple[str, str]]:
    out = []
    for _ in range(draw(st.integers(0, 10))):
        name = draw(st.sampled_from(NAMES))
        if draw(st.booleans()):
            name = _case(name, draw(st.lists(st.booleans(), max_size=len(name))))
        if name.lower() == "connection":
            value = ", ".join(draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3)))
        elif name.lower() == "content-length":
            value = str(draw(st.integers(0, 999)))
        else:
            value = draw(st.sampled_from(["1", "a b", "x=1; y", "203.0.113.9", "1.0 edge"]))
        out.append((name, value))
    return out


def parse_block(block: bytes) -> list[tuple[str, str]]:
    pairs = []
    for line in block.decode("latin-1").split("\r\n"):
        if line:
            k, _, v = line.partition(": ")
            pairs.append((k, v))
    return pairs


def _client_connection() -> ClientConnection:
    """A real (unconnected) client connection, as if accepted from 127.0.0.1: the compiled build
    accepts no stand-in of another type."""

    async def make() -> ClientConnection:
        proxy = Proxy(from_dict({"backends": [{"name": "b", "url": "http://127.0.0.1:9"}]}, "t"))
        return ClientConnection(FastListener(proxy))

    conn = asyncio.run(make())
    conn.remote, conn.remote_raw, conn.local_host = "127.0.0.1", b"127.0.0.1", "127.0.0.1"
    return conn


CONN = _client_connection()


@settings(max_examples=300, deadline=None)
@given(header_lists())
def test_request_headers_agree(headers: list[tuple[str, str]]) -> None:
    want = request_headers(CIMultiDict(headers), "127.0.0.1", "http")
    raw = [(k.encode(), v.encode()) for k, v in headers]
    block = request_block(raw, b"127.0.0.1", b"http")
    assert parse_block(block.block) == want
    req = FastRequest(CONN)
    for k, v in raw:
        req.add_header(k, v)
    sorted_as_parsed = req.forward_headers("http")
    assert parse_block(sorted_as_parsed.block) == want
    names = {k.lower() for k, _ in want}
    for got in (block, sorted_as_parsed):
        assert got.has_host == ("host" in names)
        assert got.has_length == ("content-length" in names)


class _Head:
    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = CIMultiDict(headers)


@settings(max_examples=300, deadline=None)
@given(header_lists(), st.lists(st.sampled_from([("RateLimit", "limit=5"), ("X-E", "1")])))
def test_response_headers_agree(
    headers: list[tuple[str, str]], extra: list[tuple[str, str]]
) -> None:
    want = response_headers(CIMultiDict(headers)) + extra
    names = {k.lower() for k, _ in want}
    conn = _Conn("b", _HostPool("h", 1), None)  # type: ignore[arg-type]
    for k, v in headers:
        conn.on_header(k.encode(), v.encode())
    lean = LeanResponse(conn, LeanUpstream(connect_timeout_s=1.0, read_timeout_s=1.0), 1.0)
    for up in (lean, _Head(headers)):
        got = render_response_headers(up, extra or None)  # type: ignore[arg-type]
        assert parse_block(got.block) == want
        assert got.has_ctype == ("content-type" in names)
        assert got.has_date == ("date" in names)
        assert got.has_server == ("server" in names)
