"""``PrometheusControl``: the console, read-only, on any balancer whose metrics a Prometheus
scrapes — how people watch an Envoy or a Traefik they cannot reach directly.

``lbtui attach prometheus+http://HOST:9090 --preset haproxy|envoy|traefik|lbtui`` asks the
preset's instant queries (``presets.py``) at each refresh, concurrently, through Prometheus's
HTTP API (``/api/v1/query``), and builds the same rows: per-backend rate, error share,
p50/p99 where histograms exist, up/down, in-flight and weight where the balancer exports them.
Rates are over the preset's window (Prometheus needs several scrapes in a ``rate``), and the
snapshot's ``windows`` say so, so the console's headers read ``req/s 30s``.

Prometheus keeps no events; a row that flips ``up`` between two reads, appears or vanishes
becomes one on this console's timeline. Every action is refused (``ReadOnly``): Prometheus
only watches. A query Prometheus rejects (a typo in a ``--query`` file) comes back as
``Unavailable`` naming the figure and Prometheus's error, which the console shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from lbtui.control.errors import ReadOnly, Unavailable
from lbtui.control.model import (
    Action,
    ActionResult,
    AdminState,
    BackendAdded,
    BackendRemoved,
    BackendView,
    BalancerTotals,
    ConfigNote,
    Event,
    FrontendView,
    HealthChanged,
    HealthView,
    LimitsView,
    PoolView,
    Snapshot,
    Windows,
)
from lbtui.core.balance import Member, pool_imbalance
from lbtui.sources.presets import FIGURES, Preset
from lbtui.sources.timeline import PolledTimeline

EVENT_POLL_S = 1.0
MIN_READ_INTERVAL_S = 0.2
SERIES_LEN = 60
READ_ONLY = "Prometheus only watches: steer the balancer itself (or attach to it directly)"

Vector = dict[str, float | None]
"""A query's answer: the value by row name."""


class PrometheusControl:
    """See, never steer, a balancer through the Prometheus that scrapes it."""

    read_only = True

    def __init__(
        self,
        url: str,
        preset: Preset,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.base_url = url.removeprefix("prometheus+").rstrip("/")
        self.preset = preset
        self._clock = clock
        self._wall = wall_clock
        self._http = httpx.AsyncClient(timeout=timeout_s, trust_env=False)
        self.timeline = PolledTimeline(
            self.snapshot, EVENT_POLL_S, clock=clock, wall_clock=wall_clock
        )
        self.ring = self.timeline.ring
        self._up: dict[str, bool] | None = None
        self._since: dict[str, float] = {}
        self._series: dict[str, deque[float]] = {}
        self._second = -1
        self._last: Snapshot | None = None
        self._read_at = -1e18
        self._lock = asyncio.Lock()

    def describe_target(self) -> str:
        return self.url

    # --- reading

    async def _query(self, figure: str, labels: tuple[str, ...]) -> tuple[Vector, dict[str, str]]:
        """The figure's values by row, and each row's ``state`` label (for ``status``)."""
        query = self.preset.query(figure)
        if query is None:
            return {}, {}
        try:
            resp = await self._http.get(f"{self.base_url}/api/v1/query", params={"query": query})
            body: Any = resp.json()
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"Prometheus at {self.base_url} unreachable: {exc or type(exc).__name__}"
            ) from None
        except ValueError:
            raise Unavailable(f"Prometheus at {self.base_url}: not a JSON answer") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise Unavailable(
                f"Prometheus refused the {figure!r} query: {error or resp.status_code}"
            )
        values: Vector = {}
        states: dict[str, str] = {}
        for item in body.get("data", {}).get("result", []):
            metric = item.get("metric", {})
            parts = [metric[label] for label in labels if label in metric]
            if not parts:
                continue
            name = "/".join(parts)
            try:
                value: float | None = float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                value = None
            if value is not None and not math.isfinite(value):
                value = None
            values[name] = value
            if "state" in metric:
                states[name] = str(metric["state"])
        return values, states

    async def snapshot(self) -> Snapshot:
        async with self._lock:
            now = self._clock()
            if self._last is not None and now - self._read_at < MIN_READ_INTERVAL_S:
                return dataclasses.replace(self._last, last_event_id=self.ring.last_id)
            p = self.preset
            answers = await asyncio.gather(
                *(
                    self._query(f, p.frontend_labels if f.startswith("frontend_") else p.labels)
                    for f in FIGURES
                )
            )
            got = {f: a[0] for f, a in zip(FIGURES, answers, strict=True)}
            states = answers[FIGURES.index("status")][1]
            now = self._clock()
            snap = self._build(got, states, now)
            self._last = dataclasses.replace(snap, last_event_id=self.ring.last_id)
            self._read_at = now
            return self._last

    def _build(self, got: dict[str, Vector], states: dict[str, str], now: float) -> Snapshot:
        names = sorted(set(got["rps"]) | set(got["up"]) | set(got["requests_total"]))
        second = int(now)
        new_second = second != self._second
        self._second = second
        up_now: dict[str, bool] = {}
        backends: list[BackendView] = []
        for name in names:
            view = self._row(name, got, states, now, new_second)
            backends.append(view)
            up_now[name] = view.health is None or view.health.state == "up"
        self._events(up_now)
        frontends = [
            FrontendView(
                name=name,
                status="—",
                rps=got["frontend_rps"].get(name) or 0.0,
                connections=int(got["frontend_connections"].get(name) or 0),
                connection_rate=0.0,
                error_ratio=0.0,
                requests_total=0,
            )
            for name in sorted(set(got["frontend_rps"]) | set(got["frontend_connections"]))
        ]
        members = [Member(b.rps, b.weight_effective, b.eligible) for b in backends]
        imbalance = pool_imbalance(members)
        rps = sum(b.rps for b in backends)
        errors = sum(b.error_ratio * b.rps for b in backends)
        totals = BalancerTotals(
            rps=rps,
            in_flight=sum(b.in_flight for b in backends),
            code_rps={},
            rate_limited_rps=0.0,
            fallback_rps=0.0,
            retries_rps=0.0,
            success_ratio=1.0 - errors / rps if rps > 0 else 1.0,
            requests_total=sum(b.requests_total for b in backends),
            responses_total={},
            rate_limited_total={},
            fallback_total={},
            retries_total=0,
            flags_total={},
            rps_series=[rps],
        )
        window = self.preset.window_s
        return Snapshot(
            at=now,
            wall=self._wall(),
            algorithm="—",
            totals=totals,
            limits=LimitsView({}, None, 0, 0, 0, 0, 0, 0, 0, 0),
            imbalance=imbalance,
            overload=0,
            panic=False,
            backends=backends,
            last_event_id=0,
            pools=[
                PoolView(
                    name=self.preset.name,
                    route=None,
                    backends=names,
                    eligible=[b.name for b in backends if b.eligible],
                    panic=False,
                    rps=sum(b.rps for b in backends if b.eligible),
                    imbalance=imbalance,
                    overload=0,
                )
            ],
            windows=Windows(rate_s=window, quantile_s=window, min_quantile_samples=1),
            source=f"prometheus:{self.preset.name}",
            frontends=frontends,
            unavailable={},
        )

    def _row(
        self, name: str, got: dict[str, Vector], states: dict[str, str], now: float, tick: bool
    ) -> BackendView:
        def figure(key: str) -> float | None:
            return got[key].get(name)

        rps = figure("rps") or 0.0
        errors = figure("error_rps") or 0.0
        up_value = figure("up")
        up = None if name not in got["up"] else bool(up_value)
        state = states.get(name, "")
        admin: AdminState = {"MAINT": "disabled", "DRAIN": "draining"}.get(state, "active")  # type: ignore[assignment]
        if up is not None and (name not in self._since or (self._up or {}).get(name) != up):
            self._since[name] = now
        health = None
        if up is not None:
            health = HealthView(
                state="up" if up else "down",
                since=self._since.get(name, now),
                reason=f"{state or ('up' if up else 'down')} per Prometheus",
                consecutive_successes=0,
                consecutive_failures=0,
                last_check_ok=None,
                last_check_detail="",
                slow_start_remaining_s=None,
                slow_start_factor=None,
            )
        weight = figure("weight")
        configured = 1.0 if weight is None else weight
        takes = up is not False and admin == "active"
        series = self._series.setdefault(name, deque(maxlen=SERIES_LEN - 1))
        if tick:
            series.append(rps)
        return BackendView(
            name=name,
            url="",
            zone=None,
            admin=admin,
            admin_since=0.0,
            health=health,
            ejected=False,
            ejected_until=None,
            ejection_reason="",
            times_ejected=0,
            breaker=None,
            weight_configured=configured,
            weight_effective=configured if takes else 0.0,
            max_rps=None,
            in_flight=int(figure("in_flight") or 0),
            open_connections=int(figure("in_flight") or 0),
            connections_source="in_flight",
            rps=rps,
            rps_series=[*series, rps],
            p50_ms=figure("p50_ms"),
            p90_ms=None,
            p99_ms=figure("p99_ms"),
            p999_ms=None,
            error_ratio=min(1.0, errors / rps) if rps > 0 else 0.0,
            bytes_per_s=0.0,
            requests_total=int(figure("requests_total") or 0),
            responses_total={},
            failures_total={},
            retries_total=0,
            bytes_in_total=0,
            bytes_out_total=0,
            fault=None,
            process=None,
            score=None,
            demand_rps=rps,
            eligible=takes,
        )

    def _events(self, up_now: dict[str, bool]) -> None:
        before = self._up
        self._up = up_now
        if before is None:
            self._emit(
                ConfigNote(
                    message=f"reading {len(up_now)} backends from Prometheus at "
                    f"{self.base_url} (preset {self.preset.name}, rates over "
                    f"{self.preset.window})"
                )
            )
            return
        for name, up in up_now.items():
            if name not in before:
                self._emit(BackendAdded(backend=name, message="new in Prometheus's series"))
            elif before[name] != up:
                old, new = ("up", "down") if not up else ("down", "up")
                self._emit(
                    HealthChanged(
                        backend=name,
                        old=old,
                        new=new,
                        message=f"{old} → {new} per Prometheus ({self.preset.name} 'up' query)",
                        origin="prometheus",
                    )
                )
        for name in before:
            if name not in up_now:
                self._emit(BackendRemoved(backend=name, message="gone from Prometheus's series"))

    def _emit(self, event: Event) -> None:
        self.timeline.emit(event)

    async def events(self, since_id: int = 0) -> list[Event]:
        return self.ring.since(since_id)

    def stream_events(self, since_id: int = 0) -> AsyncIterator[Event]:
        """Events above ``since_id``, then each new one: the source is read every
        ``EVENT_POLL_S`` while the stream is followed (a read the snapshot poll made counts)."""
        return self.timeline.follow(since_id)

    async def act(self, action: Action) -> ActionResult:
        raise ReadOnly(READ_ONLY)

    async def aclose(self) -> None:
        await self._http.aclose()
