"""The writing side of a client connection on the fast listener: its answers, rendered to bytes.

:class:`ClientWriter` is the base of ``listener.ClientConnection``: it holds the transport and
the connection's life (the constants below), and it writes what the client gets, as aiohttp's
low-level server would write it (``Date``, ``Server``, a ``Content-Type`` for a body without
one, ``Connection``, ``Content-Length``), a whole answer in one ``write`` (head and body
together: DESIGN.md measured separate writes at 10–25 % of a request's CPU), with write flow
control for streamed bodies. What to write and when (the state and its transitions, the
timeouts) is ``ClientConnection``'s; how a request is read is ``request_reader.py``'s.

A base class rather than a helper object: compiled with mypyc, a method of a base class is
called through the class's own table like any other, so the split costs the request nothing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, cast

from lbtui.balancer.exchange import refusal, render_pairs
from lbtui.balancer.fast_request import (
    DATE,
    EMPTY_BODY_STATUS,
    SERVER,
    SERVER_LINE_END,
    STATUS_11,
    FastRequest,
    framing,
    status_line,
)

if TYPE_CHECKING:
    from lbtui.balancer.listener import FastListener

# What a client connection is doing: exactly one of these at a time (``ClientWriter.life``),
# changed only by ``ClientConnection``'s transition methods (``serve``, ``done``, ``next``,
# ``last``, ``close``), so that what may happen next is read off one field instead of seven
# flags:
#
#     IDLE ──head──► SERVING ──answer out──► IDLE            (keep-alive)
#                       │                 ├─► WAIT_WRITE     (client not reading: next waits)
#                       │                 └─► WAIT_BODY      (its body still coming: discarded)
#                       └─refused/timed out─► LAST ──answer out──► CLOSED
#     any ──close / connection lost──► CLOSED
#
# What is being read (a head, a body, nothing) is the reader's side, kept apart
# (``request_reader.RequestReader``): a pipelined request's head may be read while another is
# served. Plain int constants, not an Enum: they are compared on every request, and compile to
# C ints.
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
TUNNEL: Final = 6
"""Upgraded (``tunnel.py``): the bytes read go to the backend as they are; nothing more is
parsed. Entered from ``SERVING`` once the backend answered the upgrade request."""


class ClientWriter(asyncio.Protocol):
    """A client connection's transport, its life, and the answers written to it."""

    __slots__ = ("drain", "life", "listener", "loop", "transport")

    def __init__(self, listener: FastListener) -> None:
        self.listener: FastListener = listener
        self.loop: asyncio.AbstractEventLoop = listener.loop
        self.transport: asyncio.Transport | None = None
        self.life: int = IDLE
        """One of ``IDLE`` … ``CLOSED`` (see the diagram above ``IDLE``)."""
        self.drain: asyncio.Future[None] | None = None
        """Set while the transport's buffer is over its high-water mark: writers wait on it."""

    def pause_writing(self) -> None:
        if self.drain is None or self.drain.done():
            self.drain = self.loop.create_future()

    async def send(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.life == CLOSED:
            raise ConnectionResetError("the client connection is closed")
        t.write(data)
        d = self.drain
        if d is not None and not d.done():
            await d

    async def send_parts(self, parts: tuple[bytes, ...]) -> None:
        t = self.transport
        if t is None or self.life == CLOSED:
            raise ConnectionResetError("the client connection is closed")
        t.writelines(parts)
        d = self.drain
        if d is not None and not d.done():
            await d

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

    def write_refusal(self, status: int) -> None:
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
