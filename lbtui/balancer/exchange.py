"""One client exchange as the pipeline sees it, whichever listener accepted it.

The pipeline (``pipeline.py``) reads a request and answers it through :class:`ClientRequest`, so
that the same policy runs behind both listeners: aiohttp's low-level server
(:class:`AiohttpClient` adapts its request) and the Protocol-level fast listener
(``listener.py``). A pipeline run ends with a :data:`Result`:

- an :class:`Answer`: a whole response the listener has yet to send (the usual small answer
  from a backend), its headers in the listener's own form (text pairs for aiohttp, byte pairs
  for the fast listener, so that nothing is decoded and encoded again on the way through);
  or one the balancer writes itself (429, fallback, error bodies: ``answers.py``);
- or a streamed response the pipeline has already written through the client
  (``start_stream`` / ``write`` / ``finish_stream``).

Header rewriting (hop-by-hop headers dropped both ways; ``X-Forwarded-*`` and ``Via``) is
defined here twice, over text and over bytes; ``tests/unit/test_exchange.py`` holds the two to
the same output.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from http import HTTPStatus
from typing import Any, Protocol

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from lbtui.balancer.connections import HeadBlock
from lbtui.balancer.header_lines import RESPONSE_DROP_RAW, RawHeaders, connection_tokens
from lbtui.balancer.lean_upstream import ChunkIterator, LeanResponse
from lbtui.balancer.response_reader import HAS_CTYPE, HAS_DATE, HAS_SERVER
from lbtui.errors import ClientBodyError

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
VIA = "1.1 lbtui"

_FORWARD_SET = frozenset({"x-forwarded-proto", "x-forwarded-host"})


class BackendHead(Protocol):
    """What header rewriting reads of a backend's response."""

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...


class Answer:
    """A whole response, not yet sent: a backend's small answer, or one the balancer writes
    itself (429, 5xx, fallback; built in ``answers.py``). ``headers``: rendered lines for the
    fast listener's backend answers (nothing decoded and encoded again on the way through), else
    text pairs, which every listener renders itself. Never ``Content-Length``: the listener
    frames the body."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None,
        headers: RenderedHead | list[tuple[str, str]],
        body: bytes,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


class Streamed:
    """A response the fast listener has streamed already (the pipeline's result for it)."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status


Result = Answer | Streamed | web.StreamResponse


class ClientRequest(Protocol):
    """A client request, and the way back to its client."""

    method: str
    raw_path: str
    remote: str

    @property
    def host(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body_exists(self) -> bool: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def request_id(self) -> str | None:
        """The client's ``X-Request-Id``, if it sent one."""

    @property
    def content(self) -> Any:
        """The body as a stream with ``async readany()`` (and ``async for``)."""

    def cookie(self, name: str) -> str | None: ...

    async def read(self) -> bytes: ...

    @property
    def scheme(self) -> str:
        """``http`` or ``https``: how the client reached the listener (``X-Forwarded-Proto``)."""

    @property
    def listener(self) -> str:
        """The name of the listener the request came in on (``[[listeners]] name``)."""

    def forward_headers(self, proto: str) -> HeadBlock | list[tuple[str, str]]:
        """The request headers rewritten for the backend."""

    def response_headers(
        self,
        up: BackendHead,
        extra: list[tuple[str, str]] | None,
        drop: frozenset[str] | None = None,
    ) -> Any:
        """A backend response's headers rewritten for the client, without those named in
        ``drop`` (lower case), plus ``extra``."""

    def open_stream(
        self, status: int, reason: str | None, headers: Any, length: int | None
    ) -> Result:
        """The result standing for a streamed response (nothing is sent yet)."""

    async def start_stream(self) -> None:
        """Send the streamed response's head."""

    async def write(self, chunk: bytes) -> None: ...

    async def finish_stream(self) -> None: ...

    def cut(self) -> None:
        """Close the client connection at once (a response cut mid-body)."""


# -- HTTP at the edge (RFC 9112 / 9110, as nginx): shared by both listeners ----------------------

ALLOW = b"Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE\r\n"
"""The methods a 405 names: what the balancer forwards (any method but CONNECT, in fact)."""
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]"
"""What a Host value may hold (RFC 3986 reg-name, IP literal, port)."""
GOOD_HOSTS: set[bytes] = set()
"""Host values found valid (clients send the same few): a set lookup instead of a scan."""


def valid_host(value: bytes) -> bool:
    """A Host value nginx would take: not empty, only URI authority characters."""
    ok = bool(value) and not value.translate(None, _HOST_CHARS) and value[:1] != b"."
    if ok and len(value) <= 255:
        if len(GOOD_HOSTS) >= 4096:
            GOOD_HOSTS.clear()
        GOOD_HOSTS.add(value)
    return ok


def split_absolute(target: str) -> tuple[bytes, str]:
    """An absolute-form target's authority (the request's Host, RFC 9112 §3.2.2) and the
    origin-form target that goes on; ``ValueError`` saying why when it is not one."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError("invalid request target")
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if 0 <= i < end:
            end = i
    host = rest[:end].encode("latin-1")
    if "@" in rest[:end] or not valid_host(host):
        raise ValueError("invalid authority in the request target")
    path = rest[end:]
    return host, path if path[:1] == "/" else "/" + path


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: ``/a/./b/../c`` is ``/a/c``; nothing climbs above the root. Routes
    match on this; the backend still gets the raw target, byte for byte."""
    out: list[str] = []
    segments = path.split("/")
    for seg in segments[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    if segments[-1] in (".", ".."):
        out.append("")  # "/a/.." is the directory "/", not "/a"
    return "/" + "/".join(out)


# -- header rewriting over text (aiohttp) ---------------------------------------------------------


def _connection_tokens(values: list[str]) -> frozenset[str]:
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def request_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], client_ip: str, proto: str
) -> list[tuple[str, str]]:
    """The headers sent to the backend for a client request with ``headers``."""
    conn = headers.getall("Connection", None)
    named = _connection_tokens(conn) if conn else None
    out: list[tuple[str, str]] = []
    xff: list[str] = []
    via: list[str] = []
    for name, value in headers.items():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname.startswith("proxy-") or (named and lname in named):
            continue
        if lname == "x-forwarded-for":
            xff.append(value)
        elif lname == "via":
            via.append(value)
        elif lname not in _FORWARD_SET:
            out.append((name, value))
    xff.append(client_ip)
    via.append(VIA)
    out.append(("X-Forwarded-For", ", ".join(xff)))
    out.append(("X-Forwarded-Proto", proto))
    host = headers.get("Host")
    if host is not None:
        out.append(("X-Forwarded-Host", host))
    out.append(("Via", ", ".join(via)))
    return out


def response_headers(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> list[tuple[str, str]]:
    """The headers sent to the client for a backend response with ``headers``."""
    conn = headers.getall("Connection", None)
    named = _connection_tokens(conn) if conn else None
    out: list[tuple[str, str]] = []
    for name, value in headers.items():
        lname = name.lower()
        if (
            lname in HOP_BY_HOP
            or lname == "content-length"
            or lname.startswith("proxy-")
            or (named and lname in named)
        ):
            continue
        out.append((name, value))
    return out


def response_pairs(up: BackendHead, drop: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """``response_headers`` of a backend response, from its raw lines when it has them,
    without the names in ``drop`` (lower case)."""
    if type(up) is LeanResponse:
        pairs = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in response_headers_raw(up.raw_headers)
        ]
    else:
        pairs = response_headers(up.headers)
    if drop is None:
        return pairs
    return [(k, v) for k, v in pairs if k.lower() not in drop]


# -- header rewriting over bytes (the fast listener with the lean upstream) ---------------------

_HOP_RAW = frozenset(h.encode() for h in HOP_BY_HOP)
_FORWARD_RAW = frozenset({b"x-forwarded-proto", b"x-forwarded-host"})
_VIA_RAW = VIA.encode()


def _connection_tokens_raw(raw: RawHeaders) -> frozenset[bytes] | None:
    named: set[bytes] | None = None
    for k, v in raw:
        if len(k) == 10 and k.lower() == b"connection":
            for t in v.split(b","):
                t = t.strip()
                if t:
                    if named is None:
                        named = set()
                    named.add(t.lower())
    return frozenset(named) if named else None


def request_block(raw: RawHeaders, client_ip: bytes, proto: bytes) -> HeadBlock:
    """``request_headers`` over bytes: the header lines for the backend, rendered."""
    named = _connection_tokens_raw(raw)
    parts: list[bytes] = []
    xff: list[bytes] = []
    via: list[bytes] = []
    host: bytes | None = None
    has_host = has_length = False
    for k, v in raw:
        lk = k.lower()
        if lk in _HOP_RAW or lk.startswith(b"proxy-") or (named and lk in named):
            if lk == b"host" and host is None:
                host = v
            continue
        if lk == b"x-forwarded-for":
            xff.append(v)
            continue
        if lk == b"via":
            via.append(v)
            continue
        if lk == b"host":
            has_host = True
            if host is None:
                host = v
        elif lk == b"content-length":
            has_length = True
        elif lk in _FORWARD_RAW:
            continue
        parts += (k, b": ", v, b"\r\n")
    xff.append(client_ip)
    via.append(_VIA_RAW)
    parts += (b"X-Forwarded-For: ", b", ".join(xff), b"\r\nX-Forwarded-Proto: ", proto, b"\r\n")
    if host is not None:
        parts += (b"X-Forwarded-Host: ", host, b"\r\n")
    parts += (b"Via: ", b", ".join(via), b"\r\n")
    return HeadBlock(b"".join(parts), has_host, has_length)


class RenderedHead:
    """Response header lines for the client, rendered (``Name: value\r\n`` each), and which of
    the headers a listener adds when they are missing are there already."""

    __slots__ = ("block", "has_ctype", "has_date", "has_server")

    def __init__(self, block: bytes, has_ctype: bool, has_date: bool, has_server: bool) -> None:
        self.block = block
        self.has_ctype = has_ctype
        self.has_date = has_date
        self.has_server = has_server


def render_response_headers(
    up: BackendHead, extra: list[tuple[str, str]] | None, drop: frozenset[str] | None = None
) -> RenderedHead:
    """``response_headers`` over bytes, rendered, without the names in ``drop`` (lower case),
    with ``extra`` lines appended."""
    if drop is not None:
        raw: RawHeaders = [(k, v) for k, v in raw_of(up) if k.decode("latin-1").lower() not in drop]
    elif type(up) is LeanResponse and up.named is None:
        # The lean connection sorted the lines as they came in: the usual case is one join.
        flags = up.kept_flags
        if not extra:
            return RenderedHead(
                b"".join(up.kept),
                bool(flags & HAS_CTYPE),
                bool(flags & HAS_DATE),
                bool(flags & HAS_SERVER),
            )
        raw = response_headers_raw(up.raw_headers)
    else:
        raw = raw_of(up)
    if extra:
        raw += [(k.encode("utf-8"), v.encode("utf-8")) for k, v in extra]
    return render_raw(raw)


def raw_of(up: BackendHead) -> RawHeaders:
    """A backend response's headers for the client (hop-by-hop ones dropped), as bytes."""
    if type(up) is LeanResponse:
        return response_headers_raw(up.raw_headers)
    return response_headers_raw(
        [(k.encode("utf-8"), v.encode("utf-8")) for k, v in up.headers.items()]
    )


def render_pairs(pairs: list[tuple[str, str]]) -> RenderedHead:
    """Text header pairs (an answer the balancer wrote itself), rendered."""
    return render_raw([(k.encode("utf-8"), v.encode("utf-8")) for k, v in pairs])


def render_raw(raw: RawHeaders) -> RenderedHead:
    """Header lines rendered as they are, noting the ones a listener adds when missing."""
    parts: list[bytes] = []
    has_ctype = has_date = has_server = False
    for k, v in raw:
        lk = k.lower()
        if lk == b"content-type":
            has_ctype = True
        elif lk == b"date":
            has_date = True
        elif lk == b"server":
            has_server = True
        parts += (k, b": ", v, b"\r\n")
    return RenderedHead(b"".join(parts), has_ctype, has_date, has_server)


def response_headers_raw(raw: RawHeaders) -> RawHeaders:
    """``response_headers`` over bytes."""
    named: frozenset[bytes] | None = None
    out: RawHeaders = []
    for k, v in raw:
        lk = k.lower()
        if lk in RESPONSE_DROP_RAW or lk.startswith(b"proxy-"):
            if lk == b"connection":
                tokens = connection_tokens(v)
                named = tokens if named is None else named | tokens
            continue
        out.append((k, v))
    if named:
        out = [(k, v) for k, v in out if k.lower() not in named]
    return out


# -- the aiohttp listener's side ------------------------------------------------------------------


class CheckedBody:
    """An aiohttp request body as the pipeline reads it: a read error (a malformed chunk, a
    body cut short, the client gone) or a size over ``max_body_bytes`` is a
    ``ClientBodyError``, as on the fast listener, so that the request ends the same way."""

    __slots__ = ("_content", "_limit", "_read")

    def __init__(self, content: Any, limit: int) -> None:
        self._content = content
        self._limit = limit
        self._read = 0

    async def readany(self) -> bytes:
        try:
            chunk: bytes = await self._content.readany()
        except ClientBodyError:
            raise
        except ConnectionError as exc:
            raise ClientBodyError(0, "the client closed the connection") from exc
        except Exception as exc:  # aiohttp's payload errors (untyped for mypyc: isinstance)
            raise ClientBodyError(400, f"invalid request body: {exc}") from exc
        self._read += len(chunk)
        if self._limit and self._read > self._limit:
            raise ClientBodyError(413, f"request body over {self._limit} bytes")
        return chunk

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def __aiter__(self) -> ChunkIterator:
        return ChunkIterator(self.readany)


def edge_refusal(request: web.BaseRequest, max_body_bytes: int) -> web.Response | None:
    """What the fast listener refuses at the edge, for a request aiohttp's server parsed:
    CONNECT (405), HTTP/2+ in an HTTP/1 head (505), a missing, repeated or invalid Host
    on HTTP/1.1 (400), a declared body over ``max_body_bytes`` (413). None: go on."""
    if request.version.major != 1 or request.version.minor > 1:
        # aiohttp would answer in the request's version ("HTTP/0.9 505"): close instead.
        if request.transport is not None:
            request.transport.close()
        return refused_response(505)
    if request.method == "CONNECT":
        return refused_response(405)
    target = request.raw_path
    if target[:1] != "/" and target != "*":
        try:
            split_absolute(target)
        except ValueError:
            return refused_response(400)
    hosts = request.headers.getall("Host", ())
    if len(hosts) > 1 or (not hosts and request.version.minor >= 1):
        return refused_response(400)
    if hosts and not valid_host(hosts[0].encode("utf-8", "surrogateescape")):
        return refused_response(400)
    length = request.content_length
    if max_body_bytes and length is not None and length > max_body_bytes:
        return refused_response(413)
    return None


def refusal(status: int) -> Answer:
    """The balancer's own short answer to a request it refuses at the edge (``status: phrase``
    as text, ``Allow`` with a 405); the connection closes after it. Both listeners send this
    one answer: aiohttp's through :func:`refused_response`, the fast one rendered as is."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Bad Request"
    headers = [("Allow", ALLOW[7:-2].decode())] if status == 405 else []
    headers.append(("Content-Type", "text/plain; charset=utf-8"))
    return Answer(status, None, headers, f"{status}: {phrase}".encode())


def refused_response(status: int) -> web.Response:
    """:func:`refusal` for aiohttp, closing the connection after it."""
    resp = to_web(refusal(status))
    assert isinstance(resp, web.Response)
    resp.force_close()
    return resp


async def handle_aiohttp(
    serve: Callable[[AiohttpClient], None],
    request: web.BaseRequest,
    max_body_bytes: int,
    listener: str = "default",
) -> web.StreamResponse:
    """The aiohttp listener's handler around the pipeline's driver (``serve``): the edge
    checks first, and a request whose body broke off answered 400/408/413 (or cut, when its
    answer had begun) instead of a traceback."""
    refused = edge_refusal(request, max_body_bytes)
    if refused is not None:
        return refused
    client = AiohttpClient(request, max_body_bytes, listener)
    serve(client)
    try:
        return to_web(await client.outcome())
    except ClientBodyError as exc:
        stream = client.stream
        if stream is not None and stream.prepared:
            client.cut()
            return stream
        return refused_response(exc.status or 400)


class AiohttpClient:
    """:class:`ClientRequest` over an aiohttp ``BaseRequest``; the handler awaits what the
    pipeline hands to ``finish`` or ``spawn`` (it never answers from a backend's callback)."""

    __slots__ = (
        "_authority",
        "_body",
        "_listener",
        "_stream",
        "method",
        "raw_path",
        "remote",
        "request",
        "rest",
        "result",
    )

    def __init__(
        self, request: web.BaseRequest, max_body_bytes: int = 0, listener: str = "default"
    ) -> None:
        self._listener = listener
        self.request = request
        self.method = request.method
        self.raw_path = request.raw_path
        self.remote = request.remote or ""
        self._stream: web.StreamResponse | None = None
        self._body = CheckedBody(request.content, max_body_bytes)
        self._authority: str | None = None
        """An absolute-form target's authority: the request's Host (RFC 9112 §3.2.2)."""
        if self.raw_path[:1] != "/" and self.raw_path != "*":
            try:
                host, self.raw_path = split_absolute(self.raw_path)
            except ValueError:
                pass  # aiohttp took it: it goes on as it came
            else:
                self._authority = host.decode("latin-1")
        self.result: Result | None = None
        self.rest: Coroutine[Any, Any, Result] | None = None

    @property
    def nowait(self) -> bool:
        return False

    def finish(self, result: Result) -> None:
        self.result = result

    def spawn(self, rest: Coroutine[Any, Any, Result]) -> None:
        self.rest = rest

    async def outcome(self) -> Result:
        """The pipeline's result, once ``Pipeline.serve`` has returned."""
        if self.rest is not None:
            return await self.rest
        assert self.result is not None
        return self.result

    @property
    def host(self) -> str:
        return self._authority or self.request.host

    @property
    def path(self) -> str:
        path = self.request.path
        return remove_dot_segments(path) if "/." in path else path

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self.request.headers

    @property
    def body_exists(self) -> bool:
        return self.request.body_exists

    @property
    def content_length(self) -> int | None:
        return self.request.content_length

    @property
    def content(self) -> Any:
        return self._body

    def cookie(self, name: str) -> str | None:
        return self.request.cookies.get(name)

    async def read(self) -> bytes:
        return await self._body.read()

    @property
    def scheme(self) -> str:
        return "https" if self.request.secure else "http"

    @property
    def listener(self) -> str:
        return self._listener

    @property
    def request_id(self) -> str | None:
        return self.request.headers.get("X-Request-Id")

    def forward_headers(self, proto: str) -> list[tuple[str, str]]:
        if self._authority is None:
            return request_headers(self.request.headers, self.remote, proto)
        headers = CIMultiDict(self.request.headers)
        headers["Host"] = self._authority
        return request_headers(headers, self.remote, proto)

    def response_headers(
        self,
        up: BackendHead,
        extra: list[tuple[str, str]] | None,
        drop: frozenset[str] | None = None,
    ) -> list[tuple[str, str]]:
        headers = response_pairs(up, drop)
        if extra:
            headers += extra
        return headers

    def open_stream(
        self, status: int, reason: str | None, headers: Any, length: int | None
    ) -> web.StreamResponse:
        stream = self._stream = web.StreamResponse(status=status, reason=reason, headers=headers)
        if length is not None:
            stream.content_length = length
        return stream

    async def start_stream(self) -> None:
        assert self._stream is not None
        await self._stream.prepare(self.request)

    async def write(self, chunk: bytes) -> None:
        assert self._stream is not None
        await self._stream.write(chunk)

    async def finish_stream(self) -> None:
        assert self._stream is not None
        await self._stream.write_eof()

    @property
    def stream(self) -> web.StreamResponse | None:
        """The streamed response, once ``open_stream`` made it."""
        return self._stream

    def cut(self) -> None:
        if self.request.transport is not None:
            self.request.transport.close()


def to_web(result: Result) -> web.StreamResponse:
    """The aiohttp response for a pipeline result."""
    if type(result) is Answer:
        headers = result.headers
        assert type(headers) is list  # rendered lines are the fast listener's alone
        return web.Response(
            status=result.status, reason=result.reason, headers=headers, body=result.body
        )
    assert isinstance(result, web.StreamResponse)
    return result
