"""The lean upstream: per-backend pools of keep-alive connections (``connections._Conn``) and
the response it hands the pipeline, behind the same seam as the aiohttp client
(``Upstream.send`` → ``UpstreamResponse``).

Split from ``connections.py``, which keeps one connection's protocol (an exchange, parsed by
llhttp); this keeps the pools (checkout, checkin, idle expiry), the sending of a request head
and body, and the response's body as chunks. Same compiled group: nothing per request changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from lbtui.balancer.connections import (
    MAX_HEADER_BYTES,
    HeadBlock,
    _Conn,
    _HostPool,
    authority,
)
from lbtui.balancer.header_lines import RawHeaders
from lbtui.errors import (
    ClientBodyError,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamError,
)


def _decoded(raw: RawHeaders) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(
        CIMultiDict([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw])
    )


class ChunkIterator:
    """``async for`` over ``read()`` until it returns ``b""``: a class rather than an async
    generator, which mypyc (the compiled build, see ``setup.py``) does not compile."""

    __slots__ = ("_read",)

    def __init__(self, read: Callable[[], Awaitable[bytes]]) -> None:
        self._read = read

    def __aiter__(self) -> ChunkIterator:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._read()
        if not chunk:
            raise StopAsyncIteration
        return chunk


class LeanResponse:
    """A backend's response on a lean connection: head now, body as chunks.

    ``raw_headers`` are the header lines as llhttp gave them (bytes); ``headers`` decodes them
    into a multidict on first use."""

    __slots__ = (
        "_conn",
        "_headers",
        "_released",
        "_timeout_s",
        "_upstream",
        "content_length",
        "kept",
        "kept_flags",
        "named",
        "raw_headers",
        "reason",
        "status",
    )

    def __init__(self, conn: _Conn, upstream: LeanUpstream, timeout_s: float) -> None:
        self._conn = conn
        self._upstream = upstream
        self._timeout_s = timeout_s
        self._released = False
        self.status = conn._status
        self.reason: str | None = None
        self.raw_headers = conn._headers
        self.kept = conn._kept
        """The lines for the client, rendered in pieces (hop-by-hop and length dropped; the
        headers ``named`` by Connection not yet)."""
        self.kept_flags = conn._kept_flags
        self.named = conn._named
        """Header names listed by Connection beyond the hop-by-hop ones (usually None)."""
        self.content_length: int | None = conn._length
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        h = self._headers
        if h is None:
            h = self._headers = _decoded(self.raw_headers)
        return h

    async def read(self) -> bytes:
        conn = self._conn
        if conn._done and conn._error is None:
            return conn.take_body()
        parts: list[bytes] = []
        while True:
            chunk = await conn.next_chunk(self._timeout_s)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def chunks(self) -> AsyncIterator[bytes]:
        conn, timeout_s = self._conn, self._timeout_s
        return ChunkIterator(lambda: conn.next_chunk(timeout_s))

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
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.max_idle_per_backend = max_idle_per_backend
        self.max_header_bytes = max_header_bytes
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
            conn.idle_since = conn.loop.time()
            pool.idle.append(conn)
        else:
            conn.abort()

    def release(self, conn: _Conn) -> None:
        """A callback-mode exchange is over and its body taken: keep or drop the connection."""
        self._checkin(conn)

    def _pool(self, host: str, port: int) -> _HostPool:
        key = (host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _HostPool(host, port, self.max_header_bytes)
        return pool

    def idle_connection(self, host: str, port: int) -> _Conn | None:
        """A pooled connection ready for a request, or None (then ``send`` connects)."""
        pool = self._pools.get((host, port))
        if pool is None or not pool.idle:
            return None
        idle = pool.idle
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.keepalive_timeout_s:
                conn.abort()
                continue
            conn.reused = True
            return conn
        return None

    async def _checkout(self, backend_name: str, host: str, port: int) -> _Conn:
        conn = self.idle_connection(host, port)
        if conn is not None:
            return conn
        pool = self._pool(host, port)
        loop = self._loop or asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(backend_name, pool, loop), host, port),
                self.connect_timeout_s,
            )
        except TimeoutError:
            raise UpstreamConnectError(backend_name, "connect timed out") from None
        except OSError as exc:
            raise UpstreamConnectError(
                backend_name, f"connect failed: {exc.strerror or exc}"
            ) from exc
        return proto

    @staticmethod
    def head(
        method: str,
        target: str,
        headers: HeadBlock | CIMultiDict[str] | Iterable[tuple[str, str]],
        host: str,
        port: int,
        body: object,
    ) -> tuple[bytes, bool]:
        """The request head as bytes, and whether the body goes chunked."""
        chunked = False
        if type(headers) is HeadBlock:
            parts = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), headers.block]
            if not headers.has_host:
                parts.append(f"Host: {authority(host, port)}\r\n".encode("latin-1"))
            if body is not None and not headers.has_length:
                if isinstance(body, bytes):
                    parts.append(b"Content-Length: %d\r\n" % len(body))
                else:
                    chunked = True
                    parts.append(b"Transfer-Encoding: chunked\r\n")
            parts.append(b"\r\n")
            return b"".join(parts), chunked
        items = headers.items() if isinstance(headers, CIMultiDict) else headers
        assert not isinstance(items, HeadBlock)
        lines = [f"{method} {target} HTTP/1.1\r\n"]
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
            lines.append(f"Host: {authority(host, port)}\r\n")
        if isinstance(body, bytes):
            if not has_length:
                lines.append(f"Content-Length: {len(body)}\r\n")
        elif body is not None and not has_length:
            chunked = True
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1"), chunked

    async def send(
        self,
        backend: object,
        method: str,
        raw_path: str,
        headers: HeadBlock | CIMultiDict[str] | Iterable[tuple[str, str]],
        body: Any,
        *,
        read_timeout_s: float | None = None,
    ) -> LeanResponse:
        """Send one request; return once the response head has arrived."""
        name: str = backend.name  # type: ignore[attr-defined]
        host: str = backend.host  # type: ignore[attr-defined]
        port: int = backend.port  # type: ignore[attr-defined]
        base: str = backend.base_path  # type: ignore[attr-defined]
        timeout = self.read_timeout_s if read_timeout_s is None else read_timeout_s
        head, chunked = self.head(method, base + raw_path, headers, host, port, body)
        skip_body = method == "HEAD"

        conn = await self._checkout(name, host, port)
        try:
            await conn.exchange(head, body, chunked, skip_body, timeout)
        except (UpstreamError, ClientBodyError):
            conn.abort()
            raise
        except (OSError, RuntimeError) as exc:
            conn.abort()
            raise UpstreamBroken(name, f"connection broken: {exc}") from exc
        except BaseException:
            conn.abort()  # cancelled mid-exchange: the connection is in an unknown state
            raise
        return LeanResponse(conn, self, timeout)

    def response(self, conn: _Conn, timeout_s: float) -> LeanResponse:
        """The response of a callback-mode exchange whose head is in."""
        return LeanResponse(conn, self, timeout_s)
