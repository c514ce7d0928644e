"""A lean keep-alive connection pool to the backends: ``asyncio.Protocol`` + llhttp (httptools).

DESIGN.md's performance notes measured aiohttp's ``ClientSession`` at about 40 % of a naive
proxy's CPU; a profile of lbtui under wrk agreed (about 80 µs a request). This module does only
what a proxy needs: one request at a time per connection, the head (and a small body) in one
write, the response head parsed by llhttp, the body handed over chunk by chunk with
back-pressure (reading pauses while the consumer is behind), idle connections kept per backend
(newest first) and dropped after ``keepalive_timeout_s``. It sits behind the same seam as the
aiohttp client (``Upstream.send`` → ``UpstreamResponse``), so policy and views do not change.

Errors become ``UpstreamConnectError`` (nothing was sent), ``UpstreamTimeout`` and
``UpstreamBroken`` here, once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import AsyncIterator, Iterable
from typing import cast

import httptools
from aiohttp import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

from lbtui.errors import UpstreamBroken, UpstreamConnectError, UpstreamError, UpstreamTimeout

HIGH_WATER = 256 * 1024
"""Response bytes buffered before the backend connection stops being read."""
LOW_WATER = 64 * 1024
UPLOAD_CHUNK = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class _Conn(asyncio.Protocol):
    """One connection to a backend, one exchange at a time."""

    def __init__(self, backend: str, pool: _HostPool) -> None:
        self.backend = backend
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._head_waiter: asyncio.Future[None] | None = None
        self._headers: list[tuple[str, str]] = []
        self._status = 0
        self._keep_alive = False
        self._length_known = False
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
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamBroken(self.backend, "unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(self.backend, f"invalid response: {str(exc)[:120]}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.open -= 1
        self.pool.forget(self)
        if self._head_waiter is not None and not self._done:
            if (
                not self._length_known
                and self._head_waiter.done()
                and self._error is None
                and exc is None
            ):
                # A body delimited by the end of the connection ends here.
                self._finish()
                return
            self._fail(UpstreamBroken(self.backend, "connection closed by the backend"))

    def pause_writing(self) -> None:
        if self._write_ok is None or self._write_ok.done():
            self._write_ok = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_ok is not None and not self._write_ok.done():
            self._write_ok.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if 100 <= self._status < 200 and self._status != 101:
            # An interim response (100 Continue, 103 Early Hints): the final one follows.
            self._headers = []
            return
        self._keep_alive = self._parser.should_keep_alive()
        lowered = [k.lower() for k, _ in self._headers]
        self._length_known = (
            "content-length" in lowered
            or "transfer-encoding" in lowered
            or self._status in _NO_BODY_STATUS
            or self._status < 200
        )
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._skip_body or self._status in _NO_BODY_STATUS:
            # llhttp cannot be told a HEAD response has no body: end the message here and
            # start a fresh parser for the next exchange on this connection.
            self._parser = httptools.HttpResponseParser(self)
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self._done:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        self._wake_body()
        if self._buffered > HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if not self._done and self._head_waiter is not None and self._head_waiter.done():
            self._finish()

    # -- the exchange ----------------------------------------------------------------------------

    def _wake_body(self) -> None:
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _finish(self) -> None:
        self._done = True
        self._wake_body()

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()  # retrieved: the caller re-raises it
        self._wake_body()
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _reset_exchange(self, skip_body: bool) -> asyncio.Future[None]:
        self._headers = []
        self._status = 0
        self._chunks.clear()
        self._buffered = 0
        self._done = False
        self._error = None
        self._skip_body = skip_body
        self._head_waiter = asyncio.get_running_loop().create_future()
        return self._head_waiter

    async def _drain(self) -> None:
        w = self._write_ok
        if w is not None and not w.done():
            await w

    async def exchange(
        self,
        head: bytes,
        body: StreamReader | bytes | None,
        chunked: bool,
        skip_body: bool,
        read_timeout_s: float,
    ) -> None:
        """Send the request; return when the response head has arrived."""
        transport = self.transport
        assert transport is not None
        waiter = self._reset_exchange(skip_body)
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
        try:
            await asyncio.wait_for(waiter, read_timeout_s)
        except TimeoutError:
            self.abort()
            raise UpstreamTimeout(
                self.backend, f"no response within {read_timeout_s * 1e3:.0f} ms"
            ) from None

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
            self._body_waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._body_waiter, read_timeout_s)
            except TimeoutError:
                self.abort()
                raise UpstreamTimeout(
                    self.backend, f"no body data within {read_timeout_s * 1e3:.0f} ms"
                ) from None
            finally:
                self._body_waiter = None

    @property
    def reusable(self) -> bool:
        return self._done and self._keep_alive and not self.closed and self._error is None


class _HostPool:
    """Idle connections to one backend address, newest first."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[_Conn] = []
        self.open = 0

    def forget(self, conn: _Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)


class LeanResponse:
    """A backend's response on a lean connection: head now, body as chunks."""

    __slots__ = ("_conn", "_released", "_timeout_s", "_upstream", "headers", "reason", "status")

    def __init__(self, conn: _Conn, upstream: LeanUpstream, timeout_s: float) -> None:
        self._conn = conn
        self._upstream = upstream
        self._timeout_s = timeout_s
        self._released = False
        self.status = conn._status
        self.reason: str | None = None
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(conn._headers))

    @property
    def content_length(self) -> int | None:
        v = self.headers.get("Content-Length")
        if v is None or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        try:
            return int(v)
        except ValueError:
            return None

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while True:
            chunk = await self._conn.next_chunk(self._timeout_s)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._conn.next_chunk(self._timeout_s)
            if not chunk:
                return
            yield chunk

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._upstream._checkin(self._conn)

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._conn.abort()


class LeanUpstream:
    """Keep-alive connections to the backends on ``asyncio.Protocol``."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_timeout_s: float = 30.0,
        max_idle_per_backend: int = 256,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.max_idle_per_backend = max_idle_per_backend
        self._pools: dict[tuple[str, int], _HostPool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        for pool in self._pools.values():
            for conn in list(pool.idle):
                conn.abort()
            pool.idle.clear()

    def open_connections(self, host: str, port: int) -> int:
        """Connections open to one backend (idle plus in use)."""
        pool = self._pools.get((host, port))
        return pool.open if pool is not None else 0

    def _checkin(self, conn: _Conn) -> None:
        pool = conn.pool
        if conn.reusable and len(pool.idle) < self.max_idle_per_backend:
            assert self._loop is not None
            conn.idle_since = self._loop.time()
            pool.idle.append(conn)
        else:
            conn.abort()

    async def _checkout(self, backend_name: str, host: str, port: int) -> _Conn:
        key = (host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _HostPool(host, port)
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        while pool.idle:
            conn = pool.idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.keepalive_timeout_s:
                conn.abort()
                continue
            conn.reused = True
            return conn
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(backend_name, pool), host, port),
                self.connect_timeout_s,
            )
        except TimeoutError:
            raise UpstreamConnectError(backend_name, "connect timed out") from None
        except OSError as exc:
            raise UpstreamConnectError(
                backend_name, f"connect failed: {exc.strerror or exc}"
            ) from exc
        return proto

    async def send(
        self,
        backend: object,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str] | Iterable[tuple[str, str]],
        body: StreamReader | bytes | None,
        *,
        read_timeout_s: float | None = None,
    ) -> LeanResponse:
        """Send one request; return once the response head has arrived."""
        name: str = backend.name  # type: ignore[attr-defined]
        host: str = backend.host  # type: ignore[attr-defined]
        port: int = backend.port  # type: ignore[attr-defined]
        base: str = backend.base_path  # type: ignore[attr-defined]
        timeout = self.read_timeout_s if read_timeout_s is None else read_timeout_s
        items = headers.items() if isinstance(headers, CIMultiDict) else headers
        lines = [f"{method} {base}{raw_path} HTTP/1.1\r\n"]
        has_host = False
        has_length = False
        for k, v in items:
            lk = k.lower()
            if lk == "host":
                has_host = True
            elif lk == "content-length":
                has_length = True
            lines.append(f"{k}: {v}\r\n")
        if not has_host:
            lines.append(f"Host: {host}:{port}\r\n")
        chunked = False
        if isinstance(body, bytes):
            if not has_length:
                lines.append(f"Content-Length: {len(body)}\r\n")
        elif body is not None and not has_length:
            chunked = True
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        skip_body = method == "HEAD"

        conn = await self._checkout(name, host, port)
        try:
            await conn.exchange(head, body, chunked, skip_body, timeout)
        except UpstreamError:
            conn.abort()
            raise
        except (OSError, RuntimeError) as exc:
            conn.abort()
            raise UpstreamBroken(name, f"connection broken: {exc}") from exc
        return LeanResponse(conn, self, timeout)
