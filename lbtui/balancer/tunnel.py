"""Upgrade and WebSocket: a request with ``Connection: upgrade`` forwarded, then bytes both ways.

As nginx does with ``proxy_set_header Upgrade $http_upgrade`` and HAProxy by default: the
upgrade request goes through the same policy as any request (admission, route, pick, breaker),
is sent to the backend on a connection of its own (never a pooled one: after a 101 it is no
longer HTTP) with its ``Upgrade`` and ``Connection: upgrade`` headers kept, and the backend's
answer is relayed as it came. After a ``101 Switching Protocols`` the two connections are
joined: bytes are copied both ways, with flow control each way, until either side closes, then
the other is closed too. Any other answer is relayed and the client connection closes.

A tunnel counts as in flight on its backend and on the balancer from the request until it
closes (least-connections and the drain countdown see it); the latency recorded is the time to
the 101, so that long-lived tunnels do not read as slow requests. A tunnel through which
nothing went for ``[proxy] tunnel_idle_timeout_s`` is closed by the client connection's timer
(``ClientConnection._tick``); a shutdown waits for tunnels up to the grace period like any
request, then cuts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from lbtui.balancer.answers import Flag
from lbtui.balancer.connections import HeadBlock
from lbtui.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from lbtui.balancer.fast_request import FastRequest
    from lbtui.balancer.job import Job
    from lbtui.balancer.listener import ClientConnection
    from lbtui.balancer.pool import Backend

log = logging.getLogger("lbtui.tunnel")

MAX_HEAD = 64 * 1024
"""The largest backend answer head to an upgrade request."""


def upgrade_value(req: FastRequest) -> bytes | None:
    """The ``Upgrade`` header's value when the request also says ``Connection: upgrade``."""
    upgrade: bytes | None = None
    connection = False
    for name, value in req.raw:
        lname = name.lower()
        if lname == b"upgrade":
            upgrade = value.strip()
        elif lname == b"connection":
            connection = connection or any(
                t.strip().lower() == b"upgrade" for t in value.split(b",")
            )
    return upgrade if connection and upgrade else None


def content_length(head: bytes) -> int:
    """The ``Content-Length`` of an answer head, -1 when it has none (read until close)."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return -1


class BackendSide(asyncio.Protocol):
    """The tunnel's connection to the backend: its answer's head first, then raw bytes."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.head_done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.head_done.done():
            self.tunnel.from_backend(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end >= 0:
            self.head_done.set_result(bytes(self.head))
        elif len(self.head) > MAX_HEAD:
            self.head_done.set_exception(ConnectionError("the backend's answer head is too large"))

    def eof_received(self) -> bool:
        return False  # close: a tunnel ends when either side ends

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.head_done.done():
            self.head_done.set_exception(ConnectionError("the backend closed the connection"))
        self.tunnel.backend_closed()

    def pause_writing(self) -> None:
        self.tunnel.conn.pause("tunnel")

    def resume_writing(self) -> None:
        self.tunnel.conn.resume("tunnel")


class Tunnel:
    """One upgrade request, then (after a 101) one tunnel between a client and a backend."""

    def __init__(self, conn: ClientConnection, req: FastRequest, upgrade: bytes) -> None:
        self.conn = conn
        self.req = req
        self.upgrade = upgrade
        self.listener = conn.listener
        self.pipeline = conn.listener.proxy.pipeline
        self.backend: Backend | None = None
        self.side: BackendSide | None = None
        self.job: Job | None = None
        self.open = False
        """Joined (after the 101), until it closes."""
        self.last = 0.0
        """When a byte last went through (either way): the idle timeout runs from it."""
        self.pending: list[bytes] = []
        """Client bytes that came behind the upgrade request, sent after the 101."""
        self.bytes_in = 0
        self.bytes_out = 0
        self.client_gone = False
        self.remaining = -1
        """Not joined (any answer but 101): the body bytes still to relay (-1: until the
        backend closes)."""

    # -- the upgrade request -------------------------------------------------------------------

    def start(self) -> None:
        """Admit, route and pick as for any request; then connect (a task of the connection)."""
        req, conn, pipeline = self.req, self.conn, self.pipeline
        req.keep_alive = False  # whatever the answer, nothing after it is HTTP to read
        state = pipeline.state
        route = state.route(req) if state.router is not None else None
        if route is not None and route.fixed is not None:
            pipeline.serve(req)  # a redirect or fixed answer: the pipeline's own
            return
        pipeline.record.started()
        admitted = False
        extra: list[tuple[str, str]] | None = None
        if pipeline.admission.active:
            rejection, extra = pipeline.admit(req)
            if rejection is not None:
                pipeline.record.answered(429, Flag.RATE_LIMITED, pipeline.clock())
                conn.complete(req, rejection)
                return
            admitted = True
        job = self.job = pipeline.job(req, extra, admitted, route)
        backend = pipeline.attempts.pick(job)
        if backend is None:
            self._failed(job)
            return
        t0 = pipeline.attempts.start(job, backend)
        self.backend = backend
        conn.task = conn.loop.create_task(self._connect(job, backend, t0))

    def _failed(self, job: Job) -> None:
        result, flag = self.pipeline.failed(job)
        self._end(job, result.status, flag)
        self.conn.complete(self.req, result)

    def _end(self, job: Job, status: int, flag: str | None) -> None:
        pipeline = self.pipeline
        if job.admitted:
            pipeline.admission.release()
        pipeline.record.answered(status, flag, pipeline.clock())

    def _head(self, job: Job, backend: Backend) -> bytes:
        req = self.req
        headers = job.headers
        target = backend.base_path + job.raw_path
        parts = [f"{req.method} {target} HTTP/1.1\r\n".encode("latin-1")]
        if isinstance(headers, HeadBlock):
            parts.append(headers.block)
            has_host = headers.has_host
        else:  # text pairs (the aiohttp upstream's)
            parts += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers]
            has_host = any(k.lower() == "host" for k, _ in headers)
        if not has_host:
            host = backend.host if ":" not in backend.host else f"[{backend.host}]"
            parts.append(f"Host: {host}:{backend.port}\r\n".encode("latin-1"))
        parts += (b"Connection: upgrade\r\nUpgrade: ", self.upgrade, b"\r\n\r\n")
        return b"".join(parts)

    async def _connect(self, job: Job, backend: Backend, t0: float) -> None:
        conn, pipeline = self.conn, self.pipeline
        attempts = pipeline.attempts
        p = pipeline.state.config.proxy
        loop = conn.loop
        side = self.side = BackendSide(self)
        try:
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: side, backend.host, backend.port),
                    p.connect_timeout_ms / 1e3,
                )
            except (OSError, TimeoutError) as exc:
                raise UpstreamConnectError(backend.name, str(exc) or "connect timeout") from exc
            assert side.transport is not None
            side.transport.write(self._head(job, backend))
            try:
                head = await asyncio.wait_for(side.head_done, attempts.read_timeout_s)
            except TimeoutError as exc:
                raise UpstreamTimeout(backend.name, "no answer to the upgrade request") from exc
            except ConnectionError as exc:
                raise UpstreamError(backend.name, str(exc)) from exc
        except UpstreamError as exc:
            self._close_backend()
            conn.task = None
            if self.client_gone:
                self._abandon(job, backend)
                return
            attempts.failed(job, backend, exc, t0)
            self._failed(job)
            return
        except BaseException:
            # cancelled (a shutdown past its grace) or a defect: nobody is blamed, and the
            # counts are given back
            self._close_backend()
            conn.task = None
            self._abandon(job, backend)
            raise
        conn.task = None
        self._answered(job, backend, t0, head)

    def _abandon(self, job: Job, backend: Backend) -> None:
        """The upgrade request ends unanswered and unblamed (its client left, or the listener
        stopped): the backend's in-flight count and any half-open permit given back."""
        pipeline = self.pipeline
        backend.record.in_flight -= 1
        if backend.breaker is not None:
            backend.breaker.release(pipeline.clock())
        self._end(job, 0, None)

    def _answered(self, job: Job, backend: Backend, t0: float, head: bytes) -> None:
        """The backend's answer head (and what came after it): joined on a 101, else relayed."""
        conn, pipeline = self.conn, self.pipeline
        now = pipeline.clock()
        line = head.split(b"\r\n", 1)[0].split(b" ", 2)
        status = int(line[1]) if len(line) > 1 and line[1].isdigit() else 502
        end = head.find(b"\r\n\r\n") + 4
        brec = backend.record
        brec.finished(status, now - t0, 0, 0, now)
        failure = pipeline.state.is_failure(status)
        pipeline.state.outcome(backend, job.pool, failure, now - t0, now)
        self._end(job, status, job.flag)
        t = conn.transport
        side = self.side
        if t is None or side is None or side.transport is None:
            self._close_backend()
            return
        self.req.status = status
        if status != 101:
            # Relayed as it came (its length read from the head); then both connections close.
            t.write(head[:end])
            self.remaining = content_length(head[:end])
            self.open = True
            self.last = conn.loop.time()
            conn.tunnel = self
            conn.begin_tunnel()
            if len(head) > end:
                self.from_backend(head[end:])
            return
        # Joined: it stays in flight on the backend and the balancer until it closes.
        brec.in_flight += 1
        pipeline.record.in_flight += 1
        self.listener.tunnels += 1
        self.open = True
        self.last = conn.loop.time()
        t.write(head[:end])
        if len(head) > end:
            self.from_backend(head[end:])
        conn.tunnel = self
        conn.begin_tunnel()
        for data in self.pending:
            self.from_client(data)
        self.pending.clear()

    # -- the tunnel ----------------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        side = self.side
        if self.req.status != 101:
            return  # not joined: nothing the client sends goes anywhere
        if not self.open or side is None or side.transport is None:
            self.pending.append(data)
            return
        self.bytes_in += len(data)
        self.last = self.conn.loop.time()
        side.transport.write(data)

    def from_backend(self, data: bytes) -> None:
        t = self.conn.transport
        if t is None:
            return
        self.bytes_out += len(data)
        self.last = self.conn.loop.time()
        left = self.remaining
        if left >= 0:  # the body of an answer other than 101
            data = data[:left]
            self.remaining = left - len(data)
        t.write(data)
        if self.remaining == 0:
            self.conn.close()
            self._close_backend()

    def client_paused(self, paused: bool) -> None:
        """The client's write buffer is full (or drained): stop (or go on) reading the backend."""
        side = self.side
        if side is not None and side.transport is not None:
            with contextlib.suppress(RuntimeError):
                if paused:
                    side.transport.pause_reading()
                else:
                    side.transport.resume_reading()

    def backend_closed(self) -> None:
        if self.open:
            self.conn.close()  # after what is buffered for the client
        self._finish()

    def client_closed(self) -> None:
        self.client_gone = True
        self._close_backend()
        self._finish()

    def idle_timeout(self) -> None:
        log.debug("tunnel from %s idle for too long: closed", self.conn.remote)
        self.conn.close()
        self._close_backend()
        self._finish()

    def _close_backend(self) -> None:
        side = self.side
        if side is not None and side.transport is not None:
            side.transport.close()

    def _finish(self) -> None:
        """Once, when a joined tunnel ends: its in-flight counts given back."""
        if not self.open:
            return
        self.open = False
        backend = self.backend
        if self.req.status == 101 and backend is not None:
            backend.record.in_flight -= 1
            self.pipeline.record.in_flight -= 1
            self.listener.tunnels -= 1
            self.listener.tunnels_total += 1
