"""A lean keep-alive connection pool to the backends: ``asyncio.Protocol`` + llhttp (httptools).

DESIGN.md's performance notes measured aiohttp's ``ClientSession`` at about 40 % of a naive
proxy's CPU; a profile of lbtui under wrk agreed (about 80 µs a request). This module does only
what a proxy needs: one request at a time per connection, the head (and a small body) in one
write, the response head parsed by llhttp, the body handed over chunk by chunk with
back-pressure (reading pauses while the consumer is behind), idle connections kept per backend
(newest first) and dropped after ``keepalive_timeout_s``. It sits behind the same seam as the
aiohttp client (``Upstream.send`` → ``UpstreamResponse``), so policy and views do not change.

Per exchange it allocates little: header names and values stay the bytes llhttp produced (the
``headers`` multidict is built only when something asks for it), timeouts are one timer handle
(``loop.call_later``) rather than ``asyncio.wait_for``'s task machinery, and a caller that wants
no coroutine at all can send with ``send_nowait`` and be called back once the whole response
(or the head of a big one, or an error) is in. The pools of these connections and the response
handed to the pipeline are ``lean_upstream.py``.

Errors become ``UpstreamConnectError`` (nothing was sent), ``UpstreamTimeout`` and
``UpstreamBroken`` here, once. A client body that fails mid-upload (``ClientBodyError``) passes
through untranslated: it is the client's doing, not the backend's.

A backend is trusted with as little as nginx trusts it: a connection carries exactly the
response it was asked for (bytes after it close the connection; they are never parsed as a
second response), a response head over ``max_header_bytes`` or a status outside 100-599 is a
broken exchange (the client gets a 502 that says so), and head bytes are counted per read, so a
huge head costs one buffer, not a stalled loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Callable
from typing import Any, Final, cast

import httptools

from lbtui.errors import (
    UpstreamBroken,
    UpstreamError,
    UpstreamTimeout,
)

HIGH_WATER = 256 * 1024
"""Response bytes buffered before the backend connection stops being read."""
LOW_WATER = 64 * 1024
UPLOAD_CHUNK = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP_RAW = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
"""Hop-by-hop header names (lower case): never forwarded, either way."""
RESPONSE_DROP_RAW = HOP_BY_HOP_RAW | {b"content-length"}
"""Response headers never passed to the client as they are (the length is set anew)."""
PASS: Final = -1
"""``sort_line``'s verdict for a line that simply passes through (it is rendered already)."""
DROP: Final = 0
"""The action of a hop-by-hop line: never forwarded, either way."""


def sort_table(special: dict[bytes, int]) -> dict[bytes, int]:
    """A side's sorting table: the hop-by-hop names dropped, ``special`` names given to the
    caller (action codes above 0), every other name passing through."""
    return dict.fromkeys(HOP_BY_HOP_RAW, DROP) | special


def sort_line(table: dict[bytes, int], kept: list[bytes], name: bytes, value: bytes) -> int:
    """One HTTP/1 header line sorted by its lower-case name, the same way on both sides (the
    listener's request lines, the upstream's response lines): a line ``table`` does not name
    is rendered into ``kept`` (``Name: value\r\n``; ``Proxy-*`` lines never are) and
    :data:`PASS` returned; otherwise its action, for the caller to act on (rendering it too
    when it keeps the line)."""
    lname = name.lower()
    act = table.get(lname, PASS)
    if act == PASS and not lname.startswith(b"proxy-"):
        kept += (name, b": ", value, b"\r\n")
    return act


_LENGTH, _TE, _CONNECTION, _CTYPE, _DATE, _SERVER = range(1, 7)
_RESPONSE_ACTIONS: dict[bytes, int] = sort_table(
    {
        b"content-length": _LENGTH,
        b"transfer-encoding": _TE,
        b"connection": _CONNECTION,
        b"content-type": _CTYPE,
        b"date": _DATE,
        b"server": _SERVER,
    }
)
HAS_CTYPE, HAS_DATE, HAS_SERVER = 1, 2, 4
MAX_HEADER_BYTES = 64 * 1024
"""Default limit of a response head (``[proxy] max_upstream_header_bytes``)."""
"""Bits of ``LeanResponse.kept_flags``: which headers a listener adds when missing are there."""


def authority(host: str, port: int) -> str:
    """``host:port`` as a URL or a Host header writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Untrusted(Exception):
    """A backend sent what a response may not hold (raised from an llhttp callback)."""


_ONE_TOKEN = {b"keep-alive": frozenset({b"keep-alive"}), b"close": frozenset({b"close"})}


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The header names a ``Connection`` header value lists (lower case)."""
    lvalue = value.lower()
    one = _ONE_TOKEN.get(lvalue)
    if one is not None:
        return one
    return frozenset(t for t in (x.strip() for x in lvalue.split(b",")) if t)


Done = Callable[["_Conn", "UpstreamError | None"], None]
"""Called once by a connection in callback mode: with ``None`` when the response head is in
(and, for a response that came in one piece, its whole body: ``conn.complete``), or with the
error that ended the exchange."""


class HeadBlock:
    """Request header lines already rendered to bytes (``Name: value\\r\\n`` each), as the fast
    listener produces them, with what the upstream needs to know about them."""

    __slots__ = ("block", "has_host", "has_length", "pairs")

    def __init__(
        self, block: bytes, has_host: bool, has_length: bool, pairs: RawHeaders | None = None
    ) -> None:
        self.block = block
        self.has_host = has_host
        self.has_length = has_length
        self.pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        """The lines as text pairs (for the aiohttp client)."""
        if self.pairs is not None:
            return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.pairs]
        out: list[tuple[str, str]] = []
        for line in self.block.decode("latin-1").split("\r\n"):
            if line:
                k, _, v = line.partition(":")
                out.append((k, v.strip()))
        return out


class _Conn(asyncio.Protocol):
    """One connection to a backend, one exchange at a time."""

    __slots__ = (
        "_body_waiter",
        "_buffered",
        "_chunked",
        "_chunks",
        "_cl",
        "_deadline",
        "_done",
        "_error",
        "_head_bytes",
        "_head_in",
        "_head_waiter",
        "_headers",
        "_keep_alive",
        "_kept",
        "_kept_flags",
        "_length",
        "_length_known",
        "_named",
        "_on_done",
        "_parser",
        "_paused_reading",
        "_skip_body",
        "_status",
        "_te",
        "_timeout_s",
        "_timer",
        "_timer_at",
        "_untrusted",
        "_waiting",
        "_write_ok",
        "backend",
        "closed",
        "idle_since",
        "loop",
        "pool",
        "reused",
        "transport",
    )

    def __init__(self, backend: str, pool: _HostPool, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._head_waiter: asyncio.Future[None] | None = None
        self._head_in = False
        self._on_done: Done | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._waiting = False
        self._timeout_s = 0.0
        self._headers: RawHeaders = []
        self._head_bytes = 0
        self._untrusted = ""
        self._kept: list[bytes] = []
        self._kept_flags = 0
        self._named: frozenset[bytes] | None = None
        self._cl: bytes | None = None
        self._te: bytes | None = None
        self._status = 0
        self._keep_alive = False
        self._length_known = False
        self._length: int | None = None
        self._chunked = False
        self._skip_body = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._body_waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: UpstreamError | None = None
        self._paused_reading = False
        self._write_ok: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:
            return
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.pool.open += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._done:
            # The response asked for is complete: whatever comes now is not one.
            self.abort()
            return
        if not self._head_in:
            # Bytes while a response head is due (an upper bound of the head's size: body
            # bytes may follow in the same read; ``on_headers_complete`` makes sure).
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except Exception as exc:
            self._parse_failed(exc)
        if not self._head_in:
            # Still in the head: refused after one buffer too many instead of being parsed
            # (and concatenated by httptools) at length.
            if self._head_bytes > self.pool.max_head and not self.closed:
                self._fail(UpstreamBroken(self.backend, self._head_too_large()))
        elif self._on_done is not None:
            # Callback mode: the head is in, and with it the whole body when the response
            # came in one piece (the usual small answer): hand it over now.
            self._call_done(None)

    def _head_too_large(self) -> str:
        return f"response head over {self.pool.max_head} bytes"

    def _head_size(self) -> int:
        return 16 + sum(len(k) + len(v) + 4 for k, v in self._headers)

    def _parse_failed(self, exc: Exception) -> None:
        # sorted by isinstance: httptools' exceptions are untyped (see lbtui/build.py)
        if self._done and self._error is None:
            # Bytes after the complete response: never a second response. The one asked for
            # stands; the connection is not used again.
            self.abort()
        elif isinstance(exc, httptools.HttpParserUpgrade):
            self._fail(UpstreamBroken(self.backend, "unexpected protocol upgrade"))
        elif self._untrusted:
            self._fail(UpstreamBroken(self.backend, self._untrusted))
        elif isinstance(exc, httptools.HttpParserError):
            self._fail(UpstreamBroken(self.backend, f"invalid response: {str(exc)[:120]}"))
        else:
            raise exc

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pool.open -= 1
        self.pool.forget(self)
        if self._head_in or self._head_waiter is not None or self._on_done is not None:
            if self._done:
                return
            if not self._length_known and self._head_in and self._error is None and exc is None:
                # A body delimited by the end of the connection ends here.
                self._finish()
                if self._on_done is not None:
                    self._call_done(None)
                return
            self._fail(UpstreamBroken(self.backend, "connection closed by the backend"))

    def pause_writing(self) -> None:
        if self._write_ok is None or self._write_ok.done():
            self._write_ok = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ok is not None and not self._write_ok.done():
            self._write_ok.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sorted once, here: the lines a client gets (``kept``, rendered) and what the proxy
        # needs to know (length, chunked, Connection-named headers, Date/Server/Content-Type).
        if self._done:
            # A second response on one request (no ``on_message_begin`` callback: it would
            # cost a call a response): refused before its lines touch the first one's.
            raise _Untrusted("bytes after the response")
        self._headers.append((name, value))
        act = sort_line(_RESPONSE_ACTIONS, self._kept, name, value)
        if act <= DROP:
            return
        if act >= _CTYPE:
            self._kept += (name, b": ", value, b"\r\n")
            self._kept_flags |= (
                HAS_CTYPE if act == _CTYPE else HAS_DATE if act == _DATE else HAS_SERVER
            )
        elif act == _LENGTH:
            if self._cl is None:
                self._cl = value
        elif act == _TE:
            if self._te is None:
                self._te = value
        elif act == _CONNECTION:
            named = connection_tokens(value)
            if not named <= RESPONSE_DROP_RAW:
                self._named = named if self._named is None else self._named | named

    def on_headers_complete(self) -> None:
        if self._done:
            raise _Untrusted("bytes after the response")
        status = self._status = self._parser.get_status_code()
        if status < 100 or status > 599:
            self._untrusted = f"invalid status {status}"
            raise _Untrusted(self._untrusted)
        if self._head_bytes > self.pool.max_head and self._head_size() > self.pool.max_head:
            self._untrusted = self._head_too_large()
            raise _Untrusted(self._untrusted)
        if 100 <= status < 200 and status != 101:
            # An interim response (100 Continue, 103 Early Hints): the final one follows.
            self._clear_head()
            return
        self._keep_alive = self._parser.should_keep_alive()
        length = self._cl
        te = self._te
        chunked = te is not None and b"chunked" in te.lower()
        known = length is not None or te is not None
        self._chunked = chunked
        self._length = None
        if length is not None and not chunked:
            try:
                self._length = int(length)
            except ValueError:
                self._length = None
        self._length_known = known or status in _NO_BODY_STATUS or status < 200
        self._head_in = True
        self._waiting = False
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._skip_body or status in _NO_BODY_STATUS:
            # llhttp cannot be told a HEAD response has no body: end the message here and
            # start a fresh parser for the next exchange on this connection.
            self._parser = httptools.HttpResponseParser(self)
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self._done:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self._buffered > HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if not self._done and self._head_in:
            self._finish()

    # -- the exchange ----------------------------------------------------------------------------

    def _finish(self) -> None:
        self._done = True
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()  # retrieved: the caller re-raises it
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)
        self.abort()
        if self._on_done is not None:
            self._call_done(self._error)

    def _call_done(self, error: UpstreamError | None) -> None:
        fn = self._on_done
        self._on_done = None
        self._waiting = False
        if fn is not None:
            fn(self, error)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _clear_head(self) -> None:
        self._headers = []
        self._kept = []
        self._kept_flags = 0
        self._named = None
        self._cl = None
        self._te = None

    def _reset_exchange(self, skip_body: bool) -> None:
        self._clear_head()
        self._head_bytes = 0
        self._status = 0
        self._head_in = False
        self._chunks.clear()
        self._buffered = 0
        self._done = False
        self._error = None
        self._skip_body = skip_body
        self._head_waiter = None

    async def _drain(self) -> None:
        w = self._write_ok
        if w is not None and not w.done():
            await w

    def _arm(self, timeout_s: float) -> None:
        """The response head is due within ``timeout_s``. One timer a connection, left armed
        across exchanges and moved on when it fires early: no timer handle per request."""
        deadline = self.loop.time() + timeout_s
        self._timeout_s = timeout_s
        self._deadline = deadline
        self._waiting = True
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._check_deadline)
            self._timer_at = deadline

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._waiting or self.closed:
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)
            self._timer_at = self._deadline
            return
        self._head_timed_out()

    def _head_timed_out(self) -> None:
        self._waiting = False
        if self._head_in or self._error is not None:
            return
        error = UpstreamTimeout(self.backend, f"no response within {self._timeout_s * 1e3:.0f} ms")
        self._error = error
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()
        self.abort()
        if self._on_done is not None:
            self._call_done(error)

    def send_nowait(self, head: bytes, skip_body: bool, read_timeout_s: float, done: Done) -> None:
        """Send a request without a body; ``done`` is called once (see ``Done``)."""
        transport = self.transport
        assert transport is not None
        self._reset_exchange(skip_body)
        self._on_done = done
        self._arm(read_timeout_s)
        transport.write(head)

    async def exchange(
        self,
        head: bytes,
        body: Any,
        chunked: bool,
        skip_body: bool,
        read_timeout_s: float,
    ) -> None:
        """Send the request; return when the response head has arrived.

        ``body`` is None, bytes, or a stream with ``async readany()`` (aiohttp's
        ``StreamReader`` or the fast listener's request body)."""
        transport = self.transport
        assert transport is not None
        self._reset_exchange(skip_body)
        waiter = self._head_waiter = self.loop.create_future()
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            while True:
                chunk = await body.readany()
                if not chunk:
                    break
                if self.closed:
                    raise self._error or UpstreamBroken(self.backend, "connection lost mid-upload")
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await self._drain()
            if chunked:
                transport.write(b"0\r\n\r\n")
        if waiter.done():
            waiter.result()
            return
        self._arm(read_timeout_s)
        try:
            await waiter
        finally:
            self._waiting = False

    def _body_timed_out(self, waiter: asyncio.Future[None], timeout_s: float) -> None:
        if not waiter.done():
            error = UpstreamTimeout(self.backend, f"no body data within {timeout_s * 1e3:.0f} ms")
            waiter.set_exception(error)
            waiter.exception()
            self.abort()

    async def next_chunk(self, read_timeout_s: float) -> bytes:
        """The next body chunk, ``b""`` at the end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused_reading and self._buffered < LOW_WATER and self.transport:
                    self._paused_reading = False
                    self.transport.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            waiter = self._body_waiter = self.loop.create_future()
            timer = self.loop.call_later(
                read_timeout_s, self._body_timed_out, waiter, read_timeout_s
            )
            try:
                await waiter
            finally:
                timer.cancel()
                self._body_waiter = None

    def take_body(self) -> bytes:
        """The whole body of a complete response (callback mode)."""
        chunks = self._chunks
        if not chunks:
            return b""
        if len(chunks) == 1:
            body = chunks.popleft()
        else:
            body = b"".join(chunks)
            chunks.clear()
        self._buffered = 0
        if self._paused_reading and self.transport:
            self._paused_reading = False
            self.transport.resume_reading()
        return body

    @property
    def complete(self) -> bool:
        """The whole response is in (callback mode: the body is ready for ``take_body``)."""
        return self._done and self._error is None

    @property
    def reusable(self) -> bool:
        return self._done and self._keep_alive and not self.closed and self._error is None


BackendConnection = _Conn
"""One keep-alive connection to a backend (the type callback-mode callers see)."""


class _HostPool:
    """Idle connections to one backend address, newest first."""

    __slots__ = ("host", "idle", "max_head", "open", "port")

    def __init__(self, host: str, port: int, max_head: int = MAX_HEADER_BYTES) -> None:
        self.host = host
        self.port = port
        self.max_head = max_head
        """Largest response head accepted on these connections."""
        self.idle: list[_Conn] = []
        self.open = 0

    def forget(self, conn: _Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
