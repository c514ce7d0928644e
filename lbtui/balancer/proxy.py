"""The request pipeline: route → pick → forward → respond, every outcome recorded once.

Semantics copied from nginx and Envoy:

- hop-by-hop headers (``Connection`` and the headers it names, ``Keep-Alive``, ``TE``,
  ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``) are dropped both ways;
  ``X-Forwarded-For`` is appended to, ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are set,
  ``Via`` gets ``1.1 lbtui`` appended; ``Host``, the raw path and query, repeated headers and the
  status pass through untouched;
- bodies stream both ways with back-pressure (constant memory); a small body with a known length
  is buffered so that it can be sent again;
- a connect failure moves the request to another backend (nothing was sent: always safe); an
  idempotent request whose connection broke before any response byte reached the client is tried
  once more elsewhere (nginx ``proxy_next_upstream error``); a POST or PATCH that reached a backend
  is never sent twice;
- failures answer 502 (connect, broken), 504 (timeout) or 503 (no backend) with a short JSON body
  naming the backend and the reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import StreamReader, web
from multidict import CIMultiDict, CIMultiDictProxy

from lbtui.balancer.pool import Backend, Pool
from lbtui.balancer.upstream import Upstream, UpstreamResponse
from lbtui.config import Config
from lbtui.core.record import BalancerRecord, FailureKind
from lbtui.errors import UpstreamBroken, UpstreamConnectError, UpstreamError, UpstreamTimeout

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
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BUFFER_BODY_BYTES = 64 * 1024
"""Request bodies up to this size (with a Content-Length) are buffered, so they can be resent."""
SMALL_RESPONSE_BYTES = 256 * 1024
"""Responses up to this size (with a Content-Length) are read whole and sent in one write."""
VIA = "1.1 lbtui"


class Flag:
    """Response flags (Envoy's access-log flags): why the balancer did not simply pass through."""

    NO_HEALTHY_BACKEND = "no_healthy_backend"
    UPSTREAM_CONNECT_FAILURE = "upstream_connect_failure"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RESET = "upstream_reset"
    DOWNSTREAM_DISCONNECT = "downstream_disconnect"
    RETRIED = "retried"


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled routing rule."""

    path_prefix: str
    host: str | None
    pool: Pool

    def matches(self, host: str, path: str) -> bool:
        return path.startswith(self.path_prefix) and (self.host is None or self.host == host)


def _connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def _is_hop(name: str, named: frozenset[str]) -> bool:
    lname = name.lower()
    return lname in HOP_BY_HOP or lname.startswith("proxy-") or lname in named


def request_headers(headers: CIMultiDictProxy[str], client_ip: str, proto: str) -> CIMultiDict[str]:
    """The headers sent to the backend for a client request with ``headers``."""
    named = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    xff: list[str] = []
    via: list[str] = []
    for name, value in headers.items():
        if _is_hop(name, named):
            continue
        lname = name.lower()
        if lname == "x-forwarded-for":
            xff.append(value)
        elif lname == "via":
            via.append(value)
        elif lname not in ("x-forwarded-proto", "x-forwarded-host"):
            out.add(name, value)
    xff.append(client_ip)
    via.append(VIA)
    out["X-Forwarded-For"] = ", ".join(xff)
    out["X-Forwarded-Proto"] = proto
    host = headers.get("Host")
    if host is not None:
        out["X-Forwarded-Host"] = host
    out["Via"] = ", ".join(via)
    return out


def response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The headers sent to the client for a backend response with ``headers``."""
    named = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if _is_hop(name, named) or name.lower() == "content-length":
            continue
        out.add(name, value)
    return out


def error_response(
    status: int, error: str, flag: str, backend: str | None, detail: str, flags_header: bool
) -> web.Response:
    body = json.dumps({"error": error, "backend": backend, "detail": detail}).encode() + b"\n"
    resp = web.Response(status=status, body=body, content_type="application/json")
    if flags_header:
        resp.headers["X-Lbtui-Flags"] = flag
    return resp


class Proxy:
    """The data plane: backends, routes, and the aiohttp handler that forwards each request."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.backends: dict[str, Backend] = {
            b.name: Backend.from_config(b) for b in config.backends
        }
        algorithm = config.balancer.algorithm
        self.default_pool = Pool(list(self.backends.values()), algorithm)
        self.routes: list[Route] = [
            Route(
                r.path_prefix,
                r.host.lower() if r.host else None,
                Pool([self.backends[n] for n in r.backends], algorithm),
            )
            for r in config.routes
        ]
        self.record = BalancerRecord()
        p = config.proxy
        self.upstream = Upstream(
            connect_timeout_s=p.connect_timeout_ms / 1e3,
            read_timeout_s=p.read_timeout_ms / 1e3,
        )
        self.max_attempts = p.max_attempts
        self.flags_header = p.response_flags_header
        hash_on = config.balancer.hash_on
        self._hash_kind, _, self._hash_name = hash_on.partition(":")
        self._key_from_ip = algorithm == "ip_hash" or hash_on == "client_ip"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.upstream.start()

    async def close(self) -> None:
        await self.upstream.close()

    # -- pipeline ----------------------------------------------------------------------------

    @property
    def pools(self) -> list[Pool]:
        return [self.default_pool, *(r.pool for r in self.routes)]

    def set_algorithm(self, algorithm: str) -> None:
        for pool in self.pools:
            pool.set_algorithm(algorithm)
        self._key_from_ip = algorithm == "ip_hash" or self._hash_kind == "client_ip"

    def route(self, host: str, path: str) -> Pool:
        if self.routes:
            h = host.rsplit(":", 1)[0].lower() if host else ""
            for r in self.routes:
                if r.matches(h, path):
                    return r.pool
        return self.default_pool

    def _key(self, request: web.BaseRequest) -> str | None:
        if self._key_from_ip:
            return request.remote
        if self._hash_kind == "header":
            return request.headers.get(self._hash_name)
        return request.cookies.get(self._hash_name)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        rec = self.record
        rec.started()
        status, flag = 0, None
        try:
            resp, flag = await self._forward(request)
            status = resp.status
            return resp
        finally:
            rec.answered(status, flag, self.clock())

    async def _forward(self, request: web.BaseRequest) -> tuple[web.StreamResponse, str | None]:
        clock = self.clock
        method = request.method
        raw_path = request.raw_path
        pool = self.route(request.host, request.path)
        key = self._key(request) if pool.balancer.name in ("ip_hash", "consistent_hash") else None
        headers = request_headers(request.headers, request.remote or "", "http")

        body: StreamReader | bytes | None = None
        replayable = True
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= BUFFER_BODY_BYTES:
                body = await request.read()
            else:
                body = request.content
                replayable = False
        idempotent = method in IDEMPOTENT

        tried: list[Backend] = []
        broken_retries = 0
        last: UpstreamError | None = None
        flag: str | None = None
        for _ in range(self.max_attempts):
            backend = pool.pick(clock(), key, (lambda b: b not in tried) if tried else None)
            if backend is None:
                break
            tried.append(backend)
            brec = backend.record
            t0 = clock()
            brec.started(t0)
            try:
                up = await self.upstream.send(backend, method, raw_path, headers, body)
            except UpstreamConnectError as exc:
                now = clock()
                brec.failed(FailureKind.CONNECT, now - t0, 0, now)
                pool.balancer.observe(backend, now - t0, False, now)
                last, flag = exc, Flag.RETRIED
                continue
            except UpstreamTimeout as exc:
                now = clock()
                brec.failed(FailureKind.TIMEOUT, now - t0, 0, now)
                pool.balancer.observe(backend, now - t0, False, now)
                last = exc
                break
            except UpstreamBroken as exc:
                now = clock()
                brec.failed(FailureKind.RESET, now - t0, 0, now)
                pool.balancer.observe(backend, now - t0, False, now)
                last = exc
                if idempotent and replayable and broken_retries == 0:
                    broken_retries += 1
                    flag = Flag.RETRIED
                    continue
                break
            resp = await self._respond(request, up, backend, t0, pool)
            return resp, flag
        return self._failure(last, tried), self._failure_flag(last)

    def _failure_flag(self, last: UpstreamError | None) -> str:
        return Flag.NO_HEALTHY_BACKEND if last is None else last.reason

    def _failure(self, last: UpstreamError | None, tried: list[Backend]) -> web.Response:
        fh = self.flags_header
        if last is None:
            return error_response(
                503,
                "no backend available",
                Flag.NO_HEALTHY_BACKEND,
                None,
                "no backend can take the request",
                fh,
            )
        if isinstance(last, UpstreamTimeout):
            return error_response(
                504, "upstream timeout", last.reason, last.backend, last.detail, fh
            )
        detail = last.detail
        if len(tried) > 1:
            detail += f" (tried {', '.join(b.name for b in tried)})"
        error = (
            "upstream connect failure"
            if isinstance(last, UpstreamConnectError)
            else "upstream connection broken"
        )
        return error_response(502, error, last.reason, last.backend, detail, fh)

    async def _respond(
        self,
        request: web.BaseRequest,
        up: UpstreamResponse,
        backend: Backend,
        t0: float,
        pool: Pool,
    ) -> web.StreamResponse:
        clock = self.clock
        brec = backend.record
        status = up.status
        headers = response_headers(up.headers)
        length = up.content_length
        bytes_in = request.content_length or 0
        no_body = request.method == "HEAD" or status in (204, 304) or status < 200

        if not no_body and length is not None and length <= SMALL_RESPONSE_BYTES:
            try:
                data = await up.read()
            except UpstreamError as exc:
                now = clock()
                brec.failed(
                    FailureKind.TIMEOUT if isinstance(exc, UpstreamTimeout) else FailureKind.RESET,
                    now - t0,
                    bytes_in,
                    now,
                )
                pool.balancer.observe(backend, now - t0, False, now)
                up.close()
                return self._failure(exc, [backend])
            up.release()
            whole = web.Response(status=status, reason=up.reason, headers=headers, body=data)
            now = clock()
            brec.finished(status, now - t0, bytes_in, len(data), now)
            pool.balancer.observe(backend, now - t0, status < 500, now)
            return whole

        resp = web.StreamResponse(status=status, reason=up.reason, headers=headers)
        if length is not None:
            resp.content_length = length
        sent = 0
        try:
            await resp.prepare(request)
            if not no_body:
                async for chunk in up.chunks():
                    await resp.write(chunk)
                    sent += len(chunk)
            await resp.write_eof()
        except UpstreamError:
            # The head is out: the only honest signal left is to cut the client connection.
            now = clock()
            brec.failed(FailureKind.RESET, now - t0, bytes_in, now)
            pool.balancer.observe(backend, now - t0, False, now)
            up.close()
            if request.transport is not None:
                request.transport.close()
            return resp
        except ConnectionError:
            # The client went away mid-response.
            up.close()
            now = clock()
            brec.finished(status, now - t0, bytes_in, sent, now)
            return resp
        up.release()
        now = clock()
        brec.finished(status, now - t0, bytes_in, sent, now)
        pool.balancer.observe(backend, now - t0, status < 500, now)
        return resp
