"""How a client connection on the fast listener reads its requests: llhttp's callbacks.

A :class:`RequestReader` is the object llhttp (httptools) calls back as it parses a client's
bytes: each header line is sorted once as it arrives (``FastRequest``), the listener's limits
are applied as the head grows (request line 414; a field, too many fields or the whole head
431; a body 413; anything llhttp rejects 400), and a complete head is handed to its connection
(``ClientConnection.arrived``), which decides whether it is served now or waits its turn. What
is being read (a head since when, a body last fed when) is kept here, apart from what the
connection is doing (its ``life``): a pipelined request's head may be read while another is
served. The connection's timer reads these to enforce the client timeouts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools

from lbtui.balancer.exchange import GOOD_HOSTS
from lbtui.balancer.fast_request import (
    METHODS,
    REQUEST_ACTIONS,
    BadRequest,
    BodyStream,
    FastRequest,
    http_version,
    refused_method,
)
from lbtui.balancer.header_lines import DROP, sort_line

if TYPE_CHECKING:
    from lbtui.balancer.listener import ClientConnection


class RequestReader:
    """llhttp's callbacks for one client connection, and what is being read."""

    __slots__ = (
        "body_t",
        "conn",
        "head_bytes",
        "head_t0",
        "in_head",
        "listener",
        "parser",
        "parsing",
    )

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.listener = conn.listener
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: FastRequest | None = None
        """The request whose head or body is being read (``None`` between requests)."""
        self.in_head = False
        """llhttp is inside a request head (since ``head_t0``)."""
        self.head_bytes = 0
        self.head_t0 = 0.0
        """When the head being read began: the end of the read it began in, read from the
        clock only when the head did not end there too (-1 until then): the usual head comes
        whole in one read and costs no clock reading."""
        self.body_t = 0.0
        """When request body bytes last arrived (or reading last resumed)."""

    def feed(self, data: bytes) -> None:
        """Bytes from the client, parsed; what is wrong with them refused by the connection."""
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except Exception as exc:
            # sorted by isinstance: compiled, several except clauses naming httptools' (untyped)
            # exceptions beside our own matched the wrong one
            self._parse_failed(exc, data)
        else:
            if self.in_head and self.head_bytes > self.listener.max_head:
                self.conn.refuse(431, "request head too large")
        if self.in_head and self.head_t0 < 0.0:
            self.head_t0 = self.conn.loop.time()

    def _parse_failed(self, exc: Exception, data: bytes) -> None:
        conn = self.conn
        if isinstance(exc, httptools.HttpParserUpgrade):
            # An upgrade request (Upgrade + Connection: upgrade): served as a tunnel
            # (``tunnel.py``); nothing after it is HTTP: what comes behind it is held for the
            # tunnel (``ClientConnection.hold``).
            req = self.parsing or conn.latest()
            if req is not None:
                req.keep_alive = False
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            conn.hold(data[offset:])
        elif isinstance(exc, BadRequest):
            conn.refuse(exc.status, str(exc))
        elif isinstance(exc, httptools.HttpParserCallbackError):
            cause = exc.__context__
            if isinstance(cause, BadRequest):
                conn.refuse(cause.status, str(cause))
            else:
                conn.refuse(400, "Bad Request")
        elif isinstance(exc, httptools.HttpParserError):
            conn.refuse(400, str(exc) or "Bad Request")
        else:
            raise exc

    # -- llhttp callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_t0 = -1.0  # set at the end of this read if the head is still being read
        self.parsing = FastRequest(self.conn)

    def on_url(self, url: bytes) -> None:
        req = self.parsing
        assert req is not None
        req.url.append(url)
        if sum(map(len, req.url)) > self.listener.max_line:
            raise BadRequest(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.parsing
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
        self.in_head = False
        self.head_bytes = 0
        req = self.parsing
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
        if parser.should_upgrade():
            req.upgrade = True  # a tunnel if it also says Connection: upgrade (tunnel.py)
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
                req.body = BodyStream(self.conn)
        if req.chunked and req.body is None:
            req.body = BodyStream(self.conn)
        if req.body is not None:
            self.body_t = self.conn.loop.time()
        self.conn.arrived(req)

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req is not None:
            stream = req.body
            if stream is not None:
                limit = self.listener.max_body_bytes
                if limit and stream.received + len(body) > limit:
                    raise BadRequest(413, f"request body over {limit} bytes")
                self.body_t = self.conn.loop.time()
                stream.feed(body)

    def on_message_complete(self) -> None:
        req = self.parsing
        self.parsing = None
        if req is None:
            return
        if req.body is not None:
            req.body.feed_eof()
        self.conn.body_complete()
