"""``/metrics``: Prometheus metrics read from the balancer's records at scrape time.

No second set of counters: every value is read from ``BackendRecord``, ``BalancerRecord``, the
breakers', outlier detector's and faults registry's stats, as they are at the scrape. One
function, :func:`families`, does that reading; two writers use it:

- :class:`BalancerCollector`, a prometheus-client custom collector (the pattern of its own
  process collector) yielding ``CounterMetricFamily`` / ``GaugeMetricFamily`` /
  ``HistogramMetricFamily``, registered in a private ``CollectorRegistry`` per balancer (two
  balancers in one process never share a metric) — for anyone who wants the registry;
- :func:`render`, which writes the text exposition format straight from the same families.
  prometheus-client builds a ``Sample`` per value and escapes every label of every sample
  (≈ 8 µs a sample, 30 ms for 100 backends' 4,000 samples, on the balancer's event loop);
  this writes the same bytes (the tests compare it with ``generate_latest``) in a fraction.

Naming follows Prometheus and the Traefik / HAProxy exporters: ``_total`` counters, base units
(``_seconds``, ``_bytes``), a ``backend`` label, states as one-hot gauges
(``lbtui_breaker_state{state="open"} 1``, like ``haproxy_server_status{state}``).

Latency buckets come from the record's log-bucketed histogram with the semantics of
``LatencyHistogram.cumulative`` (computed with one running sum of its counts): a sample counts
under a bound when its bucket's middle is at or below it, exact to the histogram's ±2.2 %.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from lbtui.balancer.pool import AdminState, Backend, Pool
from lbtui.balancer.proxy import Proxy
from lbtui.control.faults import FaultLink
from lbtui.control.snapshot import pool_views, worker_views
from lbtui.core.balance import Member
from lbtui.core.breaker import BreakerState
from lbtui.core.record import CODE_CLASSES, BackendRecord, FailureKind
from lbtui.core.window import N_BUCKETS, bucket_value

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BOUNDS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Histogram bounds: from half a millisecond (a proxy on loopback) to 30 s (a hung backend)."""
LIMIT_SCOPES = ("global", "client", "concurrency")
_BOUND_LABELS = tuple(f"{b:g}" for b in LATENCY_BOUNDS_S)
BOUND_CUTS = tuple(
    sum(1 for i in range(N_BUCKETS) if bucket_value(i) <= b) for b in LATENCY_BOUNDS_S
)
"""For each bound, how many of the histogram's buckets lie under it: the cumulative count at a
bound is then one index into the running sum of ``LatencyHistogram.counts``."""
_DOWN_STATES = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
_BREAKER_STATES = tuple(BreakerState)
_FAILURE_KINDS = tuple(FailureKind)


@dataclass(slots=True)
class Family:
    """One metric family as read from the records: ``values`` holds ``(label values, value)``
    for counters and gauges, and ``(label values, cumulative bucket counts, sum, count)`` in
    ``histograms`` for a histogram."""

    name: str
    """Without ``_total``: prometheus-client adds it to counters."""
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    values: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    histograms: list[tuple[tuple[str, ...], list[int], float, int]] = field(default_factory=list)


def families(proxy: Proxy, faults: FaultLink | None) -> list[Family]:
    """Every lbtui metric of ``proxy``, read now."""
    now = proxy.clock()
    backends = list(proxy.backends.values())
    per_backend = backend_families(proxy, backends, now)
    members = {b.name: member_now(proxy, b, now) for b in backends}
    return balancer_families(proxy, faults, per_backend, members)


def member_now(proxy: Proxy, b: Backend, now: float) -> Member:
    """What the balance figures (L, M) need of backend ``b`` now: its rates over the "now"
    window and whether it takes new requests (as ``lbtui_backend_up`` says, and as the pick
    decides while its pool panics). Read at every scrape: rates move with time alone."""
    rec = proxy.merged_backend_record(b)
    state = b.breaker.state if b.breaker is not None else BreakerState.DISABLED
    admitting = b.admin is AdminState.ACTIVE and state not in _DOWN_STATES
    rate, demand = rec.rps_and_demand(now)
    return Member(
        rate=rate,
        weight=b.weight,
        eligible=admitting and b.healthy() and not proxy.outliers.is_ejected(b.name, now),
        demand=demand,
        max_rps=b.max_rps,
        admitting=admitting,
    )


def pool_families(proxy: Proxy, members: Mapping[str, Member]) -> list[Family]:
    """L and M of each pool (the same computation as the state's ``pools``)."""
    pools = pool_views(proxy, members)
    imbalance = Family(
        "lbtui_imbalance",
        "gauge",
        "Imbalance L of each pool: sum over its eligible backends of |rate - weighted share| "
        "in requests per second, rates over the last second (0 = perfectly balanced).",
        ("pool",),
        [((p.name,), p.imbalance) for p in pools],
    )
    overload = Family(
        "lbtui_overloaded_backends",
        "gauge",
        "Overload M of each pool: eligible backends whose demand (requests sent plus picks "
        "their max_rps refused, over the last second) exceeds their max_rps.",
        ("pool",),
        [((p.name,), p.overload) for p in pools],
    )
    return [imbalance, overload]


GroupMemo = dict[str, tuple[int, tuple[tuple[int, ...], float, int, tuple[int, ...]]]]
"""Per backend, at its latency count: its cumulative counts at the bounds, latency sum and
count, and responses by class (a scraper that keeps it reads only the backends that moved);
tuples of numbers, which the garbage collector stops scanning, not lists it scans each time."""


def group_memo_entry(
    rec: BackendRecord, cumulative: Sequence[int]
) -> tuple[int, tuple[tuple[int, ...], float, int, tuple[int, ...]]]:
    """``GroupMemo``'s entry for a backend's record ``rec`` whose histogram's cumulative counts
    at the bounds are ``cumulative`` (the exposition, which writes them for the backend's own
    histogram, files them here too: the same sums are not taken twice a scrape)."""
    lat = rec.latency
    codes = tuple(rec.responses_total[1 : len(CODE_CLASSES) + 1])
    return lat.count, (tuple(cumulative), lat.sum, lat.count, codes)


def group_families(
    proxy: Proxy, memo: GroupMemo | None = None, pools: Sequence[Pool] | None = None
) -> list[Family]:
    """Responses and latency per target group: the sums of its members' records, read at the
    scrape (a backend in two groups counts in both; nothing is counted twice on the request
    path). A member costs its histogram's cumulative counts at the bounds (≈ 10 µs), unless
    ``memo`` holds them at its current count. ``pools``: those of the state unless given."""
    requests = Family(
        "lbtui_group_requests",
        "counter",
        "Responses from each target group's backends, by status class (the sum of its "
        "members' lbtui_requests_total).",
        ("group", "code_class"),
    )
    duration = Family(
        "lbtui_group_request_duration_seconds",
        "histogram",
        "Backend response time of each target group's attempts (its members' histograms summed).",
        ("group",),
    )
    cumulative: dict[str, tuple[tuple[int, ...], float, int, tuple[int, ...]]] = {}
    if memo is None:
        memo = {}
    for pool in proxy.state.pools if pools is None else pools:
        rows: list[tuple[tuple[int, ...], float, int, tuple[int, ...]]] = []
        for b in pool.backends:
            got = cumulative.get(b.name)
            if got is None:
                rec = proxy.merged_backend_record(b)
                lat = rec.latency
                kept = memo.get(b.name)
                if kept is not None and kept[0] == lat.count:
                    got = kept[1]
                else:
                    entry = group_memo_entry(rec, lat.at_cuts(BOUND_CUTS))
                    memo[b.name] = entry
                    got = entry[1]
                cumulative[b.name] = got
            rows.append(got)
        # column sums in C (zip over the rows), not a list rebuilt per member
        cums = (r[0] for r in rows)
        codes = (r[3] for r in rows)
        buckets = [sum(c) for c in zip(*cums, strict=True)] or [0] * len(BOUND_CUTS)
        responses = [sum(c) for c in zip(*codes, strict=True)] or [0] * len(CODE_CLASSES)
        total = sum(r[1] for r in rows)
        count = sum(r[2] for r in rows)
        name = pool.name
        requests.values += [((name, cls), responses[i]) for i, cls in enumerate(CODE_CLASSES)]
        duration.histograms.append(((name,), buckets, total, count))
    return [requests, duration]


Samples = tuple[
    list[tuple[tuple[str, ...], float]], list[tuple[tuple[str, ...], list[int], float, int]]
]
"""One backend's samples of one family: its ``values`` and ``histograms``."""
OUTCOMES: Final = (0, 1, 2, 3, 9, 10, 11)
"""Positions in ``backend_families`` of the families a backend's outcomes move (its record's);
the others move with its state (up, weight, ejection, breaker), which events announce."""


def outcome_samples(
    rec: BackendRecord, name: str, only: Collection[int] = OUTCOMES
) -> dict[int, Samples]:
    """Backend ``name``'s samples of the ``OUTCOMES`` families (or of those ``only``), read from
    its record ``rec``."""
    label = (name,)
    out: dict[int, Samples] = {}
    for k in only:
        if k == 0:
            responses = rec.responses_total
            out[0] = ([((name, c), responses[i + 1]) for i, c in enumerate(CODE_CLASSES)], [])
        elif k == 1:
            failures = rec.failures_total
            out[1] = ([((name, kind.value), failures[kind]) for kind in _FAILURE_KINDS], [])
        elif k == 2:
            lat = rec.latency
            out[2] = ([], [(label, lat.at_cuts(BOUND_CUTS), lat.sum, lat.count)])
        elif k == 3:
            out[3] = ([(label, rec.in_flight)], [])
        elif k == 9:
            out[9] = ([(label, rec.retries_total)], [])
        elif k == 10:
            out[10] = ([(label, rec.bytes_in_total)], [])
        elif k == 11:
            out[11] = ([(label, rec.bytes_out_total)], [])
    return out


def backend_families(proxy: Proxy, backends: Sequence[Backend], now: float) -> list[Family]:
    """The families labelled by backend, with the samples of ``backends`` (none: the empty
    families, for their names and help)."""
    requests = Family(
        "lbtui_requests",
        "counter",
        "Responses from each backend, by status class (one per attempt that got an answer).",
        ("backend", "code_class"),
    )
    failures = Family(
        "lbtui_upstream_failures",
        "counter",
        "Attempts that got no usable response from the backend, by kind.",
        ("backend", "kind"),
    )
    duration = Family(
        "lbtui_request_duration_seconds",
        "histogram",
        "Time from sending an attempt to its last response byte (or its failure).",
        ("backend",),
    )
    in_flight = Family(
        "lbtui_backend_in_flight", "gauge", "Attempts in flight on the backend.", ("backend",)
    )
    up = Family(
        "lbtui_backend_up",
        "gauge",
        "1 when the backend takes new requests: active, healthy, not ejected, breaker not open.",
        ("backend",),
    )
    weight = Family(
        "lbtui_backend_weight",
        "gauge",
        "Effective weight (0 unless active; ramped during slow start).",
        ("backend",),
    )
    ejected = Family("lbtui_backend_ejected", "gauge", "1 while passively ejected.", ("backend",))
    breaker = Family(
        "lbtui_breaker_state", "gauge", "Circuit breaker state, one-hot.", ("backend", "state")
    )
    opened = Family(
        "lbtui_breaker_opened",
        "counter",
        "Times the breaker tripped open by itself (operator forcing not counted).",
        ("backend",),
    )
    retries = Family(
        "lbtui_retries",
        "counter",
        "Attempts sent to the backend as a retry of a failed attempt elsewhere.",
        ("backend",),
    )
    bytes_in = Family(
        "lbtui_backend_request_bytes",
        "counter",
        "Request body bytes sent to the backend.",
        ("backend",),
    )
    bytes_out = Family(
        "lbtui_backend_response_bytes",
        "counter",
        "Response body bytes received from the backend.",
        ("backend",),
    )
    outliers = proxy.outliers
    for b in backends:
        name = b.name
        rec = proxy.merged_backend_record(b)
        label = (name,)
        rows = outcome_samples(rec, name)
        requests.values += rows[0][0]
        failures.values += rows[1][0]
        duration.histograms += rows[2][1]
        in_flight.values += rows[3][0]
        weight.values.append((label, b.weight))
        is_ejected = outliers.is_ejected(name, now)
        ejected.values.append((label, 1.0 if is_ejected else 0.0))
        state = b.breaker.state if b.breaker is not None else BreakerState.DISABLED
        for s in _BREAKER_STATES:
            breaker.values.append(((name, s.value), 1.0 if s is state else 0.0))
        if b.breaker is not None:
            opened.values.append((label, b.breaker.stats(now).times_opened))
        takes = (
            b.admin is AdminState.ACTIVE
            and b.healthy()
            and not is_ejected
            and state not in _DOWN_STATES
        )
        up.values.append((label, 1.0 if takes else 0.0))
        retries.values += rows[9][0]
        bytes_in.values += rows[10][0]
        bytes_out.values += rows[11][0]
    return [
        requests,
        failures,
        duration,
        in_flight,
        up,
        weight,
        ejected,
        breaker,
        opened,
        retries,
        bytes_in,
        bytes_out,
    ]


def balancer_families(
    proxy: Proxy,
    faults: FaultLink | None,
    per_backend: list[Family],
    members: Mapping[str, Member],
    group_memo: GroupMemo | None = None,
    groups: list[Family] | None = None,
) -> list[Family]:
    """Every family, with ``per_backend`` (from :func:`backend_families`) in their place;
    ``members`` (:func:`member_now` of every backend) give the pools' L and M;
    ``group_memo``: kept by a scraper across scrapes (:func:`group_families`); ``groups``:
    :func:`group_families`' families, when the caller has them."""
    injected = Family(
        "lbtui_faults_injected",
        "counter",
        "Requests a proxy-side fault was applied to, by backend and fault kind.",
        ("backend", "kind"),
    )
    if faults is not None:
        for (backend, fault_kind), n in sorted(faults.applied_totals().items()):
            injected.values.append(((backend, fault_kind), n))

    totals = proxy.merged_record()
    client = Family(
        "lbtui_client_responses",
        "counter",
        "Answers to clients, by status class (one per client request; 429s and fallbacks "
        "included).",
        ("code_class",),
        [((cls,), totals.responses_total[i + 1]) for i, cls in enumerate(CODE_CLASSES)],
    )
    client_in_flight = Family(
        "lbtui_client_in_flight",
        "gauge",
        "Client requests being handled.",
        (),
        [((), totals.in_flight)],
    )
    scopes = dict.fromkeys(LIMIT_SCOPES, 0) | totals.rate_limited_total
    limited = Family(
        "lbtui_rate_limited",
        "counter",
        "Requests refused with 429 by admission, by limit scope.",
        ("scope",),
        [((scope,), n) for scope, n in sorted(scopes.items())],
    )
    fallback = Family(
        "lbtui_fallback",
        "counter",
        "Fallback responses served, by reason.",
        ("reason",),
        [((reason,), n) for reason, n in sorted(totals.fallback_total.items())],
    )
    flags = Family(
        "lbtui_response_flags",
        "counter",
        "Client requests the balancer did not simply pass through, by response flag "
        "(retry_budget_exhausted, breaker_open, no_healthy_backend, ...).",
        ("flag",),
        [((flag,), n) for flag, n in sorted(totals.flags_total.items())],
    )
    client_retries = Family(
        "lbtui_client_retries",
        "counter",
        "Retries of client requests on another backend.",
        (),
        [((), totals.retries_total)],
    )
    events = Family(
        "lbtui_events",
        "counter",
        "Events emitted (breaker transitions, ejections, health flips, actions, ...).",
        (),
        [((), proxy.events.last_id)],
    )
    views = worker_views(proxy)
    worker_requests = Family(
        "lbtui_worker_requests",
        "counter",
        "Client requests taken by each process of a balancer with [listener] workers (0: the "
        "first; a restarted worker starts again from 0).",
        ("worker",),
        [((str(w.index),), w.requests_total) for w in views],
    )
    worker_up = Family(
        "lbtui_worker_up",
        "gauge",
        "1 while the process serves, 0 while it is being started again.",
        ("worker",),
        [((str(w.index),), 1.0 if w.alive else 0.0) for w in views],
    )
    store = proxy.state.limit_store
    store_up = Family(
        "lbtui_limit_store_up",
        "gauge",
        "1 while the limit store answers (always 1 for the memory store), 0 while it is lost "
        "and [limits] on_store_error decides.",
        (),
        [((), 0.0 if store is not None and not store.up else 1.0)],
    )
    store_peers = Family(
        "lbtui_limit_store_peers",
        "gauge",
        "Live replicas sharing the limit store, as last seen (1 for the memory store).",
        (),
        [((), float(len(store.peers)) if store is not None else 1.0)],
    )
    return [
        store_up,
        store_peers,
        worker_requests,
        worker_up,
        *listener_families(proxy),
        *per_backend,
        injected,
        *pool_families(proxy, members),
        *(group_families(proxy, group_memo) if groups is None else groups),
        client,
        client_in_flight,
        limited,
        fallback,
        flags,
        client_retries,
        events,
    ]


def listener_families(proxy: Proxy) -> list[Family]:
    """Each listener's open connections and WebSocket tunnels (this process's)."""
    infos = proxy.listeners.infos() if proxy.listeners is not None else []
    return [
        Family(
            "lbtui_listener_connections",
            "gauge",
            "Client connections open on each listener.",
            ("listener",),
            [((i.name,), float(i.connections)) for i in infos],
        ),
        Family(
            "lbtui_listener_tunnels",
            "gauge",
            "Upgraded connections (WebSocket) being tunnelled through each listener; each is "
            "also in flight on its backend.",
            ("listener",),
            [((i.name,), float(i.tunnels)) for i in infos],
        ),
        Family(
            "lbtui_listener_tunnels_closed",
            "counter",
            "Tunnels through each listener that have ended.",
            ("listener",),
            [((i.name,), float(i.tunnels_closed)) for i in infos],
        ),
    ]


class BalancerCollector(Collector):
    """Every lbtui metric of one balancer, as prometheus-client families, at each scrape."""

    def __init__(self, proxy: Proxy, faults: FaultLink | None = None) -> None:
        self.proxy = proxy
        self.faults = faults

    def collect(self) -> Iterator[Metric]:
        for fam in families(self.proxy, self.faults):
            metric: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
            if fam.kind == "histogram":
                metric = HistogramMetricFamily(fam.name, fam.help, labels=fam.labels)
                for values, buckets, total, count in fam.histograms:
                    pairs: list[tuple[str, float]] = list(zip(_BOUND_LABELS, buckets, strict=True))
                    pairs.append(("+Inf", count))
                    metric.add_metric(values, pairs, total)
                yield metric
                continue
            if fam.kind == "counter":
                metric = CounterMetricFamily(fam.name, fam.help, labels=fam.labels)
            else:
                metric = GaugeMetricFamily(fam.name, fam.help, labels=fam.labels)
            for values, value in fam.values:
                metric.add_metric(values, value)
            yield metric


def make_registry(proxy: Proxy, faults: FaultLink | None = None) -> CollectorRegistry:
    """A private registry holding only this balancer's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BalancerCollector(proxy, faults))
    return registry


def go_float(value: float) -> str:
    """A sample value as Prometheus (and ``prometheus_client.utils.floatToGoString``) write it."""
    if type(value) is int and 0 <= value < 1_000_000:  # a count: the common case
        return f"{value}.0"
    if value == 1.0:  # gauges and one-hot states
        return "1.0"
    if value == 0.0 and math.copysign(1.0, value) > 0:
        return "0.0"
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape(v: str) -> str:
    if "\\" not in v and "\n" not in v and '"' not in v:
        return v
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    """``{a="x",b="y"}`` with the labels sorted by name, as ``generate_latest`` writes them."""
    if not names:
        return ""
    pairs = sorted(zip(names, values, strict=True)) if len(names) > 1 else [(names[0], values[0])]
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def header_text(fam: Family) -> str:
    name = fam.name + "_total" if fam.kind == "counter" else fam.name
    doc = fam.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {fam.kind}\n"


Prefixes = dict[tuple[str, tuple[str, ...]], tuple[str, ...]]
"""Sample-line prefixes by (family, label values): what :func:`sample_text` may keep between
calls, so that a backend's lines are written again without escaping and sorting its labels."""


def sample_prefixes(fam: Family, name: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """Everything before the value on each line of ``fam``'s sample ``values``."""
    if fam.kind != "histogram":
        return (f"{name}{_label_text(fam.labels, values)} ",)
    inner = _label_text(fam.labels, values)[1:-1]
    sep = "," if inner else ""
    labels = "{" + inner + "}" if inner else ""
    bounds = (*_BOUND_LABELS, "+Inf")
    return (
        *(f'{name}_bucket{{{inner}{sep}le="{le}"}} ' for le in bounds),
        f"{name}_count{labels} ",
        f"{name}_sum{labels} ",
    )


def sample_text(fam: Family, cache: Prefixes | None = None) -> str:
    """The sample lines of ``fam``, without its header; ``cache`` keeps the line prefixes."""
    name = fam.name + "_total" if fam.kind == "counter" else fam.name
    prefixes: list[str] = []
    values: list[float] = []
    if fam.kind == "histogram":
        for labels, buckets, total, count in fam.histograms:
            key = (name, labels)
            pre = cache.get(key) if cache is not None else None
            if pre is None:
                pre = sample_prefixes(fam, name, labels)
                if cache is not None:
                    cache[key] = pre
            prefixes.extend(pre)
            values.extend(buckets)
            values += (count, count, total)
    else:
        for labels, value in fam.values:
            key = (name, labels)
            pre = cache.get(key) if cache is not None else None
            if pre is None:
                pre = sample_prefixes(fam, name, labels)
                if cache is not None:
                    cache[key] = pre
            prefixes.append(pre[0])
            values.append(value)
    return lines_text(prefixes, values)


def lines_text(prefixes: Sequence[str], values: Sequence[float]) -> str:
    """Sample lines: each of ``prefixes`` (from :func:`sample_prefixes`) with its value."""
    return "".join(
        [  # counts, the most of a backend's values, without a call each (go_float's first case)
            f"{p}{v}.0\n" if type(v) is int and 0 <= v < 1_000_000 else f"{p}{go_float(v)}\n"
            for p, v in zip(prefixes, values, strict=True)
        ]
    )


def render_families(fams: Sequence[Family]) -> bytes:
    """The text exposition format (``CONTENT_TYPE``) of ``fams``: the bytes prometheus-client's
    ``generate_latest`` writes for :class:`BalancerCollector`."""
    return "".join(header_text(f) + sample_text(f) for f in fams).encode()


def render(proxy: Proxy, faults: FaultLink | None = None) -> bytes:
    """``/metrics`` of ``proxy`` now, in the text exposition format (``CONTENT_TYPE``)."""
    return render_families(families(proxy, faults))
