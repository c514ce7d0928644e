"""Backends and pools.

A ``Backend`` is one server: its address, its configured and effective weight, its admin state
and its outcome record. A ``Pool`` is the set of backends one route balances over, with the
balancing algorithm that picks among them (each pool keeps its own algorithm state, as nginx
keeps one per ``upstream`` block).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from urllib.parse import urlsplit

from lbtui.config import BackendConfig
from lbtui.core.balancing import Balancer, make_balancer
from lbtui.core.record import BackendRecord


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
        "admin",
        "base_path",
        "configured_weight",
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
        self.record = BackendRecord()

    @classmethod
    def from_config(cls, c: BackendConfig) -> Backend:
        return cls(c.name, c.url, weight=c.weight, max_rps=c.max_rps, zone=c.zone)

    @property
    def weight(self) -> float:
        """Effective weight now: 0 unless the backend takes new traffic."""
        if self.admin is not AdminState.ACTIVE:
            return 0.0
        return self.configured_weight

    @property
    def in_flight(self) -> int:
        return self.record.in_flight

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, {self.url!r})"


class Pool:
    """The backends one route balances over, and the algorithm that picks among them."""

    __slots__ = ("algorithm", "backends", "balancer")

    def __init__(self, backends: Sequence[Backend], algorithm: str) -> None:
        self.backends: list[Backend] = list(backends)
        self.algorithm = algorithm
        self.balancer: Balancer[Backend] = make_balancer(algorithm, self.backends)

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
