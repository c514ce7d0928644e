"""The fast listener's request: its head as llhttp's callbacks sort it, its body as it streams.

A :class:`FastRequest` is the pipeline's ``ClientRequest`` on the fast listener
(``listener.py``): each header line is sorted once as it arrives (what the backend gets is
rendered then and there; what the pipeline needs is kept aside), the edge rules of RFC 9112 /
9110 are applied when the head is complete (one Host, no CONNECT, HTTP/1.x only, absolute form
taken apart), and the response is rendered back into the same bytes the listener writes. A
:class:`BodyStream` is the request body with flow control: the connection stops being read
while more than the high-water mark waits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp._cookie_helpers import parse_cookie_header
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from lbtui.balancer.connections import HeadBlock
from lbtui.balancer.exchange import (
    VIA,
    BackendHead,
    Result,
    Streamed,
    remove_dot_segments,
    render_response_headers,
    request_block,
    split_absolute,
    valid_host,
)
from lbtui.balancer.header_lines import (
    DROP,
    HOP_BY_HOP_RAW,
    RawHeaders,
    connection_tokens,
    sort_line,
    sort_table,
)
from lbtui.balancer.lean_upstream import ChunkIterator

if TYPE_CHECKING:
    from lbtui.balancer.listener import ClientConnection


BODY_HIGH_WATER = 256 * 1024
"""Request body bytes buffered before the client connection stops being read."""
BODY_LOW_WATER = 64 * 1024
MAX_QUEUED = 16
"""Pipelined requests waiting on one connection before reading pauses."""

SERVER = SERVER_SOFTWARE.encode()
SERVER_LINE_END = b"Server: " + SERVER + b"\r\n\r\n"
_VIA_RAW = VIA.encode()
_HOST, _LENGTH, _XFF, _VIA, _TE, _CONNECTION, _REQUEST_ID = range(1, 8)
REQUEST_ACTIONS: dict[bytes, int] = sort_table(
    {
        b"host": _HOST,
        b"content-length": _LENGTH,
        b"x-forwarded-for": _XFF,
        b"via": _VIA,
        b"x-forwarded-proto": DROP,
        b"x-forwarded-host": DROP,
        b"transfer-encoding": _TE,
        b"connection": _CONNECTION,
        b"x-request-id": _REQUEST_ID,
    }
)
"""How the fast listener sorts a request header (by lower-case name); others pass through."""
METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}


def refused_method(method: bytes) -> str:
    """A method beside the usual ones, as text; CONNECT is refused (405: never tunnelled,
    never forwarded, as nginx does)."""
    if method == b"CONNECT":
        raise BadRequest(405, "CONNECT is not supported")
    return method.decode("latin-1")


def http_version(version: str) -> bytes:
    """The version a request is answered in: 1.0, or 1.1 for any later 1.x (RFC 9110 §2.5);
    HTTP/0.9 and 2+ in an HTTP/1 head are refused (505)."""
    if version == "1.0":
        return b"1.0"
    if version.startswith("1."):
        return b"1.1"
    raise BadRequest(505, f"HTTP/{version} is not supported")


EMPTY_BODY_STATUS = frozenset({204, 304, *range(100, 200)})


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


STATUS_11 = {s: f"HTTP/1.1 {s} {phrase(s)}\r\n".encode() for s in range(100, 600)}


def status_line(version: bytes, status: int, reason: str | None) -> bytes:
    if reason is None and version == b"1.1":
        line = STATUS_11.get(status)
        if line is not None:
            return line
    if reason is None:
        reason = phrase(status)
    return b"HTTP/%b %d %b\r\n" % (version, status, reason.encode("utf-8"))


def framing(method: str, status: int, length: int, has_ctype: bool) -> list[bytes]:
    """``Content-Length`` and a default ``Content-Type`` for a whole body, as aiohttp sets
    them: no length for 1xx/204/304, nor for an empty answer to HEAD."""
    if status in EMPTY_BODY_STATUS:
        return []
    if method == "HEAD":
        return [b"Content-Length: %d\r\n" % length] if length else []
    out = [b"Content-Length: %d\r\n" % length]
    if length and not has_ctype:
        out.append(b"Content-Type: application/octet-stream\r\n")
    return out


class _Date:
    """The ``Date`` header line, formatted once a second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            self._line = b"Date: " + stamp.encode() + b"\r\n"
        return self._line


DATE = _Date()


class BadRequest(Exception):
    """A request the listener refuses before it reaches the pipeline."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class BodyStream:
    """A request body as it arrives: ``readany``, ``read`` and ``async for``, with flow control
    (the connection stops being read while more than the high-water mark is buffered)."""

    __slots__ = ("_chunks", "_conn", "_discard", "_error", "_size", "_waiter", "eof", "received")

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._discard = False
        self.eof = False
        self.received = 0

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._discard:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        if self._size > BODY_HIGH_WATER:
            self._conn.pause("body")

    def feed_eof(self) -> None:
        self.eof = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self.eof:
            self._error = error
            self._wake()

    def discard(self) -> None:
        """Nobody will read the rest: drop what is buffered and what still comes."""
        self._discard = True
        self._chunks.clear()
        self._size = 0
        self._conn.resume("body")

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def readany(self) -> bytes:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._size < BODY_LOW_WATER:
                    self._conn.resume("body")
                return chunk
            if self._error is not None:
                raise self._error
            if self.eof:
                return b""
            self._conn.resume("body")
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return ChunkIterator(self.readany)


class FastRequest:
    """One request on a :class:`ClientConnection`: the pipeline's ``ClientRequest``.

    Made when llhttp begins a message and filled by its header callbacks, which sort each
    header once: the lines the backend gets are rendered as they come (``fwd``), and what the
    pipeline needs (Host, length, chunked, ``X-Forwarded-For``, ``Via``) is kept aside."""

    __slots__ = (
        "_headers",
        "_host",
        "_stream_chunked",
        "_stream_head",
        "body",
        "chunked",
        "cl",
        "conn",
        "content_length",
        "fwd",
        "host_dup",
        "host_raw",
        "keep_alive",
        "method",
        "named",
        "raw",
        "raw_path",
        "remote",
        "request_id",
        "status",
        "upgrade",
        "url",
        "version",
        "via",
        "xff",
    )

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.method = ""
        self.url: list[bytes] = []
        self.raw_path = ""
        self.raw: RawHeaders = []
        self.fwd: list[bytes] = []
        """The request's header lines for the backend, rendered in pieces."""
        self.xff: list[bytes] | None = None
        self.via: list[bytes] | None = None
        self.host_raw: bytes | None = None
        self.host_dup = False
        self.cl: bytes | None = None
        self.named = False
        """Connection lists a header that is not hop-by-hop (then ``fwd`` is not used)."""
        self.version = b"1.1"
        self.keep_alive = True
        self.remote: str = conn.remote
        self.content_length: int | None = None
        self.chunked = False
        self.upgrade = False
        self.body: BodyStream | None = None
        self.status = 0
        self.request_id: str | None = None
        """The client's ``X-Request-Id`` (the first), passed on as it came."""
        self._headers: CIMultiDictProxy[str] | None = None
        self._host: str | None = None
        self._stream_head: bytes | None = None
        self._stream_chunked = False

    def add_header(self, name: bytes, value: bytes) -> None:
        """One header line, sorted (what llhttp's ``on_header`` does, via the connection)."""
        self.raw.append((name, value))
        act = sort_line(REQUEST_ACTIONS, self.fwd, name, value)
        if act > DROP:
            self.special(act, name, value)

    def special(self, act: int, name: bytes, value: bytes) -> None:
        """A line ``REQUEST_ACTIONS`` names: what the pipeline needs is kept aside."""
        if act == _HOST:
            self.fwd += (name, b": ", value, b"\r\n")
            if self.host_raw is None:
                self.host_raw = value
            else:
                self.host_dup = True
        elif act == _LENGTH:
            self.fwd += (name, b": ", value, b"\r\n")
            if self.cl is None:
                self.cl = value
        elif act == _XFF:
            if self.xff is None:
                self.xff = [value]
            else:
                self.xff.append(value)
        elif act == _VIA:
            if self.via is None:
                self.via = [value]
            else:
                self.via.append(value)
        elif act == _TE:
            if b"chunked" in value.lower():
                self.chunked = True
        elif act == _CONNECTION and not connection_tokens(value) <= HOP_BY_HOP_RAW:
            self.named = True
        elif act == _REQUEST_ID:
            self.fwd += (name, b": ", value, b"\r\n")
            if self.request_id is None:
                self.request_id = value.decode("latin-1")

    def check_host(self) -> None:
        """RFC 9112 §3.2, as nginx: an HTTP/1.1 request has exactly one valid Host; an
        HTTP/1.0 one may have none."""
        host = self.host_raw
        if host is None:
            if self.version == b"1.1":
                raise BadRequest(400, "no Host header")
        elif self.host_dup:
            raise BadRequest(400, "more than one Host header")
        elif not valid_host(host):
            raise BadRequest(400, "invalid Host header")

    def other_form(self) -> None:
        """A request target not in origin form: absolute form takes its authority as the Host
        (RFC 9112 §3.2.2) and goes on in origin form; ``OPTIONS *`` goes as it is; anything
        else is refused."""
        target = self.raw_path
        if target == "*" and self.method == "OPTIONS":
            return
        try:
            host, self.raw_path = split_absolute(target)
        except ValueError as exc:
            raise BadRequest(400, str(exc)) from None
        # The headers are sorted again with the authority as the only Host.
        raw = [(b"Host", host), *((k, v) for k, v in self.raw if k.lower() != b"host")]
        self.raw = []
        self.fwd = []
        self.xff = self.via = self.host_raw = self.cl = None
        self.host_dup = self.named = self.chunked = False
        for k, v in raw:
            self.add_header(k, v)

    # -- the request, as the pipeline reads it -------------------------------------------------

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        h = self._headers
        if h is None:
            h = self._headers = CIMultiDictProxy(
                CIMultiDict(
                    [(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                     for k, v in self.raw]
                )
            )  # fmt: skip
        return h

    @property
    def host(self) -> str:
        host = self._host
        if host is None:
            raw = self.host_raw
            host = self._host = (
                raw.decode("utf-8", "surrogateescape") if raw is not None else self.conn.local_host
            )
        return host

    @property
    def path(self) -> str:
        """The path routes match: decoded, dot segments resolved (the raw target is what the
        backend gets, byte for byte)."""
        raw = self.raw_path
        if "%" not in raw and "?" not in raw and "#" not in raw and "/." not in raw:
            return raw
        path, _, query = raw.partition("?")
        path = path.partition("#")[0]
        with contextlib.suppress(ValueError):
            path = URL.build(path=path, query_string=query, encoded=True).path
        return remove_dot_segments(path) if "/." in path else path

    @property
    def body_exists(self) -> bool:
        return self.body is not None

    @property
    def content(self) -> BodyStream:
        assert self.body is not None
        return self.body

    def cookie(self, name: str) -> str | None:
        for cname, morsel in parse_cookie_header(self.headers.get("Cookie", "")):
            if cname == name:
                return str(morsel.value)
        return None

    async def read(self) -> bytes:
        return await self.body.read() if self.body is not None else b""

    @property
    def scheme(self) -> str:
        return self.conn.listener.scheme

    @property
    def listener(self) -> str:
        return self.conn.listener.name

    def forward_headers(self, proto: str) -> HeadBlock:
        proto_b = b"http" if proto == "http" else proto.encode()
        if self.named:
            return request_block(self.raw, self.conn.remote_raw, proto_b)
        ip = self.conn.remote_raw
        xff = self.xff
        via = self.via
        host = self.host_raw
        parts = [
            *self.fwd,
            b"X-Forwarded-For: ",
            b", ".join((*xff, ip)) if xff else ip,
            b"\r\nX-Forwarded-Proto: ",
            proto_b,
            b"\r\n",
        ]
        if host is not None:
            parts += (b"X-Forwarded-Host: ", host, b"\r\n")
        parts += (b"Via: ", b", ".join((*via, _VIA_RAW)) if via else _VIA_RAW, b"\r\n")
        return HeadBlock(b"".join(parts), host is not None, self.cl is not None)

    def response_headers(
        self,
        up: BackendHead,
        extra: list[tuple[str, str]] | None,
        drop: frozenset[str] | None = None,
    ) -> Any:
        return render_response_headers(up, extra, drop)

    # -- the response ---------------------------------------------------------------------------

    def open_stream(
        self, status: int, reason: str | None, headers: Any, length: int | None
    ) -> Result:
        self.status = status
        head = [status_line(self.version, status, reason), headers.block]
        empty = status in EMPTY_BODY_STATUS or self.method == "HEAD"
        if empty:
            if length is not None and status not in EMPTY_BODY_STATUS:
                head.append(b"Content-Length: %d\r\n" % length)
        elif length is not None:
            head.append(b"Content-Length: %d\r\n" % length)
            if length and not headers.has_ctype:
                head.append(b"Content-Type: application/octet-stream\r\n")
        else:
            if not headers.has_ctype:
                head.append(b"Content-Type: application/octet-stream\r\n")
            if self.version == b"1.1":
                self._stream_chunked = True
                head.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False
        head += self.conn.tail(self, headers.has_date, headers.has_server)
        self._stream_head = b"".join(head)
        return Streamed(status)

    async def start_stream(self) -> None:
        head = self._stream_head
        assert head is not None
        self._stream_head = None
        await self.conn.send(head)

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._stream_chunked:
            await self.conn.send_parts((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            await self.conn.send(chunk)

    async def finish_stream(self) -> None:
        if self._stream_chunked:
            await self.conn.send(b"0\r\n\r\n")

    def cut(self) -> None:
        self.keep_alive = False
        self.conn.close()

    # -- the listener's side of ``Pipeline.serve`` ------------------------------------------------

    @property
    def nowait(self) -> bool:
        """An attempt may be answered from the backend connection's callback (no body)."""
        return self.body is None

    def finish(self, result: Result) -> None:
        self.conn.complete(self, result)

    def spawn(self, rest: Coroutine[Any, Any, Result]) -> None:
        conn = self.conn
        conn.task = conn.loop.create_task(conn.run(self, rest))
