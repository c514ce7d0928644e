"""The upstream side of the proxy: send a request head and body to a backend, get a response head
and a body stream back.

This is a seam (DESIGN.md, performance notes): the proxy sees only ``Upstream.send`` and
``UpstreamResponse``, so the aiohttp client used here can later give way to a leaner keep-alive
pool without touching policy or views. aiohttp's and the OS's errors are translated here, once,
into ``UpstreamConnectError`` (nothing was sent), ``UpstreamTimeout`` and ``UpstreamBroken``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from lbtui.balancer.connections import authority
from lbtui.balancer.pool import Backend
from lbtui.errors import (
    ClientBodyError,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)

CHUNK = 64 * 1024
_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def client_body_error(exc: BaseException) -> ClientBodyError | None:
    """The client body failure behind an error aiohttp raised while uploading, if that is
    what it was (aiohttp wraps what the body iterator raised)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, ClientBodyError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def translate(backend: str, exc: BaseException, *, read_timeout_s: float) -> UpstreamError:
    """The lbtui error for an aiohttp or OS error raised while talking to ``backend``."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamConnectError(backend, "connect timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectError(backend, f"connect failed: {exc.os_error.strerror or exc}")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return UpstreamTimeout(backend, f"no response within {read_timeout_s * 1e3:.0f} ms")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamBroken(backend, "connection closed by the backend")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamBroken(backend, "response body cut short")
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamBroken(backend, f"invalid response: {str(exc.message)[:120]}")
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        return UpstreamBroken(
            backend, f"connection broken: {getattr(exc, 'strerror', None) or exc}"
        )
    return UpstreamBroken(backend, f"{type(exc).__name__}: {exc}")


class BackendResponse(Protocol):
    """What the pipeline reads of a backend's response, whichever client produced it."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content_length(self) -> int | None: ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class UpstreamResponse:
    """A backend's response: head now, body as a stream of chunks."""

    __slots__ = ("_backend", "_read_timeout_s", "_resp")

    def __init__(self, resp: aiohttp.ClientResponse, backend: str, read_timeout_s: float) -> None:
        self._resp = resp
        self._backend = backend
        self._read_timeout_s = read_timeout_s

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def reason(self) -> str | None:
        return self._resp.reason

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._resp.headers

    @property
    def content_length(self) -> int | None:
        return self._resp.content_length

    async def read(self) -> bytes:
        """The whole body (for small, sized responses)."""
        try:
            return await self._resp.read()
        except Exception as exc:
            raise translate(self._backend, exc, read_timeout_s=self._read_timeout_s) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk, as it arrives."""
        content = self._resp.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except Exception as exc:
            raise translate(self._backend, exc, read_timeout_s=self._read_timeout_s) from exc

    def release(self) -> None:
        """Body fully read: the connection goes back to the keep-alive pool."""
        self._resp.release()

    def close(self) -> None:
        """Abandon the response: the connection is closed, not reused."""
        self._resp.close()


class Upstream:
    """Keep-alive connections to the backends, and the one call that uses them."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_timeout_s: float = 30.0,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=0,
            keepalive_timeout=self.keepalive_timeout_s,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=None,
                sock_connect=self.connect_timeout_s,
                sock_read=self.read_timeout_s,
            ),
            skip_auto_headers=_SKIP_AUTO,
            trust_env=False,
        )
        # Retrying is lbtui's policy (other backend, budget), not the client library's: aiohttp
        # would otherwise resend an idempotent request once on the same broken backend.
        if hasattr(self._session, "_retry_connection"):
            self._session._retry_connection = False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        backend: Backend,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str] | Iterable[tuple[str, str]],
        body: aiohttp.StreamReader | bytes | None,
        *,
        read_timeout_s: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; return once the response head has arrived.

        ``read_timeout_s`` overrides the read timeout for this request (a per-try timeout)."""
        session = self._session
        if session is None:
            raise RuntimeError("Upstream.start() was not awaited")
        url = URL(
            f"http://{authority(backend.host, backend.port)}{backend.base_path}{raw_path}",
            encoded=True,
        )
        read_s = self.read_timeout_s if read_timeout_s is None else read_timeout_s
        timeout = (
            None
            if read_timeout_s is None
            else aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=self.connect_timeout_s, sock_read=read_s
            )
        )
        try:
            if timeout is None:
                resp = await session.request(
                    method, url, headers=headers, data=body, allow_redirects=False
                )
            else:
                resp = await session.request(
                    method, url, headers=headers, data=body, allow_redirects=False, timeout=timeout
                )
        except Exception as exc:
            body_error = client_body_error(exc)
            if body_error is not None:
                raise body_error from None
            raise translate(backend.name, exc, read_timeout_s=read_s) from exc
        if not 100 <= resp.status <= 599:
            resp.close()
            raise UpstreamBroken(backend.name, f"invalid status {resp.status}")
        return UpstreamResponse(resp, backend.name, read_s)
