"""Builds ``fixtures/snapshots/main.json`` (+ ``main.events.json``): four backends in the
states the console must explain — api-1 ejected, api-2 breaker open under an injected abort,
api-3 draining with requests left, api-4 slowed by a delay fault.

Run ``python -m tests.tui.recorded_fixture`` to rewrite the files after a model change;
``test_recorded.py`` checks that the files on disk are what this builds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lbtui.control.model import (
    BackendView,
    BalancerTotals,
    BreakerView,
    Event,
    EventKind,
    FaultKind,
    FaultSpec,
    FaultView,
    GenericEvent,
    HealthView,
    LimitsView,
    ProcessView,
    Snapshot,
    event_to_json,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "snapshots"
MAIN = FIXTURES / "main.json"
MAIN_EVENTS = FIXTURES / "main.events.json"

ABORT = FaultSpec(kind=FaultKind.ABORT, status=503, percent=60.0, duration_s=120.0)
DELAY = FaultSpec(kind=FaultKind.DELAY, ms=200.0, jitter_ms=50.0, percent=50.0)

AT = 5000.0
WALL = 1767268987.0  # 2026-01-01 12:03:07 UTC


def _series(base: float, amp: float, phase: float, tail: list[float] | None = None) -> list[float]:
    out = [round(max(0.0, base + amp * math.sin(i / 6 + phase)), 1) for i in range(60)]
    if tail:
        out[-len(tail) :] = tail
    return out


def _breaker(**kw: object) -> BreakerView:
    base: dict[str, object] = dict(
        state="closed",
        since=AT - 300,
        reason="initial state",
        window="count",
        window_size=20,
        calls=20,
        failures=0,
        slow_calls=0,
        failure_rate=0.0,
        slow_call_rate=0.0,
        failure_rate_threshold=50.0,
        slow_call_rate_threshold=100.0,
        slow_call_s=1.0,
        min_calls=10,
        retry_in_s=None,
        half_open_permits=None,
        times_opened=0,
    )
    base.update(kw)
    return BreakerView(**base)  # type: ignore[arg-type]


def _health(**kw: object) -> HealthView:
    base: dict[str, object] = dict(
        state="up",
        since=AT - 300,
        reason="2 consecutive checks passed",
        consecutive_successes=40,
        consecutive_failures=0,
        last_check_ok=True,
        last_check_detail="HTTP 200",
        slow_start_remaining_s=None,
        slow_start_factor=None,
    )
    base.update(kw)
    return HealthView(**base)  # type: ignore[arg-type]


def _backend(name: str, port: int, **kw: object) -> BackendView:
    base: dict[str, object] = dict(
        name=name,
        url=f"http://127.0.0.1:{port}",
        zone=None,
        admin="active",
        admin_since=0.0,
        health=_health(),
        ejected=False,
        ejected_until=None,
        ejection_reason="never ejected",
        times_ejected=0,
        breaker=_breaker(),
        weight_configured=1.0,
        weight_effective=1.0,
        max_rps=80.0,
        in_flight=1,
        open_connections=4,
        connections_source="connector",
        rps=50.0,
        rps_series=_series(50, 5, 0),
        p50_ms=3.2,
        p90_ms=6.0,
        p99_ms=11.8,
        p999_ms=19.5,
        error_ratio=0.0,
        bytes_per_s=51_200.0,
        requests_total=14_210,
        responses_total={"2xx": 14_210},
        failures_total={},
        retries_total=0,
        bytes_in_total=1_024_000,
        bytes_out_total=14_551_040,
        fault=None,
        process=ProcessView(
            pid=41_000 + port % 100, alive=True, cpu_percent=9.0, rss_bytes=38_600_000
        ),
        score=None,
    )
    base.update(kw)
    base.setdefault("demand_rps", base["rps"])  # nothing refused at a cap
    return BackendView(**base)  # type: ignore[arg-type]


def build_snapshot() -> Snapshot:
    backends = [
        _backend(
            "api-1",
            9101,
            ejected=True,
            ejected_until=AT + 42.3,
            ejection_reason="5 consecutive 5xx (2nd ejection, 60 s)",
            times_ejected=2,
            weight_effective=0.0,
            in_flight=0,
            open_connections=2,
            rps=0.0,
            rps_series=_series(45, 4, 1.0, [30.2, 12.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            p50_ms=2.9,
            p99_ms=14.2,
            error_ratio=0.31,
            responses_total={"2xx": 12_904, "5xx": 402},
            process=ProcessView(pid=41_001, alive=True, cpu_percent=1.0, rss_bytes=37_100_000),
        ),
        _backend(
            "api-2",
            9102,
            breaker=_breaker(
                state="open",
                since=AT - 4.8,
                reason="failure rate 62% >= 50% over 21 calls",
                calls=21,
                failures=13,
                failure_rate=61.9,
                retry_in_s=3.2,
                times_opened=3,
            ),
            weight_effective=1.0,
            in_flight=0,
            rps=2.1,
            rps_series=_series(48, 5, 2.0, [41.0, 38.2, 22.4, 6.0, 2.0, 2.1]),
            p50_ms=1.1,
            p99_ms=9.4,
            error_ratio=0.58,
            responses_total={"2xx": 9_350, "5xx": 1_322},
            fault=FaultView(
                spec=ABORT,
                description=ABORT.describe(),
                active=True,
                ended=None,
                set_at=AT - 36.0,
                remaining_s=84.0,
                requests=688,
                eligible=688,
                applied=412,
                applied_percent=412 * 100 / 688,
                client_observed={"503": 371, "200": 41},
            ),
            process=ProcessView(pid=41_002, alive=True, cpu_percent=4.0, rss_bytes=38_900_000),
        ),
        _backend(
            "api-3",
            9103,
            admin="draining",
            admin_since=AT - 12.0,
            weight_effective=0.0,
            in_flight=3,
            open_connections=3,
            rps=0.4,
            rps_series=_series(52, 4, 3.0, [49.0, 12.0, 0.4]),
            p50_ms=3.4,
            p99_ms=12.9,
            process=ProcessView(pid=41_003, alive=True, cpu_percent=3.0, rss_bytes=38_200_000),
        ),
        _backend(
            "api-4",
            9104,
            in_flight=14,
            open_connections=16,
            rps=96.3,
            rps_series=_series(60, 8, 4.0, [88.0, 92.1, 95.0, 96.3]),
            p50_ms=4.1,
            p90_ms=231.0,
            p99_ms=251.0,
            p999_ms=262.0,
            responses_total={"2xx": 18_112},
            fault=FaultView(
                spec=DELAY,
                description=DELAY.describe(),
                active=True,
                ended=None,
                set_at=AT - 61.0,
                remaining_s=None,
                requests=902,
                eligible=902,
                applied=455,
                applied_percent=455 * 100 / 902,
                client_observed={"200": 455},
            ),
            process=ProcessView(pid=41_004, alive=True, cpu_percent=23.0, rss_bytes=41_300_000),
        ),
    ]
    rates = [b.rps for b in backends]
    weights = [b.weight_effective for b in backends]
    total = sum(rates)
    imbalance = sum(abs(r - total * w / sum(weights)) for r, w in zip(rates, weights, strict=True))
    return Snapshot(
        at=AT,
        wall=WALL,
        algorithm="least_request",
        totals=BalancerTotals(
            rps=99.1,
            in_flight=18,
            code_rps={"2xx": 97.9, "5xx": 1.2},
            rate_limited_rps=0.0,
            fallback_rps=1.2,
            retries_rps=0.8,
            success_ratio=0.988,
            requests_total=55_990,
            responses_total={"2xx": 54_576, "5xx": 1_724, "4xx": 0},
            rate_limited_total={},
            fallback_total={"breaker_open": 96},
            retries_total=310,
            flags_total={"FI": 867, "UO": 96},
            rps_series=_series(190, 10, 0.5, [160.0, 130.0, 110.0, 99.1]),
        ),
        limits=LimitsView(
            config={
                "rps": 500.0,
                "burst": 1000.0,
                "per_client_rps": None,
                "per_client_burst": None,
                "client_key": "client_ip",
                "max_clients": 100_000,
                "max_in_flight": 256,
                "headers_on_success": False,
            },
            global_tokens=812.0,
            global_allowed_total=55_990,
            global_rejected_total=0,
            clients=0,
            client_rejected_total=0,
            client_evicted_total=0,
            in_flight=18,
            concurrency_rejected_total=0,
            peak_in_flight=41,
        ),
        imbalance=round(imbalance, 1),
        overload=sum(1 for b in backends if b.max_rps is not None and b.demand_rps > b.max_rps),
        panic=False,
        backends=backends,
        last_event_id=11,
    )


def build_events() -> list[Event]:
    rows: list[tuple[float, EventKind, str | None, str]] = [
        (-95.0, EventKind.CONFIG, None, "balancer started: 4 backends, least_request"),
        (-61.0, EventKind.FAULT, "api-4", "fault set: delay 200 ms ± 50 ms on 50 %"),
        (-48.0, EventKind.EJECTION, "api-1", "ejected: 5 consecutive 5xx (1st ejection, 30 s)"),
        (-18.0, EventKind.EJECTION, "api-1", "readmitted: ejection time over"),
        (-17.7, EventKind.EJECTION, "api-1", "ejected: 5 consecutive 5xx (2nd ejection, 60 s)"),
        (-36.0, EventKind.ACTION, "api-2", "fault set by operator: abort 503 on 60 % for 2 m"),
        (-12.0, EventKind.ACTION, "api-3", "drain by operator: no new requests"),
        (-6.5, EventKind.FALLBACK, "api-2", "fallback served: breaker open"),
        (-4.8, EventKind.BREAKER, "api-2", "closed → open: failure rate 62% >= 50% over 21 calls"),
        (-3.0, EventKind.RETRY_BUDGET, None, "retry budget exhausted: 20 % of 18 active"),
        (-1.0, EventKind.HEALTH, "api-4", "slow answers: check took 231 ms"),
    ]
    rows.sort(key=lambda r: r[0])
    return [
        GenericEvent(id=i + 1, at=AT + dt, wall=WALL + dt, name=kind, backend=backend, message=msg)
        for i, (dt, kind, backend, msg) in enumerate(rows)
    ]


def render_files() -> dict[Path, str]:
    return {
        MAIN: json.dumps(build_snapshot().to_json(), indent=1, ensure_ascii=False) + "\n",
        MAIN_EVENTS: json.dumps(
            [event_to_json(e) for e in build_events()], indent=1, ensure_ascii=False
        )
        + "\n",
    }


if __name__ == "__main__":
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for path, text in render_files().items():
        path.write_text(text)
        print(f"wrote {path}")
