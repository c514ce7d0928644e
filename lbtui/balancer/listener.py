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
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final, cast

import httptools

from lbtui.balancer.connections import DROP, sort_line
from lbtui.balancer.exchange import (
    GOOD_HOSTS,
    Answer,
    Result,
    refusal,
    render_pairs,
)
from lbtui.balancer.fast_request import (
    DATE,
    EMPTY_BODY_STATUS,
    MAX_QUEUED,
    METHODS,
    REQUEST_ACTIONS,
    SERVER,
    SERVER_LINE_END,
    STATUS_11,
    BadRequest,
    BodyStream,
    FastRequest,
    framing,
    http_version,
    refused_method,
    status_line,
)
from lbtui.errors import ClientBodyError

if TYPE_CHECKING:
    from lbtui.balancer.proxy import Proxy

log = logging.getLogger("lbtui.listener")

# What a client connection is doing: exactly one of these at a time (``ClientConnection.life``),
# changed only by its transition methods (``_serve``, ``_done``, ``_next``, ``_last``, ``close``),
# so that what may happen next is read off one field instead of seven flags:
#
#     IDLE ──head──► SERVING ──answer out──► IDLE            (keep-alive)
#                       │                 ├─► WAIT_WRITE     (client not reading: next waits)
#                       │                 └─► WAIT_BODY      (its body still coming: discarded)
#                       └─refused/timed out─► LAST ──answer out──► CLOSED
#     any ──close / connection lost──► CLOSED
#
# What is being read (a head, a body, nothing) is the parser's side, kept apart: a pipelined
# request's head may be read while another is served. Plain int constants, not an Enum: they
# are compared on every request, and compile to C ints.
IDLE: Final = 0
"""Nothing in the pipeline; the keep-alive timeout runs."""
SERVING: Final = 1
"""``active`` is in the pipeline."""
LAST: Final = 2
"""``active`` is in the pipeline and the connection closes after its answer (a refused
pipelined request, a timed-out or malformed body): reading has stopped."""
WAIT_WRITE: Final = 3
"""The last answer is out but the client is not reading: the next request waits for the write
buffer to drain."""
WAIT_BODY: Final = 4
"""The last answer went out before its request body was all in: the rest is discarded, then
the next request is served."""
CLOSED: Final = 5


class ClientConnection(asyncio.Protocol):
    """One client connection: parse, queue, serve in order, answer.

    Client timeouts (header, body, keep-alive) share one timer a connection, which looks at
    the connection's state when it fires and sets itself again for the earliest deadline, at
    most ``FastListener.tick_s`` ahead: no timer is set or cancelled per request or per read,
    yet none fires late (every timeout is at least ``tick_s``)."""

    __slots__ = (
        "_body_t",
        "_drain",
        "_head_bytes",
        "_head_t0",
        "_idle_since",
        "_in_head",
        "_parsing",
        "_paused",
        "_queue",
        "_timer",
        "active",
        "life",
        "listener",
        "local_host",
        "loop",
        "parser",
        "remote",
        "remote_raw",
        "task",
        "transport",
    )
    remote: str
    """The client's address, as text (declared here: ``FastRequest`` reads it first)."""

    def __init__(self, listener: FastListener) -> None:
        self.listener: FastListener = listener
        self.loop: asyncio.AbstractEventLoop = listener.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # declared: FastRequest reads them, and mypyc's build analyses it first ("Cannot
        # determine type" otherwise)
        self.remote: str = ""
        self.remote_raw: bytes = b""
        self.local_host: str = ""
        self.life: int = IDLE
        """One of ``IDLE`` … ``CLOSED`` (see the diagram above ``IDLE``)."""
        self._head_bytes = 0
        self._in_head = False
        """llhttp is inside a request head (since ``_head_t0``)."""
        self._head_t0 = 0.0
        self._body_t = 0.0
        """When request body bytes last arrived (or reading last resumed)."""
        self._parsing: FastRequest | None = None
        self._queue: collections.deque[FastRequest] = collections.deque()
        self.active: FastRequest | None = None
        self.task: asyncio.Task[None] | None = None
        self._paused: set[str] = set()
        self._drain: asyncio.Future[None] | None = None
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

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
        for req in (self._parsing, self.active, *self._queue):
            if req is not None and req.body is not None:
                req.body.fail(gone)
        self._queue.clear()
        d = self._drain
        if d is not None and not d.done():
            d.set_exception(ConnectionResetError("the client closed the connection"))
            d.exception()

    def data_received(self, data: bytes) -> None:
        if self.life == CLOSED:
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except Exception as exc:
            # sorted by isinstance: compiled, several except clauses naming httptools' (untyped)
            # exceptions beside our own matched the wrong one
            self._parse_failed(exc)
        else:
            if self._in_head and self._head_bytes > self.listener.max_head:
                self._refuse(431, "request head too large")

    def _parse_failed(self, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserUpgrade):
            # Upgrade is not tunnelled: the request is served as a plain one (its Upgrade
            # header dropped as hop-by-hop) and the connection then closes.
            req = self._parsing or (self._queue[-1] if self._queue else self.active)
            if req is not None:
                req.keep_alive = False
                req.upgrade = True
            self.pause("upgrade")
        elif isinstance(exc, BadRequest):
            self._refuse(exc.status, str(exc))
        elif isinstance(exc, httptools.HttpParserCallbackError):
            cause = exc.__context__
            if isinstance(cause, BadRequest):
                self._refuse(cause.status, str(cause))
            else:
                self._refuse(400, "Bad Request")
        elif isinstance(exc, httptools.HttpParserError):
            self._refuse(400, str(exc) or "Bad Request")
        else:
            raise exc

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)
        if self.life == WAIT_WRITE:
            self._next()

    # -- llhttp callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_t0 = self.loop.time()
        self._parsing = FastRequest(self)

    def on_url(self, url: bytes) -> None:
        req = self._parsing
        assert req is not None
        req.url.append(url)
        if sum(map(len, req.url)) > self.listener.max_line:
            raise BadRequest(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._parsing
        assert req is not None
        req.raw.append((name, value))
        act = sort_line(REQUEST_ACTIONS, req.fwd, name, value)
        if act > DROP:
            req.special(act, name, value)
        if len(name) + len(value) > self.listener.max_field:
            raise BadRequest(431, "header field too large")
        if len(req.raw) > self.listener.max_headers:
            raise BadRequest(431, "too many headers")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        req = self._parsing
        assert req is not None
        parser = self.parser
        method_b = parser.get_method()
        method = METHODS.get(method_b)
        if method is None:
            method = refused_method(method_b)
        req.method = method
        url = req.url
        req.raw_path = (url[0] if len(url) == 1 else b"".join(url)).decode("latin-1")
        version = parser.get_http_version()
        req.version = b"1.1" if version == "1.1" else http_version(version)
        req.keep_alive = parser.should_keep_alive()
        host = req.host_raw
        if host is None or req.host_dup or host not in GOOD_HOSTS:
            req.check_host()
        if req.raw_path[:1] != "/":
            req.other_form()
        cl = req.cl
        if cl is not None:
            try:
                length = req.content_length = int(cl)
            except ValueError:
                raise BadRequest(400, "invalid Content-Length") from None
            if length > 0:
                limit = self.listener.max_body_bytes
                if limit and length > limit:
                    raise BadRequest(413, f"request body over {limit} bytes")
                req.body = BodyStream(self)
        if req.chunked and req.body is None:
            req.body = BodyStream(self)
        if req.body is not None:
            self._body_t = self.loop.time()
        if self.life == IDLE:
            self._serve(req)
        else:
            self._queue.append(req)
            if len(self._queue) >= MAX_QUEUED:
                self.pause("queue")

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        if req is not None:
            stream = req.body
            if stream is not None:
                limit = self.listener.max_body_bytes
                if limit and stream.received + len(body) > limit:
                    raise BadRequest(413, f"request body over {limit} bytes")
                self._body_t = self.loop.time()
                stream.feed(body)

    def on_message_complete(self) -> None:
        req = self._parsing
        self._parsing = None
        if req is None:
            return
        if req.body is not None:
            req.body.feed_eof()
        if self.life == WAIT_BODY:
            # Its answer went out before its body was all in (discarded): now go on.
            self._next()

    # -- serving: the transitions of ``life`` ------------------------------------------------------

    def _serve(self, req: FastRequest) -> None:
        self.life = SERVING
        self.active = req
        self.listener.proxy.pipeline.serve(req)

    async def run(self, req: FastRequest, rest: Coroutine[Any, Any, Result]) -> None:
        """The rest of a request the pipeline could not finish without waiting."""
        try:
            result = await rest
        except ClientBodyError as exc:
            # Its body broke off (malformed, too slow, too big, gone): the pipeline has let go
            # of the slot and the backend connection; the client gets why, if it can.
            self.task = None
            if req.status == 0 and exc.status:
                self._write_refusal(exc.status)
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
        self._send_result(req, result)
        self._done(req)

    def _send_result(self, req: FastRequest, result: Result) -> None:
        if type(result) is Answer:
            headers = result.headers
            if type(headers) is list:  # an answer the balancer wrote itself
                headers = render_pairs(headers)
            self.write_answer(req, result.status, result.reason, headers, result.body)

    def _done(self, req: FastRequest) -> None:
        self.active = None
        if self.life != SERVING or not req.keep_alive or self.transport is None:
            self.close()  # LAST, or closed meanwhile, or the request asked for it
            return
        body = req.body
        if body is not None and not body.eof:
            body.discard()  # the answer is out; the rest of the body goes nowhere
            if req is self._parsing:
                self.life = WAIT_BODY
                return  # on_message_complete goes on
        self._next()

    def _next(self) -> None:
        d = self._drain
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

    # -- client timeouts: one timer a connection -------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        life = self.life
        if life == CLOSED:
            return
        listener = self.listener
        now = self.loop.time()
        due = now + listener.tick_s
        if self._paused:
            pass  # reading is stopped on our side: nothing is the client's to be late with
        elif self._in_head:
            deadline = self._head_t0 + listener.header_timeout_s
            if now >= deadline:
                self._head_timed_out()
                return
            due = min(due, deadline)
        elif self._parsing is not None:
            body = self._parsing.body
            if body is not None and not body.eof:
                deadline = self._body_t + listener.body_timeout_s
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
            self._write_refusal(408)
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
        return self.life == IDLE and not self._queue and self._parsing is None

    # -- flow control -------------------------------------------------------------------------

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
                self._head_t0 = self._body_t = self.loop.time()
                with contextlib.suppress(RuntimeError):
                    self.transport.resume_reading()

    async def send(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.life == CLOSED:
            raise ConnectionResetError("the client connection is closed")
        t.write(data)
        d = self._drain
        if d is not None and not d.done():
            await d

    async def send_parts(self, parts: tuple[bytes, ...]) -> None:
        t = self.transport
        if t is None or self.life == CLOSED:
            raise ConnectionResetError("the client connection is closed")
        t.writelines(parts)
        d = self._drain
        if d is not None and not d.done():
            await d

    # -- writing answers ------------------------------------------------------------------------

    def tail(self, req: FastRequest, has_date: bool, has_server: bool) -> list[bytes]:
        """The header lines aiohttp adds to every response, and the blank line."""
        out: list[bytes] = []
        if not has_date:
            out.append(DATE.line())
        if not has_server:
            out.append(b"Server: " + SERVER + b"\r\n")
        if req.keep_alive and not self.listener.stopping:
            if req.version == b"1.0":
                out.append(b"Connection: keep-alive\r\n")
        else:
            req.keep_alive = False
            if req.version == b"1.1":
                out.append(b"Connection: close\r\n")
        out.append(b"\r\n")
        return out

    def write_answer(
        self, req: FastRequest, status: int, reason: str | None, headers: Any, body: bytes
    ) -> None:
        """A whole answer (headers rendered by ``render_response_headers``) in one write."""
        req.status = status
        t = self.transport
        if t is None or self.life == CLOSED:
            return
        if (
            reason is None
            and req.version == b"1.1"
            and req.keep_alive
            and req.method != "HEAD"
            and body
            and headers.has_ctype
            and headers.has_date
            and status >= 200
            and status != 204
            and status != 304
            and not self.listener.stopping
        ):
            # The usual answer, in one piece: no header to add but the length (and Server).
            line = STATUS_11.get(status)
            if line is not None:
                t.write(
                    b"".join(
                        (
                            line,
                            headers.block,
                            b"Content-Length: %d\r\n" % len(body),
                            b"\r\n" if headers.has_server else SERVER_LINE_END,
                            body,
                        )
                    )
                )
                return
        parts = [status_line(req.version, status, reason), headers.block]
        parts += framing(req.method, status, len(body), headers.has_ctype)
        parts += self.tail(req, headers.has_date, headers.has_server)
        if status not in EMPTY_BODY_STATUS and req.method != "HEAD":
            parts.append(body)
        t.write(b"".join(parts))

    def _write_refusal(self, status: int) -> None:
        """The listener's own short answer (``status: phrase``), after which it closes."""
        t = self.transport
        if t is None or self.life == CLOSED:
            return
        answer = refusal(status)  # the same answer aiohttp's listener sends
        body = answer.body
        t.write(
            b"".join(
                (
                    STATUS_11.get(status, b"HTTP/1.1 400 Bad Request\r\n"),
                    render_pairs(cast("list[tuple[str, str]]", answer.headers)).block,
                    b"Content-Length: %d\r\n" % len(body),
                    DATE.line(),
                    b"Server: " + SERVER + b"\r\n",
                    b"Connection: close\r\n\r\n",
                    body,
                )
            )
        )

    def _refuse(self, status: int, detail: str) -> None:
        """A request refused by the listener: the status, then the connection closes.

        While a request is served, what failed is either its own body (then the body fails,
        and the pipeline ends the request at once: the status if nothing was answered, its
        slot and backend connection freed) or a pipelined request behind it (answered with
        nothing; the connection closes after the answer in flight)."""
        log.debug("refused a request from %s: %s", self.remote, detail)
        life = self.life
        if life in (IDLE, WAIT_WRITE):
            self._write_refusal(status)
            self.close()
        elif life in (SERVING, LAST):
            req = self._parsing
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
    ) -> None:
        self.proxy = proxy
        p = proxy.config.proxy
        self.keepalive_timeout_s = keepalive_timeout_s
        self.header_timeout_s = p.client_header_timeout_s
        self.body_timeout_s = p.client_body_timeout_s
        self.max_body_bytes = p.max_body_bytes
        """0 = no limit."""
        self.tick_s = min(keepalive_timeout_s, self.header_timeout_s, self.body_timeout_s)
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

    async def start(self, sock: socket.socket) -> None:
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self), sock=sock, backlog=4096
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
