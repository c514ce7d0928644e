"""The settings tables of a config file, one pydantic model each.

Each model is frozen and rejects unknown keys; ranges are checked here, where the key is
named, so a problem is reported with its path. Checks across tables are in
:mod:`lbtui.config.model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from lbtui.config.store import (
    HeartbeatMs,
    OnStoreError,
    Prefix,
    ReplicaName,
    StoreUrl,
    SyncMs,
)
from lbtui.inputs import (
    MAX_FALLBACK_BYTES,
    check_backend_url,
    read_limited,
)
from lbtui.units import parse_allowed_host, parse_hostport

ALGORITHM_NAMES = (
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "least_request",
    "ip_hash",
    "consistent_hash",
    "random",
    "p2c_ewma",
)
Algorithm = Literal[
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "least_request",
    "ip_hash",
    "consistent_hash",
    "random",
    "p2c_ewma",
]


MAX_DEPTH = 32
"""Tables and arrays nested deeper than this are refused (a real config nests 3 deep)."""


MAX_BREAKER_WINDOW = 10_000
"""A breaker window is allocated whole (a slot per call or per second): a typo of 10**12 must
not be an allocation of a terabyte."""


Rate = Annotated[float, Field(ge=1e-6, le=1e9)]
"""Requests per second, from one in 11½ days to a billion: outside that range a bucket's
arithmetic (burst ÷ rate) leaves the numbers a float or a 64-bit slot can hold."""
Burst = Annotated[float, Field(ge=1, le=1e9)]

DAY_S = 86_400
"""The longest duration any setting takes: a timeout, a backoff or a ramp longer than a day is
a typo (``open_s = 1e12``), and past it the arithmetic of deadlines stops meaning anything."""
Millis = Annotated[int, Field(gt=0, le=DAY_S * 1000)]
"""A duration in milliseconds, above 0 and at most a day."""
Seconds = Annotated[float, Field(ge=0, le=DAY_S)]
"""A duration in seconds, 0 to a day."""


class Section(BaseModel):
    # inf and nan are numbers TOML can spell but no setting can mean
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_address(value: str) -> str:
    try:
        parse_hostport(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return value


class ListenerConfig(Section):
    """Where the balancer accepts client traffic."""

    address: str = "127.0.0.1:8080"
    """``HOST:PORT``; port 0 picks a free port (tests)."""
    engine: Literal["fast", "aiohttp"] = "fast"
    """``fast``: HTTP/1.1 on ``asyncio.Protocol`` + llhttp (several times cheaper a request);
    ``aiohttp``: aiohttp's low-level web server. Both run the same pipeline; the client
    timeouts (``[proxy] client_header_timeout_s``, ``client_body_timeout_s``) are the fast
    listener's: aiohttp's server has only its keep-alive timeout."""
    workers: int | Literal["auto"] = 1
    """Processes accepting on the address (``SO_REUSEPORT``): the first runs the admin API and
    the health checks, every one proxies. Rate limits are kept in shared memory and breaker
    trips and ejections reach every process (``balancer/workers.py``). ``auto``: one a core."""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_address(v)

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, v: object) -> object:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 64):
            return v
        raise ValueError(f"expected a whole number from 1 to 64 or 'auto', got {v!r}")

    @property
    def host(self) -> str:
        return parse_hostport(self.address)[0]

    @property
    def port(self) -> int:
        return parse_hostport(self.address)[1]

    @property
    def process_count(self) -> int:
        """``workers`` as a number (``auto``: the cores this process may run on)."""
        if self.workers == "auto":
            return max(
                1,
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1),
            )
        return self.workers


class BalancerConfig(Section):
    """How a backend is chosen for each request."""

    algorithm: Algorithm = "round_robin"
    name: ReplicaName | None = None
    """This balancer's name among the replicas sharing a limit store (default: the listener's
    ``HOST:PORT`` once bound)."""
    zone: str | None = None
    """The balancer's own zone: groups with ``cross_zone = false`` stay in it while it has
    eligible backends."""
    hash_on: str = "client_ip"
    """What the hash algorithms key on: ``client_ip``, ``header:NAME`` or ``cookie:NAME``."""

    @field_validator("hash_on")
    @classmethod
    def _hash_on(cls, v: str) -> str:
        kind, _, name = v.partition(":")
        if v == "client_ip" or (kind in ("header", "cookie") and name.strip()):
            return v
        raise ValueError(f"expected 'client_ip', 'header:NAME' or 'cookie:NAME', got {v!r}")


class ProxyConfig(Section):
    """How requests are forwarded."""

    connect_timeout_ms: Millis = 2_000
    """Time allowed to open a connection to a backend; then the next backend is tried."""
    read_timeout_ms: Millis = 30_000
    """Time allowed for the response head, and between two reads of the body (nginx's
    ``proxy_read_timeout``); past it the client gets a 504."""
    max_attempts: Annotated[int, Field(ge=1, le=16)] = 4
    """Backends tried at most for one request when connections fail (nothing was sent)."""
    keepalive_per_backend: Annotated[int, Field(ge=0)] = 256
    """Idle keep-alive connections kept per backend (``lean`` upstream; 0 = none kept)."""
    shutdown_grace_s: Seconds = 10.0
    """On SIGTERM/Ctrl-C: stop accepting, let in-flight requests finish up to this long."""
    upstream: Literal["lean", "aiohttp"] = "lean"
    """The backend client: ``lean`` (keep-alive pool on asyncio.Protocol + llhttp, about
    twice as fast) or ``aiohttp`` (aiohttp's ClientSession)."""
    response_flags_header: bool = False
    """Add ``X-Lbtui-Flags`` to responses the balancer did not simply pass through."""
    client_header_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Time a client has to send a whole request head once it began one (nginx's
    ``client_header_timeout``, 60 s): past it the client gets 408 and the connection closes,
    so that slowloris connections cannot hold the listener's file descriptors."""
    client_body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Time allowed between two reads of a request body (nginx's ``client_body_timeout``,
    60 s; it does not run while lbtui itself stops reading because the backend is slower).
    Past it the request ends: 408 if nothing was answered yet, the connections closed and the
    in-flight slot freed."""
    tunnel_idle_timeout_s: Annotated[float, Field(gt=0, le=DAY_S)] = 300.0
    """An upgraded connection (WebSocket) through which no byte went either way for this long
    is closed (HAProxy's ``timeout tunnel``; the fast listener's)."""
    max_body_bytes: Annotated[int, Field(ge=0)] = 0
    """Largest request body accepted (nginx's ``client_max_body_size``): a larger declared
    length is answered 413 before anything reaches a backend; a chunked body that grows past
    it is cut (413 if nothing was answered yet). 0 = no limit, the default: bodies are
    streamed in constant memory, so size is the operator's policy, not a resource limit
    (HAProxy and Envoy set none either; nginx's 1 MiB would refuse ordinary uploads)."""
    max_upstream_header_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    """Largest response head a backend may send (status line and headers, interim responses
    included); a longer one closes that connection and the client gets 502 with the reason
    (nginx's ``proxy_buffer_size`` plays this part there)."""


class BreakerOverride(Section):
    """Per-backend changes to ``[breaker]``; keys left out keep the global value."""

    enabled: bool | None = None
    window: Literal["count", "time"] | None = None
    window_size: Annotated[int, Field(ge=1, le=MAX_BREAKER_WINDOW)] | None = None
    min_calls: Annotated[int, Field(ge=1)] | None = None
    failure_rate: Annotated[float, Field(gt=0, le=100)] | None = None
    slow_call_rate: Annotated[float, Field(gt=0, le=100)] | None = None
    slow_call_ms: Millis | None = None
    open_s: Seconds | None = None
    half_open_calls: Annotated[int, Field(ge=1)] | None = None


class BackendConfig(Section):
    """One backend server."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    url: str
    """``http://HOST:PORT`` (a path prefix is allowed and is prepended to every request)."""
    weight: Annotated[float, Field(ge=0, le=1000)] = 1
    """Relative share of traffic; 0 takes no new requests."""
    max_rps: Rate | None = None
    """Per-backend cap (R_max): at its cap the backend is skipped, like a full server."""
    zone: str | None = None
    """The backend's zone (rack, availability zone): groups with ``cross_zone = false``
    prefer the balancer's own zone (``[balancer] zone``)."""
    breaker: BreakerOverride | None = None
    """This backend's changes to ``[breaker]``."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_backend_url(v)


def _status_list(v: list[int]) -> list[int]:
    bad = [x for x in v if not 100 <= x <= 599]
    if bad:
        raise ValueError(f"expected HTTP status codes from 100 to 599, got {bad}")
    return v


class LimitsConfig(Section):
    """Admission control, checked before any backend is chosen; rejections answer 429."""

    rps: Rate | None = None
    """Global token bucket: requests per second admitted over time (None = no global limit)."""
    burst: Burst | None = None
    """Global bucket size: requests admitted at once after a quiet spell (default: max(1, rps))."""
    per_client_rps: Rate | None = None
    """One bucket per client key (None = no per-client limit)."""
    per_client_burst: Burst | None = None
    client_key: str = "client_ip"
    """What identifies a client: ``client_ip`` or ``header:NAME``."""
    max_clients: Annotated[int, Field(ge=1)] = 100_000
    """Per-client buckets kept at most; idle ones are dropped first."""
    max_in_flight: Annotated[int, Field(ge=1)] | None = None
    """Requests handled at once (None = no concurrency limit)."""
    headers_on_success: bool = False
    """Add ``RateLimit-Policy`` / ``RateLimit`` to admitted responses too."""
    store: StoreUrl = "memory"
    """Where the buckets are kept: ``memory`` (this balancer) or ``redis://HOST:PORT/DB``, one
    bucket for every balancer naming the same store (``lbtui.config.store``)."""
    on_store_error: OnStoreError = "local"
    """While the store does not answer: ``allow``, ``deny`` (429) or ``local`` (each replica
    enforces the limit divided by the live replicas it last saw)."""
    store_sync_ms: SyncMs = 50
    """How often a replica settles what it admitted with the store: between two settlements
    the replicas together may admit up to this long's worth of rate more than one bucket."""
    store_heartbeat_ms: HeartbeatMs = 1_000
    """How often a replica says it is alive; a replica silent for three beats is not counted."""
    store_prefix: Prefix = "lbtui"
    """The first part of every key in the store: balancers with another prefix share nothing."""

    @field_validator("client_key")
    @classmethod
    def _client_key(cls, v: str) -> str:
        kind, _, name = v.partition(":")
        if v == "client_ip" or (kind == "header" and name.strip()):
            return v
        raise ValueError(f"expected 'client_ip' or 'header:NAME', got {v!r}")


class BreakerSettings(Section):
    """Per-backend circuit breaker (resilience4j semantics)."""

    enabled: bool = True
    window: Literal["count", "time"] = "count"
    """``count``: the last ``window_size`` calls; ``time``: the calls of the last
    ``window_size`` seconds. At most 10,000: the window is kept per backend, slot by slot."""
    window_size: Annotated[int, Field(ge=1, le=MAX_BREAKER_WINDOW)] = 20
    min_calls: Annotated[int, Field(ge=1)] = 10
    """No judgement before this many calls are in the window."""
    failure_rate: Annotated[float, Field(gt=0, le=100)] = 50.0
    """Percent of failed calls that opens the breaker."""
    slow_call_rate: Annotated[float, Field(gt=0, le=100)] = 100.0
    """Percent of slow calls that opens the breaker."""
    slow_call_ms: Millis = 2_000
    open_s: Seconds = 10.0
    """Time open before probing."""
    half_open_calls: Annotated[int, Field(ge=1)] = 3
    """Probe calls in half-open: all must succeed to close."""
    failure_statuses: list[int] | None = None
    """Statuses counted as failures (None = every 5xx). Connect errors, timeouts and resets
    always count."""

    _statuses = field_validator("failure_statuses")(
        classmethod(lambda cls, v: None if v is None else _status_list(v))
    )


class EjectionConfig(Section):
    """Passive ejection (Envoy outlier detection)."""

    consecutive_failures: Annotated[int, Field(ge=0)] = 5
    """Failures in a row that eject a backend (0 = never eject)."""
    base_s: Annotated[float, Field(gt=0, le=DAY_S)] = 30.0
    """Ejection time is base_s × times ejected, capped at max_s."""
    max_s: Annotated[float, Field(gt=0, le=DAY_S)] = 300.0
    max_percent: Annotated[float, Field(ge=0, le=100)] = 50.0
    """Never eject more than this share of a pool at once (one backend may always be)."""
    panic_percent: Annotated[float, Field(ge=0, le=100)] = 50.0
    """Below this share of available backends, balance over all of them (0 = never)."""


class HealthConfig(Section):
    """Active health checks (HAProxy semantics)."""

    enabled: bool = False
    path: str = "/"
    interval_ms: Annotated[int, Field(ge=10, le=DAY_S * 1000)] = 2_000
    timeout_ms: Millis | None = None
    """Time a check may take (default: 1000 ms, or the interval if that is shorter)."""
    rise: Annotated[int, Field(ge=1)] = 2
    """Consecutive passed checks that bring a down backend back."""
    fall: Annotated[int, Field(ge=1)] = 3
    """Consecutive failed checks that take a backend down."""
    expect_status: tuple[int, int] = (200, 399)
    """Inclusive range of statuses that pass."""
    slow_start_s: Seconds = 0.0
    """A recovered backend's weight ramps up linearly over this time (0 = at once)."""

    @property
    def effective_timeout_ms(self) -> int:
        return self.timeout_ms if self.timeout_ms is not None else min(1_000, self.interval_ms)

    @field_validator("expect_status")
    @classmethod
    def _expect(cls, v: tuple[int, int]) -> tuple[int, int]:
        lo, hi = v
        if not 100 <= lo <= hi <= 599:
            raise ValueError(f"expected [LOW, HIGH] with 100 <= LOW <= HIGH <= 599, got {list(v)}")
        return v

    @field_validator("path")
    @classmethod
    def _hpath(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"expected a path starting with '/', got {v!r}")
        return v


class RetriesConfig(Section):
    """Retries of failed requests on other backends (safe cases only)."""

    attempts: Annotated[int, Field(ge=0, le=10)] = 1
    """Extra tries, each on a different backend."""
    per_try_timeout_ms: Millis | None = None
    """Read timeout of each try (None = the proxy's read timeout)."""
    retry_on_status: list[int] = []
    """Statuses retried for idempotent methods (e.g. [502, 503, 504])."""
    budget_percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    """Retries in flight at most, as a share of requests in flight (Envoy retry budget)."""
    budget_min: Annotated[int, Field(ge=0)] = 3
    """Retries always allowed in flight, whatever the share."""
    retry_buffer_bytes: Annotated[int, Field(ge=0)] = 64 * 1024
    """Request bodies up to this size are buffered so they can be sent again."""

    _retry_statuses = field_validator("retry_on_status")(
        classmethod(lambda cls, v: _status_list(v))
    )


class FallbackConfig(Section):
    """What clients get when no backend can answer."""

    status: Annotated[int, Field(ge=200, le=599)] = 503
    content_type: str = "application/json"
    body: str | None = None
    """The body inline; or ``file``."""
    file: str | None = None
    """A file whose bytes are the body (read once, at start-up; at most 1 MiB). A relative
    name is looked up from the config file's folder."""
    stale_for_s: Seconds = 0.0
    """Serve the last good response for a GET path if younger than this (0 = never)."""

    @model_validator(mode="after")
    def _one_body(self) -> FallbackConfig:
        if self.body is not None and self.file is not None:
            raise ValueError("give either body or file, not both")
        return self

    def body_bytes(self, base: Path | None = None) -> bytes:
        """The body; ``file`` is read from ``base`` (the config file's folder) when relative,
        at most ``MAX_FALLBACK_BYTES`` (``OSError`` / ``ValueError`` otherwise)."""
        if self.file is None:
            return (self.body or "").encode()
        path = Path(self.file)
        if base is not None and not path.is_absolute():
            path = base / path
        return read_limited(path, MAX_FALLBACK_BYTES)


class AdminConfig(Section):
    """The admin API and metrics listener."""

    enabled: bool = True
    address: str = "127.0.0.1:9901"
    token: str | None = None
    """Bearer token for every endpoint (also from LBTUI_ADMIN_TOKEN); None = no auth, which is
    refused on a non-loopback address."""
    metrics_need_token: bool = False
    """Ask the token for /metrics too (default: /metrics is open to whoever reaches the
    address, as Prometheus exporters usually are; everything else needs the token)."""
    allowed_hosts: list[str] = []
    """Names (``name`` or ``name:port``) the API answers to besides loopback and its own
    address: a request whose ``Host`` is none of them is refused (DNS rebinding). Add the name
    you reach the API by when it is not an IP address (``lb.internal:9901``)."""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_address(v)

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, v: list[str]) -> list[str]:
        for entry in v:
            parse_allowed_host(entry)
        return v
