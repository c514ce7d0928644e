"""The admin API: versioned JSON under ``/api/v1``, Server-Sent Events, and ``/metrics``, on a
listener of its own (``[admin] address``, default ``127.0.0.1:9901``).

    GET    /api/v1/state?since=VERSION&epoch=E    the Snapshot; with since, only the backends
                                                  changed after VERSION (``statecache``)
    GET    /api/v1/events?since=ID&limit=N        a JSON page of events
    GET    /api/v1/events  (Accept: text/event-stream)
                                                  SSE: events after Last-Event-ID (or ?since),
                                                  then live; a keep-alive comment every 15 s
    POST   /api/v1/backends                       {"name", "url", "weight"?}        → 201
    DELETE /api/v1/backends/{name}
    POST   /api/v1/backends/{name}/weight         {"weight"}
    POST   /api/v1/backends/{name}/drain|disable|enable
    POST   /api/v1/backends/{name}/breaker        {"mode": open|closed|disabled|auto}
    PUT    /api/v1/backends/{name}/fault          a FaultSpec
    DELETE /api/v1/backends/{name}/fault
    POST   /api/v1/backends/{name}/fleet/kill|restart
    POST   /api/v1/backends/{name}/fleet/knobs    {"latency_ms"?, "error_rate"?, ...}
    PUT    /api/v1/algorithm                      {"algorithm"}
    PUT    /api/v1/limits                         any [limits] keys
    POST   /api/v1/config/reload                  read the config file again, apply what
                                                  changed (``reload.py``); 422 with the
                                                  problems when it is broken (nothing changed)
    POST   /api/v1/actions                        any action: {"kind": "set_weight", …}
                                                  (what ``HttpControl.act`` sends)
    GET    /metrics                               Prometheus text format

Every action goes through ``LocalControl`` (validated in full, then applied in one step on the
event loop, and put on the event timeline); errors answer
``{"error": {"status", "type", "message", "field"}}`` with 404 for an unknown backend, 422 for a
bad value (naming the field), 409 for a clash, 503 when the balancer cannot (no fleet).

``/state`` and ``/metrics`` say what they cost the event loop in a ``Server-Timing`` header
(``state;dur=3.1;desc="longest slice 0.9 ms"``, milliseconds): the time they held it, all
slices together, apart from the time they yielded or waited. While the state is kept in the
background (``keeper.py``), ``/state`` adds ``keep;dur=…``: the last background pass, whose
time-moving figures the answer carries.

Security, checked by one middleware before any handler runs:

- a ``Host`` that is not one of the API's own names (loopback, its address, ``[admin]
  allowed_hosts``) is refused with 403, GETs included (DNS rebinding); a state-changing request
  with a foreign ``Origin`` is refused with 403, and one whose body is not
  ``application/json`` with 415: the two ways a web page in the operator's browser could act
  (``guard.py``);
- a bearer token (``[admin] token`` or ``LBTUI_ADMIN_TOKEN``) is asked on every endpoint —
  ``/metrics`` only with ``metrics_need_token`` — and compared in constant time
  (``hmac.compare_digest``). Listening on a non-loopback address without a token is refused
  at construction, before anything starts;
- bodies are read up to ``MAX_BODY_BYTES`` (413) and parsed as one JSON object at most
  ``guard.MAX_JSON_DEPTH`` deep, NaN and Infinity refused (422, like any bad value).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from lbtui.config import AdminConfig
from lbtui.config.store import shown_store
from lbtui.control.errors import (
    ControlError,
    Forbidden,
    Invalid,
    NotFound,
    ReadOnly,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    invalid_from,
)
from lbtui.control.exposition import Exposition
from lbtui.control.guard import (
    STATE_CHANGING,
    HostPolicy,
    content_type_problem,
    parse_json_object,
)
from lbtui.control.keeper import WATCH_S, Keeper
from lbtui.control.local import LocalControl
from lbtui.control.metrics import CONTENT_TYPE, make_registry
from lbtui.control.model import (
    ACTION_KINDS,
    Action,
    AddBackend,
    ClearFault,
    FaultSpec,
    FleetKill,
    FleetKnobs,
    FleetRestart,
    ForceBreaker,
    RemoveBackend,
    SetAdmin,
    SetAlgorithm,
    SetFault,
    SetLimits,
    SetWeight,
    event_to_json_bytes,
    events_to_json_bytes,
)
from lbtui.control.reload import Reloader
from lbtui.control.slicing import Turns
from lbtui.control.statecache import StateCache
from lbtui.core.events import ORIGIN
from lbtui.errors import ConfigError
from lbtui.fleet.spec import is_loopback_host
from lbtui.units import parse_hostport

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

API = "/api/v1"
TOKEN_ENV = "LBTUI_ADMIN_TOKEN"
KEEPALIVE_S = 15.0
"""An SSE comment line this often keeps proxies and idle timeouts from closing the stream."""
EVENT_PAGE_MAX = 1000
MAX_BODY_BYTES = 64 * 1024
"""An admin body is a few hundred bytes; anything past this is refused with 413."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
A = TypeVar("A", bound="DataclassInstance")


def admin_token(config: AdminConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The token from ``[admin] token``, else ``LBTUI_ADMIN_TOKEN``; ``None`` when neither."""
    env = os.environ if environ is None else environ
    return config.token or env.get(TOKEN_ENV) or None


def check_exposure(config: AdminConfig, token: str | None) -> None:
    """Refuse an admin API reachable from other hosts without a token."""
    host, _port = parse_hostport(config.address)
    if token is None and not is_loopback_host(host):
        raise ConfigError(
            "[admin]",
            [
                f"address: refusing to serve the admin API on {host} (not loopback) without a "
                f"token: set [admin] token or {TOKEN_ENV}, or listen on 127.0.0.1"
            ],
        )


class MethodNotAllowed(ControlError):
    status = 405


class TooLarge(ControlError):
    status = 413


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _error(exc: ControlError) -> web.Response:
    resp = _json(exc.to_json(), status=exc.status)
    if isinstance(exc, Unauthorized):
        resp.headers["WWW-Authenticate"] = 'Bearer realm="lbtui"'
    return resp


def _parse(
    cls: type[A], values: dict[str, Any], body: Mapping[str, Any], *, tagged: bool = True
) -> A:
    """``cls`` from the path's ``values`` and the request ``body``; unknown keys refused (and
    an action's ``kind`` tag, which the endpoint gives)."""
    names = [f.name for f in dataclasses.fields(cls)]
    allowed = set(names) - set(values) - ({"kind"} if tagged else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(
            f"{unknown[0]}: unknown field (expected {', '.join(sorted(allowed)) or 'none'})",
            field=unknown[0],
        )
    try:
        return TypeAdapter(cls).validate_python({**body, **values})
    except ValidationError as exc:
        raise invalid_from(exc, fields=names) from None


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    raw = await request.read()  # bounded: the app's client_max_size is MAX_BODY_BYTES
    if not raw.strip():
        return {}
    try:
        return parse_json_object(raw)
    except ValueError as exc:
        raise Invalid(f"body: {exc}", field="body") from None


async def send_whole(
    request: web.Request, body: bytes | list[bytes], content_type: str, timing: str
) -> web.StreamResponse:
    """Answer ``body`` (or its pieces, one after the other) with its length known: the head
    written first and the body after it, as it is (``web.Response`` joins the two into one
    more copy of the body before writing: a megabyte and a half of state at 1,000 backends)."""
    parts = [body] if isinstance(body, bytes) else body
    resp = web.StreamResponse(headers={"Content-Type": content_type, "Server-Timing": timing})
    resp.content_length = sum(len(p) for p in parts)
    await resp.prepare(request)
    for part in parts:
        await resp.write(part)
    await resp.write_eof()
    return resp


class AdminServer:
    """The admin API of one balancer, served through ``control``. ``port`` is bound after
    ``start()`` (``[admin] address`` may give port 0)."""

    def __init__(
        self,
        config: AdminConfig,
        control: LocalControl,
        *,
        keepalive_s: float = KEEPALIVE_S,
        environ: Mapping[str, str] | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self.config = config
        self.control = control
        self.reloader = reloader
        """Reads the config file again; None when the balancer was started without one."""
        self._token = admin_token(config, environ)
        check_exposure(config, self._token)
        self._token_bytes = self._token.encode() if self._token is not None else None
        self.host, self.port = parse_hostport(config.address)
        self.hosts = HostPolicy(self.host, config.allowed_hosts)
        self.keepalive_s = keepalive_s
        self.registry = make_registry(control.proxy, control.faults)
        self.turns = Turns()
        """One admin slice per turn of the loop, the state's and ``/metrics``' together."""
        self.state = StateCache(control, turns=self.turns)
        self.keeper = Keeper(
            lambda: self.state.refresh(paced=True),
            shortest_s=self.state.rate_tick_s,
            longest_s=self.state.tick_s,
        )
        """Keeps the state's time-moving figures in the background while it is polled."""
        self.exposition = Exposition(control.proxy, control.faults, turns=self.turns)
        self.metrics_keeper = Keeper(
            lambda: self.exposition.refresh(paced=True), shortest_s=0.25, longest_s=WATCH_S
        )
        """Writes the moved backends' lines in the background while ``/metrics`` is scraped
        steadily (a scrape a second, or more often)."""
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._streams: set[asyncio.Event] = set()
        self.app = self._build_app()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def needs_token(self) -> bool:
        return self._token is not None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            await runner.cleanup()
            msg = f"admin API cannot listen on {self.host}:{self.port}: {exc.strerror}"
            raise OSError(exc.errno, msg) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def stop(self) -> None:
        """End the event streams, then stop the listener."""
        self._closing = True
        for wake in list(self._streams):
            wake.set()
        await self.keeper.close()
        await self.metrics_keeper.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AdminServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the application ---------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        r = app.router
        r.add_get(f"{API}/state", self._get_state)
        r.add_get(f"{API}/events", self._events)
        r.add_post(f"{API}/actions", self._act)
        r.add_post(f"{API}/backends", self._add_backend)
        b = f"{API}/backends/{{name}}"
        r.add_delete(b, self._action(RemoveBackend))
        r.add_post(f"{b}/weight", self._action(SetWeight))
        r.add_post(f"{b}/drain", self._action(SetAdmin, state="draining"))
        r.add_post(f"{b}/disable", self._action(SetAdmin, state="disabled"))
        r.add_post(f"{b}/enable", self._action(SetAdmin, state="active"))
        r.add_post(f"{b}/breaker", self._action(ForceBreaker))
        r.add_put(f"{b}/fault", self._set_fault)
        r.add_delete(f"{b}/fault", self._action(ClearFault))
        r.add_post(f"{b}/fleet/kill", self._action(FleetKill))
        r.add_post(f"{b}/fleet/restart", self._action(FleetRestart))
        r.add_post(f"{b}/fleet/knobs", self._fleet_knobs)
        r.add_put(f"{API}/algorithm", self._action(SetAlgorithm, backend=None))
        r.add_put(f"{API}/limits", self._set_limits)
        r.add_post(f"{API}/config/reload", self._reload)
        r.add_get("/metrics", self._metrics)
        return app

    def _authorized(self, request: web.Request) -> bool:
        expected = self._token_bytes
        if expected is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), expected)

    def _refusal(self, request: web.Request) -> ControlError | None:
        """Why ``request`` is refused before its handler (``guard.py``), or ``None``."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        local_ip = str(sockname[0]) if sockname else None
        problem = self.hosts.host_problem(request.headers.get("Host"), self.port, local_ip)
        if problem is not None:
            return Forbidden(problem, field="Host")
        open_metrics = request.path == "/metrics" and not self.config.metrics_need_token
        if not open_metrics and not self._authorized(request):
            return Unauthorized("a valid bearer token is required (Authorization: Bearer …)")
        method = request.method
        if method in STATE_CHANGING:
            origin = request.headers.get("Origin")
            problem = self.hosts.origin_problem(origin, self.port, local_ip)
            if problem is not None:
                return Forbidden(problem, field="Origin")
        has_body = request.body_exists or bool(request.content_length)
        problem = content_type_problem(method, has_body, request.content_type)
        if problem is not None:
            return UnsupportedMediaType(problem, field="Content-Type")
        return None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return _error(refusal)
        origin = request.headers.get("X-Lbtui-Origin", "").strip()[:80] or None
        token = ORIGIN.set(origin) if origin else None
        try:
            return await handler(request)
        except ControlError as exc:
            return _error(exc)
        except web.HTTPNotFound:
            return _error(NotFound(f"no endpoint {request.method} {request.path}"))
        except web.HTTPMethodNotAllowed as exc:
            resp = _error(MethodNotAllowed(f"{request.method} is not allowed on {request.path}"))
            resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return resp
        except web.HTTPRequestEntityTooLarge:
            return _error(TooLarge(f"body: larger than {MAX_BODY_BYTES} bytes", field="body"))
        finally:
            if token is not None:
                ORIGIN.reset(token)

    # --- seeing ------------------------------------------------------------------------------

    async def _get_state(self, request: web.Request) -> web.StreamResponse:
        since_raw = request.query.get("since")
        since = self._int_param(request, "since", 0) if since_raw else None
        epoch = request.query.get("epoch")
        state = self.state
        keeper = self.keeper
        if keeper.arrived():
            body = await state.kept_body(since, epoch)
        else:
            body = await state.body(since, epoch)
        keeper.answered()
        timing = (
            f"state;dur={state.busy_s * 1e3:.2f};"
            f'desc="longest slice {state.longest_s * 1e3:.2f} ms"'
        )
        if self.keeper.keeping:  # the background pass this poll's figures come from
            timing += (
                f", keep;dur={state.pass_busy_s * 1e3:.2f};"
                f'desc="background, longest slice {state.pass_longest_s * 1e3:.2f} ms"'
            )
        return await send_whole(request, body, "application/json", timing)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        expo = self.exposition
        self.metrics_keeper.arrived()  # kept or not, a scrape writes what moved since
        self.state.begin_answer()  # a paced pass over the state steps aside meanwhile
        try:
            body = await expo.render_parts()
        finally:
            self.state.end_answer()
        self.metrics_keeper.answered()
        timing = (
            f"metrics;dur={expo.busy_s * 1e3:.2f};"
            f'desc="longest slice {expo.longest_s * 1e3:.2f} ms"'
        )
        if self.metrics_keeper.keeping:
            timing += (
                f", keep;dur={expo.pass_busy_s * 1e3:.2f};"
                f'desc="background, longest slice {expo.pass_longest_s * 1e3:.2f} ms"'
            )
        return await send_whole(request, body, CONTENT_TYPE, timing)

    @staticmethod
    def _int_param(request: web.Request, name: str, default: int) -> int:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise Invalid(f"{name}: expected a whole number, got {raw!r}", field=name) from None
        if value < 0:
            raise Invalid(f"{name}: expected 0 or more, got {value}", field=name)
        return value

    async def _events(self, request: web.Request) -> web.StreamResponse:
        since = self._int_param(request, "since", 0)
        if "text/event-stream" in request.headers.get("Accept", ""):
            last_id = request.headers.get("Last-Event-ID", "").strip()
            if last_id:
                try:
                    since = int(last_id)
                except ValueError:
                    raise Invalid(
                        f"Last-Event-ID: expected an event id, got {last_id!r}",
                        field="Last-Event-ID",
                    ) from None
            return await self._stream(request, since)
        limit = min(self._int_param(request, "limit", EVENT_PAGE_MAX), EVENT_PAGE_MAX)
        ring = self.control.proxy.events
        events = ring.since(since)
        more = len(events) > limit
        page = events[:limit]
        body = (
            b'{"events":'
            + events_to_json_bytes(page)
            + b',"last_id":'
            + str(ring.last_id).encode()
            + b',"more":'
            + (b"true" if more else b"false")
            + b"}"
        )
        return web.Response(body=body, content_type="application/json")

    async def _stream(self, request: web.Request, since: int) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        ring = self.control.proxy.events
        wake = asyncio.Event()
        self._streams.add(wake)
        unsubscribe = ring.subscribe(lambda _e: wake.set())
        last = since
        try:
            await resp.write(b"retry: 1000\n\n")
            while not self._closing:
                wake.clear()
                events = ring.since(last)
                if events:
                    chunk = bytearray()
                    for e in events:
                        chunk += b"id: %d\ndata: %b\n\n" % (e.id, event_to_json_bytes(e))
                        last = e.id
                    await resp.write(bytes(chunk))
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), self.keepalive_s)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
        except ConnectionError:  # the client went away: nothing more to send
            return resp
        finally:
            unsubscribe()
            self._streams.discard(wake)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    # --- acting ------------------------------------------------------------------------------

    def _action(self, cls: type[Any], **fixed: Any) -> Handler:
        """A handler that builds ``cls`` from the path, ``fixed`` values and the body."""
        takes_backend = fixed.pop("backend", True) is not None

        async def handle(request: web.Request) -> web.Response:
            body = await _body(request)
            values = dict(fixed)
            if takes_backend:
                values["backend"] = request.match_info["name"]
            action: Action = _parse(cls, values, body)
            await self.control.act(action)
            return self._done()

        return handle

    def _done(self, status: int = 200, **extra: Any) -> web.Response:
        return _json(
            {"ok": True, "last_event_id": self.control.proxy.events.last_id, **extra}, status=status
        )

    async def _add_backend(self, request: web.Request) -> web.Response:
        action = _parse(AddBackend, {}, await _body(request))
        await self.control.act(action)
        return self._done(201)

    async def _set_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        fault = _parse(FaultSpec, {}, await _body(request), tagged=False)
        await self.control.act(SetFault(backend=name, fault=fault))
        return self._done()

    async def _set_limits(self, request: web.Request) -> web.Response:
        body = await _body(request)
        await self.control.act(SetLimits(limits=body))
        limits = self.control.proxy.admission.config.model_dump()
        limits["store"] = shown_store(limits["store"])  # never the password
        return self._done(limits=limits)

    async def _reload(self, request: web.Request) -> web.Response:
        """``POST /api/v1/config/reload``: 200 with what changed, or 422 with the problems
        (the balancer unchanged)."""
        body = await _body(request)
        if body:
            raise Invalid(f"{next(iter(body))}: unknown field (expected none)", field="body")
        if self.control.read_only:
            raise ReadOnly("this admin API is read-only")
        if self.reloader is None:
            raise Unavailable("started without a config file: nothing to reload")
        result = self.reloader.reload()
        if not result.applied:
            error = Invalid(result.line(), field="config")
            return _json({**error.to_json(), **result.to_json()}, status=error.status)
        return self._done(**result.to_json())

    async def _fleet_knobs(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await _body(request)
        action = FleetKnobs(backend=name, knobs=body)
        knobs = await self.control.act(action)
        return self._done(knobs=knobs)

    async def _act(self, request: web.Request) -> web.Response:
        """``POST /api/v1/actions``: any action, as its JSON (``{"kind": …, …}``)."""
        body = await _body(request)
        kind = body.pop("kind", None)
        cls = ACTION_KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise Invalid(
                f"kind: expected one of {', '.join(ACTION_KINDS)}, got {kind!r}", field="kind"
            )
        result = await self.control.act(_parse(cls, {}, body))
        return self._done(result=result)
