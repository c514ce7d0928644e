"""The fast listener: HTTP/1.1 on ``asyncio.Protocol`` + llhttp (httptools), feeding the pipeline.

DESIGN.md's performance notes put aiohttp's per-request server machinery (request object,
handler task plumbing, response preparation) at about 30 µs; this listener does the same job in
a few: the request head is parsed by llhttp callbacks into bytes, the headers for the backend
are rendered straight from those bytes, and a whole answer goes out as one ``write`` (head and
body together). Policy does not live here: every request goes through the same driver,
:meth:`Pipeline.serve <lbtui.balancer.pipeline.Pipeline.serve>`, as behind aiohttp, so admission,
routes, picks, breakers, retries, fallbacks, faults, records and events are one code.

What it does, as aiohttp's low-level server does for the proxy:

- keep-alive, HTTP/1.0 and 1.1, ``Connection: close``; an idle connection is closed after
  ``keepalive_timeout_s``;
- pipelining: requests on one connection are answered in order, one at a time; reading pauses
  while too many wait;
- limits: a request line over ``max_line`` bytes is answered 414, a header field over
  ``max_field`` bytes, more than ``max_headers`` headers or a head over ``max_head`` bytes 431,
  a body over ``[proxy] max_body_bytes`` 413, anything llhttp rejects 400 — then the connection
  is closed; the edge rules of RFC 9112 / 9110 (one valid Host, no CONNECT, HTTP/1.x, absolute
  form) are the request's own (``fast_request.py``);
- client timeouts, nginx's: a request head within ``client_header_timeout_s`` (else 408), each
  body read within ``client_body_timeout_s``, keep-alive ``keepalive_timeout_s``, all on one
  timer a connection; a body that breaks off (malformed, too slow, too big) ends its request at
  once, with its slot and its backend connection;
- request bodies stream to the backend with flow control (reading pauses above a high-water
  mark); a body nobody read is discarded so the connection can go on;
- responses: the same headers aiohttp would add (``Date``, ``Server``, ``Content-Type`` for a
  body without one, ``Connection``), ``Content-Length`` or chunked framing for streamed bodies,
  write flow control, and a cut (close) when a backend breaks off mid-body;
- graceful shutdown: stop accepting, close idle connections, let in-flight requests finish up
  to the grace period, then abort the rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final, cast

from lbtui.balancer.client_writer import (
    CLOSED,
    IDLE,
    LAST,
    SERVING,
    TUNNEL,
    WAIT_BODY,
    WAIT_WRITE,
    ClientWriter,
)
from lbtui.balancer.exchange import Answer, Result, render_pairs
from lbtui.balancer.fast_request import MAX_QUEUED, BodyStream, FastRequest
from lbtui.balancer.request_reader import RequestReader
from lbtui.balancer.tunnel import Tunnel, upgrade_value
from lbtui.errors import ClientBodyError
from lbtui.units import split_authority

if TYPE_CHECKING:
    from lbtui.balancer.proxy import Proxy

log = logging.getLogger("lbtui.listener")


MAX_HELD: Final = 64 * 1024
"""Bytes behind an upgrade request kept until the backend answers; then reading pauses."""


class ClientConnection(ClientWriter):
    """One client connection: read, queue, serve in order, answer.

    Its life is one field (``life``: the constants and their diagram are in
    ``client_writer.py``), changed only by the transitions below; how requests are read is its
    :class:`RequestReader`'s, how answers are written its base's (:class:`ClientWriter`).

    Client timeouts (header, body, keep-alive) share one timer a connection, which looks at
    the connection's state when it fires and sets itself again for the earliest deadline, at
    most ``FastListener.tick_s`` ahead: no timer is set or cancelled per request or per read,
    yet none fires late (every timeout is at least ``tick_s``)."""

    __slots__ = (
        "_idle_since",
        "_paused",
        "_queue",
        "_timer",
        "active",
        "held",
        "local_host",
        "reader",
        "remote",
        "remote_raw",
        "task",
        "tunnel",
    )
    remote: str
    """The client's address, as text (declared here: ``FastRequest`` reads it first)."""

    def __init__(self, listener: FastListener) -> None:
        super().__init__(listener)
        # declared: FastRequest reads them, and mypyc's build analyses it first ("Cannot
        # determine type" otherwise)
        self.remote: str = ""
        self.remote_raw: bytes = b""
        self.local_host: str = ""
        self._queue: collections.deque[FastRequest] = collections.deque()
        self.active: FastRequest | None = None
        self.task: asyncio.Task[None] | None = None
        self._paused: set[str] = set()
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.reader = RequestReader(self)
        self.tunnel: Tunnel | None = None
        """The upgrade request being served or tunnelled (``tunnel.py``), if any."""
        self.held = b""
        """Bytes that came behind an upgrade request: the tunnel's first."""

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple | list) and peer:
            self.remote = str(peer[0])
        self.remote_raw = self.remote.encode()
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple | list):
            self.local_host = f"[{sock[0]}]" if len(sock) == 4 else str(sock[0])
        raw_sock = transport.get_extra_info("socket")
        if raw_sock is not None:
            with contextlib.suppress(OSError):
                raw_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.listener.connections.add(self)
        now = self.loop.time()
        self._idle_since = now
        self._timer = self.loop.call_at(now + self.listener.tick_s, self._tick)

    def connection_lost(self, exc: Exception | None) -> None:
        self.life = CLOSED
        self.transport = None
        self.listener.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gone = ClientBodyError(0, "the client closed the connection")
        for req in (self.reader.parsing, self.active, *self._queue):
            if req is not None and req.body is not None:
                req.body.fail(gone)
        self._queue.clear()
        d = self.drain
        if d is not None and not d.done():
            d.set_exception(ConnectionResetError("the client closed the connection"))
            d.exception()
        if self.tunnel is not None:
            self.tunnel.client_closed()

    def data_received(self, data: bytes) -> None:
        life = self.life
        if life == TUNNEL:
            tunnel = self.tunnel
            assert tunnel is not None
            tunnel.from_client(data)
        elif life != CLOSED:
            if self.tunnel is not None:
                self.hold(data)  # behind an upgrade request: the tunnel's, if it opens
                return
            self.reader.feed(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.tunnel is not None:
            self.tunnel.client_paused(True)

    def resume_writing(self) -> None:
        d = self.drain
        if d is not None and not d.done():
            d.set_result(None)
        if self.life == WAIT_WRITE:
            self._next()
        elif self.tunnel is not None:
            self.tunnel.client_paused(False)

    # -- upgrades --------------------------------------------------------------------------------

    def hold(self, data: bytes) -> None:
        """Bytes behind an upgrade request: the tunnel's. Reading goes on (so that a client
        that leaves before the backend answers is noticed) up to ``MAX_HELD`` bytes."""
        self.held += data
        if len(self.held) > MAX_HELD:
            self.pause("upgrade")

    def begin_tunnel(self) -> None:
        """The backend answered the upgrade request: from now on bytes go through."""
        self.life = TUNNEL
        held, self.held = self.held, b""
        tunnel = self.tunnel
        if held and tunnel is not None:
            tunnel.from_client(held)
        self.resume("upgrade")

    # -- what the reader reports -----------------------------------------------------------------

    def arrived(self, req: FastRequest) -> None:
        """``req``'s head is in: served now, or queued behind the one being served."""
        if self.life == IDLE:
            self._serve(req)
        else:
            self._queue.append(req)
            if len(self._queue) >= MAX_QUEUED:
                self.pause("queue")

    def body_complete(self) -> None:
        """The request being read is all in."""
        if self.life == WAIT_BODY:
            # Its answer went out before its body was all in (discarded): now go on.
            self._next()

    def latest(self) -> FastRequest | None:
        """The last request whose head is in (the last queued, else the one served)."""
        return self._queue[-1] if self._queue else self.active

    # -- serving: the transitions of ``life`` ------------------------------------------------------

    def _serve(self, req: FastRequest) -> None:
        self.life = SERVING
        self.active = req
        listener = self.listener
        if listener.redirect_port:
            self.complete(req, redirect_answer(req, self.local_host, listener.redirect_port))
            return
        if req.upgrade:
            upgrade = upgrade_value(req)
            if upgrade is not None:
                self.tunnel = Tunnel(self, req, upgrade)
                self.tunnel.start()
                return
        listener.proxy.pipeline.serve(req)

    async def run(self, req: FastRequest, rest: Coroutine[Any, Any, Result]) -> None:
        """The rest of a request the pipeline could not finish without waiting."""
        try:
            result = await rest
        except ClientBodyError as exc:
            # Its body broke off (malformed, too slow, too big, gone): the pipeline has let go
            # of the slot and the backend connection; the client gets why, if it can.
            self.task = None
            if req.status == 0 and exc.status:
                self.write_refusal(exc.status)
            self.close()
            return
        except (ConnectionError, asyncio.CancelledError):
            self.task = None
            self.close()
            return
        except Exception as exc:  # a defect in the listener's own code
            log.error("internal error in the fast listener", exc_info=exc)
            self.task = None
            self.close()
            return
        self.task = None
        self.complete(req, result)

    def complete(self, req: FastRequest, result: Result) -> None:
        """``req``'s answer is ready: send it (unless streamed already) and go on."""
        if type(result) is Answer:
            headers = result.headers
            if type(headers) is list:  # an answer the balancer wrote itself
                headers = render_pairs(headers)
            self.write_answer(req, result.status, result.reason, headers, result.body)
        self._done(req)

    def _done(self, req: FastRequest) -> None:
        self.active = None
        if self.life != SERVING or not req.keep_alive or self.transport is None:
            self.close()  # LAST, or closed meanwhile, or the request asked for it
            return
        body = req.body
        if body is not None and not body.eof:
            body.discard()  # the answer is out; the rest of the body goes nowhere
            if req is self.reader.parsing:
                self.life = WAIT_BODY
                return  # body_complete goes on
        self._next()

    def _next(self) -> None:
        d = self.drain
        if d is not None and not d.done():
            self.life = WAIT_WRITE  # the client is not reading its answers: wait
            return
        if self._queue:
            nxt = self._queue.popleft()
            if len(self._queue) < MAX_QUEUED:
                self.resume("queue")
            self._serve(nxt)
            return
        if self.listener.stopping:
            self.close()
            return
        self.life = IDLE
        self._idle_since = self.loop.time()

    def _last(self) -> None:
        """Serve what is active, then close: nothing more is read or queued."""
        self.life = LAST
        self._queue.clear()
        self.pause("refused")

    def refuse(self, status: int, detail: str) -> None:
        """A request refused by the listener: the status, then the connection closes.

        While a request is served, what failed is either its own body (then the body fails,
        and the pipeline ends the request at once: the status if nothing was answered, its
        slot and backend connection freed) or a pipelined request behind it (answered with
        nothing; the connection closes after the answer in flight)."""
        log.debug("refused a request from %s: %s", self.remote, detail)
        life = self.life
        if life in (IDLE, WAIT_WRITE):
            self.write_refusal(status)
            self.close()
        elif life in (SERVING, LAST):
            req = self.reader.parsing
            if req is not None and req.body is not None and not req.body.eof:
                req.body.fail(ClientBodyError(status, detail))
            self._last()
        elif life == WAIT_BODY:
            self.close()  # the rest of an answered request's body is bad: nothing more to say

    def close(self) -> None:
        self.life = CLOSED
        t = self.transport
        if t is not None:
            t.close()

    def abort(self) -> None:
        self.life = CLOSED
        t = self.transport
        if t is not None:
            t.abort()
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    # -- client timeouts: one timer a connection -------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        life = self.life
        if life == CLOSED:
            return
        listener = self.listener
        reader = self.reader
        now = self.loop.time()
        due = now + listener.tick_s
        if life == TUNNEL:
            tunnel = self.tunnel
            assert tunnel is not None
            deadline = tunnel.last + listener.tunnel_idle_s
            if now >= deadline:
                tunnel.idle_timeout()
                return
            due = min(due, deadline)
        elif self._paused:
            pass  # reading is stopped on our side: nothing is the client's to be late with
        elif reader.in_head:
            deadline = reader.head_t0 + listener.header_timeout_s
            if now >= deadline:
                self._head_timed_out()
                return
            due = min(due, deadline)
        elif reader.parsing is not None:
            body = reader.parsing.body
            if body is not None and not body.eof:
                deadline = reader.body_t + listener.body_timeout_s
                if now >= deadline:
                    self._body_timed_out(body)
                    return
                due = min(due, deadline)
        elif life == IDLE:
            deadline = self._idle_since + listener.keepalive_timeout_s
            if now >= deadline:
                self.close()
                return
            due = min(due, deadline)
        self._timer = self.loop.call_at(due, self._tick)

    def _head_timed_out(self) -> None:
        log.debug("request head from %s timed out", self.remote)
        if self.life == IDLE or self.life == WAIT_WRITE:
            self.write_refusal(408)
            self.close()
        else:
            self._last()  # a pipelined head: answer the request in flight, then close
            self._timer = self.loop.call_at(self.loop.time() + self.listener.tick_s, self._tick)

    def _body_timed_out(self, body: BodyStream) -> None:
        log.debug("request body from %s timed out", self.remote)
        body.fail(ClientBodyError(408, "client body timeout"))
        if self.life == SERVING or self.life == LAST:
            self._last()  # the pipeline ends the request (408 if nothing was sent), then close
            self._timer = self.loop.call_at(self.loop.time() + self.listener.tick_s, self._tick)
        else:
            self.close()

    @property
    def idle(self) -> bool:
        return self.life == IDLE and not self._queue and self.reader.parsing is None

    # -- reading flow control ------------------------------------------------------------------

    def pause(self, why: str) -> None:
        if why not in self._paused:
            self._paused.add(why)
            if len(self._paused) == 1 and self.transport is not None:
                with contextlib.suppress(RuntimeError):
                    self.transport.pause_reading()

    def resume(self, why: str) -> None:
        if why in self._paused:
            self._paused.discard(why)
            if not self._paused and self.transport is not None:
                # The client's clocks start again now: it could not send while we did not read.
                self.reader.head_t0 = self.reader.body_t = self.loop.time()
                with contextlib.suppress(RuntimeError):
                    self.transport.resume_reading()


def redirect_answer(req: FastRequest, local_host: str, port: int) -> Answer:
    """308 to the same host and path on the HTTPS listener at ``port`` (HAProxy's
    ``redirect scheme https code 308``): the method and body are kept by the client."""
    authority = split_authority(req.host_raw.decode("latin-1")) if req.host_raw else None
    host = authority[0] if authority is not None else local_host.strip("[]")
    if ":" in host:
        host = f"[{host}]"
    where = f"https://{host}{'' if port == 443 else f':{port}'}{req.raw_path}"
    req.keep_alive = False  # the client goes elsewhere: nothing more to read here
    return Answer(
        308,
        None,
        [("Location", where), ("Content-Type", "text/plain; charset=utf-8")],
        f"308 Permanent Redirect: {where}\n".encode(),
    )


class FastListener:
    """The client listener on ``asyncio.Protocol``: one :class:`ClientConnection` a client."""

    def __init__(
        self,
        proxy: Proxy,
        *,
        keepalive_timeout_s: float = 75.0,
        max_line: int = 8190,
        max_field: int = 16_384,
        max_headers: int = 128,
        max_head: int = 64 * 1024,
        name: str = "default",
        scheme: str = "http",
    ) -> None:
        self.proxy = proxy
        self.name = name
        """The listener's name (``[[listeners]] name``)."""
        self.scheme = scheme
        """``http`` or ``https``: what the backend sees in ``X-Forwarded-Proto``."""
        self.redirect_port = 0
        """Not 0: every request is answered 308 to HTTPS on this port (``redirect_https``)."""
        self.tunnels = 0
        """Upgraded connections being tunnelled (WebSocket)."""
        self.tunnels_total = 0
        """Tunnels closed since start."""
        p = proxy.config.proxy
        self.keepalive_timeout_s = keepalive_timeout_s
        self.tunnel_idle_s = p.tunnel_idle_timeout_s
        self.header_timeout_s = p.client_header_timeout_s
        self.body_timeout_s = p.client_body_timeout_s
        self.max_body_bytes = p.max_body_bytes
        """0 = no limit."""
        self.tick_s = min(
            keepalive_timeout_s, self.header_timeout_s, self.body_timeout_s, self.tunnel_idle_s
        )
        """The longest a connection's timer sleeps: the shortest timeout, so none fires late."""
        self.max_line = max_line
        self.max_field = max_field
        self.max_headers = max_headers
        self.max_head = max_head
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.connections: set[ClientConnection] = set()
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None
        self._all_closed: asyncio.Future[None] | None = None

    async def start(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self), sock=sock, backlog=4096, ssl=tls
        )

    def forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting; close idle connections; let in-flight requests finish within
        ``grace_s``; then abort what is left."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        if self.connections:
            self._all_closed = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._all_closed), grace_s)
        for conn in list(self.connections):
            conn.abort()
        tasks = [c.task for c in list(self.connections) if c.task is not None]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._server = None
