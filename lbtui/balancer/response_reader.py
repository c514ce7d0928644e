"""How a backend connection reads its response: llhttp's callbacks, and the body as chunks.

:class:`ResponseReader` is the base of ``connections._Conn``: it holds one exchange's response
as llhttp (httptools) parses it and hands it on. Each header line is sorted once as it arrives
(``header_lines.sort_line``): the lines a client gets are rendered then and there (``kept``),
what the proxy needs (length, chunked, ``Connection``-named headers, whether Date, Server and
Content-Type are there) is kept aside. The body is buffered chunk by chunk with back-pressure:
reading pauses above :data:`HIGH_WATER` until the consumer is below :data:`LOW_WATER`.

What the connection does around it (writing the request, the head's deadline, what a failure
means for the exchange and the pool) is ``_Conn``'s. A base class rather than a helper
object: compiled with mypyc, the callbacks and the connection share one struct and every call
between them stays a native call, so the split costs a request nothing.

A backend is trusted with as little as nginx trusts it: a status outside 100-599, a head over
``max_head`` bytes or a second response on one request raise :class:`Untrusted` from the
callback, and the connection turns that into a broken exchange.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import httptools

from lbtui.balancer.header_lines import (
    DROP,
    RESPONSE_DROP_RAW,
    RawHeaders,
    connection_tokens,
    sort_line,
    sort_table,
)
from lbtui.errors import UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from lbtui.balancer.connections import _HostPool

HIGH_WATER = 256 * 1024
"""Response bytes buffered before the backend connection stops being read."""
LOW_WATER = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})

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
"""Bits of ``LeanResponse.kept_flags``: which headers a listener adds when missing are there."""


class Untrusted(Exception):
    """A backend sent what a response may not hold (raised from an llhttp callback)."""


class ResponseReader(asyncio.Protocol):
    """One exchange's response as it is parsed, and its body as it is read."""

    __slots__ = (
        "_body_waiter",
        "_buffered",
        "_chunked",
        "_chunks",
        "_cl",
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
        "_parser",
        "_paused_reading",
        "_skip_body",
        "_status",
        "_te",
        "_untrusted",
        "_waiting",
        "backend",
        "closed",
        "loop",
        "pool",
        "transport",
    )

    def __init__(self, backend: str, pool: _HostPool, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._head_waiter: asyncio.Future[None] | None = None
        """Resolved when the response head is in (a caller that awaits the exchange)."""
        self._head_in = False
        self._waiting = False
        """The response head is due (its deadline runs)."""
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

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sorted once, here: the lines a client gets (``kept``, rendered) and what the proxy
        # needs to know (length, chunked, Connection-named headers, Date/Server/Content-Type).
        if self._done:
            # A second response on one request (no ``on_message_begin`` callback: it would
            # cost a call a response): refused before its lines touch the first one's.
            raise Untrusted("bytes after the response")
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
            raise Untrusted("bytes after the response")
        status = self._status = self._parser.get_status_code()
        if status < 100 or status > 599:
            self._untrusted = f"invalid status {status}"
            raise Untrusted(self._untrusted)
        if self._head_bytes > self.pool.max_head and self._head_size() > self.pool.max_head:
            self._untrusted = self._head_too_large()
            raise Untrusted(self._untrusted)
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

    # -- the response's state ------------------------------------------------------------------

    def _head_too_large(self) -> str:
        return f"response head over {self.pool.max_head} bytes"

    def _head_size(self) -> int:
        return 16 + sum(len(k) + len(v) + 4 for k, v in self._headers)

    def _finish(self) -> None:
        self._done = True
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _clear_head(self) -> None:
        self._headers = []
        self._kept = []
        self._kept_flags = 0
        self._named = None
        self._cl = None
        self._te = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- the body, as the consumer reads it ------------------------------------------------------

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
