"""Backends and pools.

A ``Backend`` is one server: its address, its configured and effective weight, its admin state
and its outcome record. A ``Pool`` is a target group (``[[groups]]``, a route's unnamed
``backends``, or ``default``): the backends it balances over, with the balancing algorithm
that picks among them (each pool keeps its own algorithm state, as nginx keeps one per
``upstream`` block), its sticky cookie and whether it stays in the balancer's zone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lbtui.config import BackendConfig, BreakerOverride, BreakerSettings
from lbtui.core.balancing import Balancer, make_balancer
from lbtui.core.breaker import BreakerConfig, CircuitBreaker
from lbtui.core.health import HealthState
from lbtui.core.limitstore import Bucket, LimitStore, MemoryLimits
from lbtui.core.record import BackendRecord

if TYPE_CHECKING:
    from lbtui.balancer.shared import SharedLimits


def breaker_config(
    settings: BreakerSettings,
    override: BackendConfig | None = None,
    group: BreakerOverride | None = None,
) -> BreakerConfig:
    """The core breaker config from ``[breaker]``, its group's changes to it and the
    backend's own (which win)."""
    values = settings.model_dump(exclude={"enabled", "failure_statuses"})
    if group is not None:
        values.update(group.model_dump(exclude_none=True, exclude={"enabled"}))
    if override is not None and override.breaker is not None:
        values.update(override.breaker.model_dump(exclude_none=True, exclude={"enabled"}))
    slow_ms = values.pop("slow_call_ms")
    return BreakerConfig(slow_call_s=slow_ms / 1e3, **values)


def cap_bucket(
    name: str,
    max_rps: float | None,
    now: float,
    shared: SharedLimits | None = None,
    store: LimitStore | None = None,
) -> Bucket | None:
    """The bucket that enforces backend ``name``'s ``max_rps`` (a small burst: a cap, not a
    quota); with ``shared``, one bucket for all the balancer's processes; with ``store`` (Redis),
    one bucket for every replica."""
    if max_rps is None:
        return None
    burst = max(2.0, max_rps / 10)
    if store is None:
        store = shared if shared is not None else MemoryLimits()
    return store.token_bucket(f"cap:{name}", max_rps, burst, now)


class AdminState(StrEnum):
    """What the operator asked of a backend."""

    ACTIVE = "active"
    """Takes traffic."""
    DRAINING = "draining"
    """Takes no new requests; in-flight ones finish."""
    DISABLED = "disabled"
    """Takes no traffic at all."""


class Backend:
    """One backend server and everything known about it."""

    __slots__ = (
        "_weight",
        "admin",
        "admin_since",
        "base_path",
        "breaker",
        "breaker_enabled",
        "cap",
        "configured_weight",
        "health",
        "host",
        "max_rps",
        "name",
        "port",
        "record",
        "url",
        "zone",
    )

    def __init__(
        self,
        name: str,
        url: str,
        *,
        weight: float = 1.0,
        max_rps: float | None = None,
        zone: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.name = name
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.configured_weight = float(weight)
        self.max_rps = max_rps
        self.zone = zone
        self.admin = AdminState.ACTIVE
        self.admin_since = 0.0
        self.record = BackendRecord()
        self.breaker: CircuitBreaker | None = None
        self.breaker_enabled = False
        self.cap: Bucket | None = None
        self.health: HealthState | None = None
        self._weight = self.configured_weight

    @classmethod
    def from_config(cls, c: BackendConfig) -> Backend:
        return cls(c.name, c.url, weight=c.weight, max_rps=c.max_rps, zone=c.zone)

    @property
    def weight(self) -> float:
        """Effective weight now: 0 unless the backend takes new traffic; ramped in slow start.

        Cached: ``refresh(now)`` recomputes it (the proxy ticks it a few times a second and on
        every change), so the algorithms read a plain attribute on the hot path."""
        return self._weight

    def refresh(self, now: float) -> None:
        if self.admin is not AdminState.ACTIVE:
            self._weight = 0.0
        elif self.health is not None:
            self._weight = self.configured_weight * self.health.weight_factor(now)
        else:
            self._weight = self.configured_weight

    def healthy(self) -> bool:
        """Not known to be down by active checks."""
        return self.health is None or self.health.is_up

    @property
    def in_flight(self) -> int:
        return self.record.in_flight

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, {self.url!r})"


def sticky_id(name: str) -> str:
    """The sticky cookie's value for backend ``name``: opaque, stable across restarts."""
    return hashlib.blake2s(name.encode(), digest_size=8).hexdigest()


class Pool:
    """A target group: the backends it balances over, and the algorithm that picks among them."""

    __slots__ = (
        "algorithm",
        "backends",
        "balancer",
        "name",
        "own_algorithm",
        "panic",
        "spilling",
        "sticky_cookie",
        "sticky_ids",
        "sticky_ttl_s",
        "zone",
        "zone_degraded",
    )

    def __init__(
        self,
        backends: Sequence[Backend],
        algorithm: str,
        *,
        name: str = "default",
        own_algorithm: bool = False,
        sticky_cookie: str | None = None,
        sticky_ttl_s: float = 0.0,
        zone: str | None = None,
    ) -> None:
        self.name = name
        self.backends: list[Backend] = list(backends)
        self.panic = False
        """Too few backends are available: health and ejection are ignored (Envoy)."""
        self.algorithm = algorithm
        self.own_algorithm = own_algorithm
        """Its algorithm was configured for it: ``set_algorithm`` on the balancer leaves it."""
        self.balancer: Balancer[Backend] = make_balancer(algorithm, self.backends)
        self.sticky_cookie = sticky_cookie
        """The cookie that keeps a client on one backend (None: no stickiness)."""
        self.sticky_ttl_s = sticky_ttl_s
        self.sticky_ids: dict[str, Backend] = {}
        self.zone = zone
        """The zone it stays in while that zone has eligible backends (``cross_zone = false``);
        None: it balances across zones."""
        self.spilling = False
        """It has no eligible backend in ``zone`` and sends to the other zones."""
        self.zone_degraded = False
        """Too few of its backends in ``zone`` are available: it spills (``zones.py``)."""
        self.reindex()

    def reindex(self) -> None:
        """The members by sticky cookie value (after a change of members or of cookie)."""
        self.sticky_ids = (
            {sticky_id(b.name): b for b in self.backends} if self.sticky_cookie is not None else {}
        )

    def pick(
        self, now: float, key: str | None, eligible: Callable[[Backend], bool] | None
    ) -> Backend | None:
        return self.balancer.pick(now, key, eligible)

    def set_algorithm(self, algorithm: str) -> None:
        self.balancer = make_balancer(algorithm, self.backends)
        self.algorithm = algorithm

    def set_backends(self, backends: Sequence[Backend]) -> None:
        self.backends = list(backends)
        self.balancer.update(self.backends)
        self.reindex()
