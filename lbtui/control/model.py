"""The control plane's model: what a console sees (``Snapshot``, ``Event``) and what it can ask
for (``Action``), as frozen dataclasses that survive a JSON round trip unchanged.

One model for both sides of the wire: the admin API serialises with ``to_json()`` and
``HttpControl`` rebuilds the very same classes with ``from_json()``, so a console cannot tell an
in-process balancer from a remote one. Serialisation and validation go through pydantic
``TypeAdapter``s over plain dataclasses (pydantic at the edges, DESIGN.md): the dataclasses stay
cheap to build on the snapshot path, and a value coming in over HTTP is checked field by field,
each problem named by its path.

Times: every ``at`` / ``since`` / ``until`` is monotonic seconds on the balancer's clock, the
clock ``Snapshot.at`` is read on. For people, convert with the snapshot's pair:
``wall_time = snapshot.wall - (snapshot.at - since)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, TypeAdapter

from lbtui.config import Algorithm
from lbtui.control.foreign import FrontendView, ServerView
from lbtui.control.groups import PoolView, RouteView
from lbtui.control.listening import ListenerView
from lbtui.control.replica_model import ReplicaKill, ReplicaRestart, StoreStart, StoreStop
from lbtui.core.events import (
    AdminChanged,
    AlgorithmChanged,
    BackendAdded,
    BackendRemoved,
    BreakerChanged,
    BreakerUnchanged,
    ConfigNote,
    EjectionChanged,
    Event,
    EventKind,
    FallbackServed,
    FaultEnded,
    FaultSet,
    FleetFaultSet,
    ForwardChanged,
    GenericEvent,
    HealthChanged,
    KnobsChanged,
    LimitsChanged,
    LimitStoreChanged,
    NoFaultToClear,
    Note,
    PanicChanged,
    ProcessKilled,
    ProcessRestarted,
    RateLimited,
    ReplicaChanged,
    RetryBudgetExhausted,
    Unchanged,
    WeightChanged,
    WorkerExited,
    WorkerRestarted,
    ZoneSpill,
    from_wire,
)
from lbtui.core.events import Figure as EventFigure
from lbtui.core.faults import FaultKind, FaultSpec
from lbtui.core.window import (
    MIN_QUANTILE_SAMPLES,
    QUANTILE_WINDOW_S,
    RATE_WINDOW_S,
    SERIES_WINDOW_S,
)

__all__ = [
    "Action",
    "AddBackend",
    "AdminChanged",
    "AdminState",
    "AlgorithmChanged",
    "BackendAdded",
    "BackendRemoved",
    "BackendView",
    "BalancerTotals",
    "BreakerChanged",
    "BreakerMode",
    "BreakerUnchanged",
    "BreakerView",
    "ClearFault",
    "ConfigNote",
    "EjectionChanged",
    "Event",
    "EventKind",
    "FallbackServed",
    "FaultEnded",
    "FaultKind",
    "FaultSet",
    "FaultSpec",
    "FaultView",
    "Figure",
    "FleetFaultSet",
    "FleetKill",
    "FleetKnobs",
    "FleetRestart",
    "ForceBreaker",
    "ForwardChanged",
    "FrontendView",
    "GenericEvent",
    "HealthChanged",
    "HealthView",
    "KnobsChanged",
    "LimitStoreChanged",
    "LimitsChanged",
    "LimitsView",
    "ListenerView",
    "NoFaultToClear",
    "Note",
    "PanicChanged",
    "PoolView",
    "ProcessKilled",
    "ProcessRestarted",
    "ProcessView",
    "RateLimited",
    "RemoveBackend",
    "ReplicaChanged",
    "ReplicaKill",
    "ReplicaRestart",
    "RetryBudgetExhausted",
    "RouteView",
    "ServerView",
    "SetAdmin",
    "SetAlgorithm",
    "SetFault",
    "SetForward",
    "SetLimits",
    "SetWeight",
    "Snapshot",
    "StoreStart",
    "StoreStop",
    "Unchanged",
    "WeightChanged",
    "Windows",
    "WorkerExited",
    "WorkerRestarted",
    "ZoneSpill",
    "action_from_json",
    "action_to_json",
    "event_from_json",
    "event_to_json",
    "events_from_json",
]

AdminState = Literal["active", "draining", "disabled"]
BreakerMode = Literal["open", "closed", "disabled", "auto"]
Figure = float | int | str | bool | None
"""A flat value: what limits, knobs and event payloads hold."""


# --- faults ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultView:
    """The fault on a backend, with the proof that it happens (PRODUCT.md, gap 3): requested
    vs applied share, with the sample size, and what clients finally saw. A fault that ended
    (cleared, expired, first N done) stays visible with its final figures and ``active`` False.
    """

    spec: FaultSpec
    description: str
    """One line for people: ``delay 200±50 ms on 100% for 30 s``."""
    active: bool
    ended: str | None
    """Why it ended (``cleared``, ``expired after 30 s``); ``None`` while active."""
    set_at: float
    remaining_s: float | None
    """Seconds until it ends by itself; ``None`` when it has no duration, or has ended."""
    requests: int
    """Requests to the backend checked while it was set."""
    eligible: int
    """Of those, the ones in the fault's scope: the sample size."""
    applied: int
    applied_percent: float | None
    """``applied / eligible`` in percent, to compare with ``spec.percent``; ``None`` before the
    first eligible request."""
    client_observed: dict[str, int]
    """For affected requests, what the client finally got: ``"503"``, ``"200"`` (a retry
    elsewhere succeeded), ``"reset"``."""


# --- the snapshot ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakerView:
    """A backend's circuit breaker (``lbtui.core.breaker.BreakerStats``, as sent)."""

    state: str
    """``closed``, ``open``, ``half_open``, ``forced_open`` or ``disabled``."""
    since: float
    reason: str
    window: str
    """``count`` or ``time``."""
    window_size: int
    calls: int
    """Calls in the window (frozen as it tripped while not closed)."""
    failures: int
    slow_calls: int
    failure_rate: float | None
    """Percent; ``None`` while the window holds fewer than ``min_calls`` calls."""
    slow_call_rate: float | None
    failure_rate_threshold: float
    slow_call_rate_threshold: float
    slow_call_s: float
    min_calls: int
    retry_in_s: float | None
    """When open: seconds until the next call probes (0 once due); otherwise ``None``."""
    half_open_permits: int | None
    times_opened: int
    """Times it tripped open by itself since start (never decreases)."""


@dataclass(frozen=True, slots=True)
class HealthView:
    """A backend's active health (``lbtui.core.health.HealthStats``, the parts a console shows)."""

    state: str
    """``up`` or ``down``."""
    since: float
    reason: str
    consecutive_successes: int
    consecutive_failures: int
    last_check_ok: bool | None
    last_check_detail: str
    slow_start_remaining_s: float | None
    slow_start_factor: float | None
    """Weight factor while ramping after a recovery; ``None`` when not ramping."""


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One process of a balancer that runs several (``[listener] workers``); 0 is the primary."""

    index: int
    pid: int | None
    alive: bool
    requests_total: int
    """Client requests this process has taken (a worker's as of its last report)."""
    in_flight: int


@dataclass(frozen=True, slots=True)
class ProcessView:
    """OS figures of a backend that is a local fleet process (psutil)."""

    pid: int | None
    alive: bool
    cpu_percent: float
    """Since the previous snapshot; 100 = one core."""
    rss_bytes: int


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend, everything a console shows about it, every state with its reason."""

    name: str
    url: str
    zone: str | None
    admin: AdminState
    admin_since: float
    """When the operator last changed ``admin`` (0 = never since start)."""
    health: HealthView | None
    """``None`` when active health checks are off."""
    ejected: bool
    ejected_until: float | None
    """``None`` when not ejected, or ejected until further notice."""
    ejection_reason: str
    """The reason of the latest ejection event, or ``never ejected``."""
    times_ejected: int
    breaker: BreakerView | None
    weight_configured: float
    weight_effective: float
    """What the algorithms use now: 0 unless active, ramped during slow start."""
    max_rps: float | None
    """The backend's cap R_max; ``None`` = uncapped."""
    in_flight: int
    open_connections: int
    connections_source: Literal["connector", "in_flight"]
    """``connector``: counted by the upstream pool (idle keep-alive plus in use); ``in_flight``:
    the pool could not be read, and in-flight stands in."""
    rps: float
    """Attempts started per second over the "now" window (``Snapshot.windows.rate_s``)."""
    rps_series: list[float]
    """Attempts per second over the last minute, oldest first: one value per complete second,
    then the "now" rate (``rps``) last."""
    p50_ms: float | None
    """Latency percentiles over ``Snapshot.windows.quantile_s``; ``None`` when that window
    holds fewer than ``windows.min_quantile_samples`` samples (the console shows ``—``)."""
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    error_ratio: float
    """5xx answers and failed attempts over attempts ended, in the "now" window."""
    bytes_per_s: float
    requests_total: int
    responses_total: dict[str, int]
    """By class: ``1xx`` … ``5xx``."""
    failures_total: dict[str, int]
    """No usable response, by kind: ``connect``, ``timeout``, ``reset``."""
    retries_total: int
    bytes_in_total: int
    bytes_out_total: int
    fault: FaultView | None
    """The proxy-side fault set on the backend, or the last one that ended; ``None`` if it never
    had one (or the balancer has no faults registry)."""
    process: ProcessView | None
    """``None`` unless the backend is a process of the local fleet."""
    score: dict[str, float | None] | None
    """The algorithm's score parts (p2c_ewma: ``ewma_ms``, ``penalty``, ``in_flight``,
    ``cost``); ``None`` for algorithms without a score. An infinite cost is ``None``."""
    demand_rps: float = 0.0
    """``rps`` plus the picks refused because the backend was at its ``max_rps``: what M
    compares with the cap. A pick the cap refuses is made again among the others; under
    round robin the capped backend then stays next in the rotation, so every request it turns
    away counts (its demand reads as the requests that came to it first, not its 1/n share)."""
    refused_at_cap_total: int = 0
    """Picks refused because the backend was at its ``max_rps``, since start."""
    latency_samples: int = 0
    """Samples in the percentile window."""
    eligible: bool = True
    """Takes new requests now (active, up, not ejected, breaker not open; health and ejection
    ignored while its pool panics): only eligible backends count in L and M."""
    server: ServerView | None = None
    """What a foreign balancer (HAProxy) says of it in its own words; ``None`` for lbtui."""


@dataclass(frozen=True, slots=True)
class BalancerTotals:
    """Balancer-wide figures, one count per client request; rates and ``success_ratio`` over the
    "now" window (``Snapshot.windows.rate_s``)."""

    rps: float
    in_flight: int
    code_rps: dict[str, float]
    """Answers per second by class: ``1xx`` … ``5xx``."""
    rate_limited_rps: float
    fallback_rps: float
    retries_rps: float
    success_ratio: float
    """Non-5xx share of recent answers (1.0 before the first)."""
    requests_total: int
    responses_total: dict[str, int]
    rate_limited_total: dict[str, int]
    fallback_total: dict[str, int]
    retries_total: int
    flags_total: dict[str, int]
    rps_series: list[float]


@dataclass(frozen=True, slots=True)
class LimitsView:
    """Admission limits as configured now, and the limiters' counters."""

    config: dict[str, Figure]
    """The current ``[limits]`` values (``lbtui.config.LimitsConfig``)."""
    global_tokens: float | None
    """Tokens in the global bucket now; ``None`` without a global limit."""
    global_allowed_total: int
    global_rejected_total: int
    clients: int
    """Per-client buckets held now."""
    client_rejected_total: int
    client_evicted_total: int
    in_flight: int
    concurrency_rejected_total: int
    peak_in_flight: int
    store: str = "memory"
    """Where the buckets are kept: ``memory``, or the Redis URL (without credentials)."""
    store_up: bool | None = None
    """Whether the shared store answered last time; ``None`` for memory or before first try."""
    replica: str | None = None
    """This balancer's name among the replicas sharing the store."""
    peers: list[str] = field(default_factory=list)
    """The live replicas sharing the store, as last seen (this one included)."""


@dataclass(frozen=True, slots=True)
class Windows:
    """The windows the snapshot's figures cover (``lbtui.core.window``'s constants), so that a
    console can say them: ``req/s 1s``, ``p99 10s``."""

    rate_s: float = RATE_WINDOW_S
    """Rates and shares: req/s, error %, bytes/s, the totals' rates and success %."""
    quantile_s: float = QUANTILE_WINDOW_S
    """Latency percentiles."""
    min_quantile_samples: int = MIN_QUANTILE_SAMPLES
    """Below this many samples in the window, percentiles are ``None``."""
    series_s: float = SERIES_WINDOW_S
    """Sparkline series: one value per complete second."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The balancer at one instant, read from its records (no view keeps counters)."""

    at: float
    """Monotonic seconds on the balancer's clock."""
    wall: float
    """Unix time at ``at``."""
    algorithm: str
    totals: BalancerTotals
    limits: LimitsView
    imbalance: float
    """L summed over the pools (``pools``): in each, Σᵢ |rᵢ − r̄ᵢ| in requests per second over
    the eligible backends, r̄ᵢ = backend i's weighted share of their total rate (effective
    weights; equal shares when every weight is 0). 0 = perfectly balanced."""
    overload: int
    """M = number of eligible backends whose demand (``demand_rps``) exceeds their
    ``max_rps`` (each backend counted once, whichever pools it is in)."""
    panic: bool
    """The default pool balances over all backends because too few are available."""
    backends: list[BackendView]
    last_event_id: int
    """The newest event's id: stream from here to see only what comes next."""
    workers: list[WorkerView] = field(default_factory=list)
    """The processes serving, when there are several; empty for one."""
    pools: list[PoolView] = field(default_factory=list)
    """Each pool's balance figures: the default pool first, then each route's."""
    windows: Windows = field(default_factory=Windows)
    """The windows the figures cover."""
    source: str = "lbtui"
    """What the figures come from: ``lbtui`` (its admin API or in-process), ``haproxy``
    (the Runtime API), ``prometheus`` (PromQL, with the preset's name after a colon)."""
    frontends: list[FrontendView] = field(default_factory=list)
    """A foreign balancer's listeners (HAProxy frontends); empty for lbtui."""
    listeners: list[ListenerView] = field(default_factory=list)
    """lbtui's listeners (empty for a foreign source or an embedded proxy)."""
    unavailable: dict[str, str] = field(default_factory=dict)
    """Action kinds this source cannot carry out, each with why (HAProxy cannot delay): the
    console shows the reason instead of a form; ``act`` raises ``Unavailable`` with it."""
    routes: list[RouteView] = field(default_factory=list)
    """The routing rules in evaluation order (empty: every request goes to ``default``)."""

    def backend(self, name: str) -> BackendView:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _SNAPSHOT.dump_python(self, mode="json")
        return data

    def to_json_bytes(self) -> bytes:
        return _SNAPSHOT.dump_json(self)

    @staticmethod
    def from_json(data: Mapping[str, Any] | bytes | str) -> Snapshot:
        if isinstance(data, bytes | str):
            return _SNAPSHOT.validate_json(data)
        return _SNAPSHOT.validate_python(data)


def finite(value: float) -> float | None:
    """``value``, or ``None`` for inf/nan (which JSON cannot carry)."""
    return value if math.isfinite(value) else None


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AddBackend:
    kind: Literal["add_backend"] = "add_backend"
    name: str
    url: str
    weight: Annotated[float, Field(ge=0, le=1000)] = 1.0
    group: str | None = None
    """The target group it joins (None: the default one)."""
    zone: str | None = None
    max_rps: Annotated[float, Field(ge=1e-6, le=1e9)] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveBackend:
    kind: Literal["remove_backend"] = "remove_backend"
    backend: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetWeight:
    kind: Literal["set_weight"] = "set_weight"
    backend: str
    weight: Annotated[float, Field(ge=0, le=1000)]


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAdmin:
    """Drain (``draining``), disable (``disabled``) or enable (``active``) a backend."""

    kind: Literal["set_admin"] = "set_admin"
    backend: str
    state: AdminState


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAlgorithm:
    kind: Literal["set_algorithm"] = "set_algorithm"
    algorithm: Algorithm


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLimits:
    """Change some ``[limits]`` keys; keys left out keep their value, ``None`` clears one."""

    kind: Literal["set_limits"] = "set_limits"
    limits: dict[str, Figure]


@dataclass(frozen=True, slots=True, kw_only=True)
class ForceBreaker:
    kind: Literal["force_breaker"] = "force_breaker"
    backend: str
    mode: BreakerMode


@dataclass(frozen=True, slots=True, kw_only=True)
class SetFault:
    kind: Literal["set_fault"] = "set_fault"
    backend: str
    fault: FaultSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearFault:
    kind: Literal["clear_fault"] = "clear_fault"
    backend: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetKill:
    kind: Literal["fleet_kill"] = "fleet_kill"
    backend: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetRestart:
    kind: Literal["fleet_restart"] = "fleet_restart"
    backend: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetKnobs:
    kind: Literal["fleet_knobs"] = "fleet_knobs"
    backend: str
    knobs: dict[str, float | int | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SetForward:
    """Shift a route's traffic between its groups (canary, blue/green): new forward weights by
    group name; groups left out keep theirs."""

    kind: Literal["set_forward"] = "set_forward"
    route: str
    weights: dict[str, Annotated[float, Field(ge=0, le=1000)]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Announce:
    """A sentence on the balancer's timeline, changing nothing: a chaos run says when it
    starts and ends, so every console and ``/api/v1/events`` see it, with its origin."""

    kind: Literal["announce"] = "announce"
    text: Annotated[str, Field(min_length=1, max_length=500)]


Action = Annotated[
    AddBackend
    | RemoveBackend
    | SetWeight
    | SetAdmin
    | SetAlgorithm
    | SetLimits
    | ForceBreaker
    | SetFault
    | ClearFault
    | FleetKill
    | FleetRestart
    | FleetKnobs
    | ReplicaKill
    | ReplicaRestart
    | StoreStop
    | StoreStart
    | SetForward
    | Announce,
    Field(discriminator="kind"),
]
"""Everything an operator (a console, the chaos runner, the admin API) can ask of a balancer,
tagged by ``kind``: what ``Control.act`` carries out on any ``Control``."""

ACTION_KINDS: dict[str, type[Any]] = {
    f.default: cls
    for cls in get_args(get_args(Action)[0])
    for f in dataclasses.fields(cls)
    if f.name == "kind" and isinstance(f.default, str)
}
"""Each action class by its ``kind`` tag (the admin API's ``POST /api/v1/actions``)."""

ActionResult = dict[str, float | int | bool] | None
"""What an action answers: a fleet backend's knobs after ``FleetKnobs``; None otherwise."""


# --- JSON --------------------------------------------------------------------------------------

_SNAPSHOT: TypeAdapter[Snapshot] = TypeAdapter(Snapshot)


@dataclass(frozen=True, slots=True)
class WireEvent:
    """An event as JSON carries it, the same in every version: the typed classes of
    ``lbtui.core.events`` go out through this form and come back through ``from_wire``."""

    id: int
    at: float
    wall: float
    kind: str
    backend: str | None
    message: str
    data: dict[str, EventFigure] = field(default_factory=dict)


def _wire(e: Event) -> WireEvent:
    return WireEvent(e.id, e.at, e.wall, str(e.kind), e.backend, e.message, e.data)


def _typed(w: WireEvent) -> Event:
    return from_wire(
        id=w.id,
        at=w.at,
        wall=w.wall,
        kind=w.kind,
        backend=w.backend,
        message=w.message,
        data=w.data,
    )


_EVENT: TypeAdapter[WireEvent] = TypeAdapter(WireEvent)
_EVENTS: TypeAdapter[list[WireEvent]] = TypeAdapter(list[WireEvent])
_ACTION: TypeAdapter[Action] = TypeAdapter(Action)
FAULT_SPEC: TypeAdapter[FaultSpec] = TypeAdapter(FaultSpec)


def event_to_json(event: Event) -> dict[str, Any]:
    data: dict[str, Any] = _EVENT.dump_python(_wire(event), mode="json")
    return data


def event_to_json_bytes(event: Event) -> bytes:
    return _EVENT.dump_json(_wire(event))


def events_to_json_bytes(events: list[Event]) -> bytes:
    return _EVENTS.dump_json([_wire(e) for e in events])


def event_from_json(data: Mapping[str, Any] | bytes | str) -> Event:
    """The typed event (an unknown kind: a ``GenericEvent``); pydantic ``ValidationError``
    when the common fields are wrong."""
    if isinstance(data, bytes | str):
        return _typed(_EVENT.validate_json(data))
    return _typed(_EVENT.validate_python(data))


def events_from_json(data: list[Any]) -> list[Event]:
    return [_typed(w) for w in _EVENTS.validate_python(data)]


def action_to_json(action: Action) -> dict[str, Any]:
    data: dict[str, Any] = _ACTION.dump_python(action, mode="json")
    return data


def action_from_json(data: Mapping[str, Any]) -> Action:
    """Validate an action (pydantic ``ValidationError`` names the wrong field)."""
    return _ACTION.validate_python(data)
