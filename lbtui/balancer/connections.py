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
(or the head of a big one, or an error) is in. The response is read by the connection's base,
``response_reader.ResponseReader`` (llhttp's callbacks, the body as chunks); the header lines
are sorted as the listener sorts its own (``header_lines.py``). The pools of these connections
and the response handed to the pipeline are ``lean_upstream.py``.

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
import contextlib
import socket
from collections.abc import Callable
from typing import Any, cast

import httptools

from lbtui.balancer.header_lines import RawHeaders
from lbtui.balancer.response_reader import ResponseReader
from lbtui.errors import UpstreamBroken, UpstreamError, UpstreamTimeout

MAX_HEADER_BYTES = 64 * 1024
"""Default limit of a response head (``[proxy] max_upstream_header_bytes``)."""


def authority(host: str, port: int) -> str:
    """``host:port`` as a URL or a Host header writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


class _Conn(ResponseReader):
    """One connection to a backend, one exchange at a time: the request written, the response
    head awaited within its deadline (read by its base, :class:`ResponseReader`), and what a
    failure means for the exchange and the pool."""

    __slots__ = (
        "_deadline",
        "_on_done",
        "_timeout_s",
        "_timer",
        "_timer_at",
        "_write_ok",
        "idle_since",
        "reused",
    )

    def __init__(self, backend: str, pool: _HostPool, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(backend, pool, loop)
        self.idle_since = 0.0
        self.reused = False
        self._on_done: Done | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._timeout_s = 0.0
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

    # -- the exchange ----------------------------------------------------------------------------

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
