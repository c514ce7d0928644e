"""Where limiter state is kept, and the one arithmetic every keeper runs on it.

The limiters of ``lbtui.core.limiting`` keep their state in this process's memory. With several
processes serving one balancer the same limits must hold over all of them, so the state moves
out: to a shared-memory zone (``lbtui.balancer.shared``), or to Redis for several balancers
(``lbtui.balancer.redis_store``: decided locally, settled in one Lua call a few times a
second). :class:`LimitStore` is that seam, as ``limits`` puts a storage under each strategy:
a store makes the three limiters (:class:`Bucket`, :class:`KeyedBuckets`,
:class:`Concurrency`); :class:`MemoryLimits` is this process's. A store keeps numbers and
makes a read-decide-write atomic; the deciding is :class:`Gcra`'s, here in the core, on the
one float a bucket is (its theoretical arrival time ``tat``, see ``limiting``).

``tests/unit/test_limit_stores.py`` runs one contract over every store.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Final, Protocol

from lbtui.core.limiting import (
    EPS,
    BucketStats,
    ConcurrencyLimit,
    ConcurrencyStats,
    KeyedLimiter,
    KeyedStats,
    RateLimitDecision,
    TokenBucket,
    check_rate_burst,
)

__all__ = [
    "REFUSED",
    "Bucket",
    "Concurrency",
    "Gcra",
    "KeyedBuckets",
    "LimitStore",
    "MemoryLimits",
]

REFUSED: Final = -math.inf
"""What :meth:`Gcra.take` returns for a request it refuses (no ``tat`` is ever -inf)."""


class Gcra:
    """The GCRA arithmetic of one ``(rate, burst)``, on a ``tat`` kept elsewhere.

    What every store runs on the one float it keeps per bucket (``TokenBucket`` in memory, the
    shared-memory zone of ``lbtui.balancer.shared``): the algorithm lives here once, the stores
    only keep ``tat`` and make a read-decide-write atomic."""

    __slots__ = ("burst", "interval", "limit", "rate", "tau")

    def __init__(self, rate: float, burst: float) -> None:
        check_rate_burst(rate, burst)
        self.rate = float(rate)
        self.burst = float(burst)
        self.interval = 1.0 / self.rate
        self.tau = self.burst / self.rate
        self.limit = self.tau + EPS

    def take(self, tat: float, now: float, cost: float) -> float:
        """The ``tat`` after admitting ``cost`` now, or :data:`REFUSED`."""
        new = (tat if tat > now else now) + cost * self.interval
        return new if new - now <= self.limit else REFUSED

    def peek(self, tat: float, now: float, cost: float) -> bool:
        return (tat if tat > now else now) + cost * self.interval - now <= self.limit

    def retry_after(self, tat: float, now: float, cost: float) -> float:
        if cost > self.burst:
            return math.inf
        wait = tat - now + cost * self.interval - self.tau
        return wait if wait > EPS else 0.0

    def reset_after(self, tat: float, now: float) -> float:
        wait = tat - now
        return wait if wait > EPS else 0.0

    def tokens(self, tat: float, now: float) -> float:
        debt = tat - now
        if debt <= 0:
            return self.burst
        left = self.burst - debt * self.rate
        return left if left > EPS else 0.0

    def decision(self, allowed: bool, tat: float, now: float, cost: float) -> RateLimitDecision:
        """What the response headers need after a decision left the bucket at ``tat``."""
        debt = tat - now
        if debt <= EPS:  # full: only a cost above the burst is refused
            return RateLimitDecision(allowed, self.burst, 0.0, 0.0 if allowed else math.inf)
        left = self.burst - debt * self.rate
        return RateLimitDecision(
            allowed,
            left if left > EPS else 0.0,
            debt,
            0.0 if allowed else self.retry_after(tat, now, cost),
        )

    def rescaled(self, tat: float, now: float, new: Gcra) -> float:
        """The ``tat`` under ``new`` settings that keeps the tokens held (capped to its burst)."""
        held = min(self.tokens(tat, now), new.burst)
        return now + (new.burst - held) / new.rate


class Bucket(Protocol):
    """A token bucket, wherever its state is kept (``TokenBucket``: this process's memory)."""

    @property
    def rate(self) -> float: ...

    @property
    def burst(self) -> float: ...

    def allow(self, now: float, cost: float = 1.0) -> bool: ...

    def decide(self, now: float, cost: float = 1.0) -> RateLimitDecision: ...

    def peek(self, now: float, cost: float = 1.0) -> bool: ...

    def tokens(self, now: float) -> float: ...

    def reconfigure(self, rate: float, burst: float, now: float) -> None: ...

    def stats(self, now: float) -> BucketStats: ...


class KeyedBuckets(Protocol):
    """One bucket per client key, wherever kept (``KeyedLimiter``: this process's memory)."""

    @property
    def rate(self) -> float: ...

    @property
    def burst(self) -> float: ...

    def __len__(self) -> int: ...

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool: ...

    def decide(self, key: Hashable, now: float, cost: float = 1.0) -> RateLimitDecision: ...

    def remaining(self, key: Hashable, now: float) -> float: ...

    def sweep(self, now: float) -> int: ...

    def reconfigure(self, rate: float, burst: float, now: float) -> None: ...

    def stats(self, now: float) -> KeyedStats: ...


class Concurrency(Protocol):
    """A cap on requests in flight, wherever counted (``ConcurrencyLimit``: this process)."""

    @property
    def max_in_flight(self) -> int | None: ...

    @property
    def in_flight(self) -> int: ...

    def try_acquire(self) -> bool: ...

    def peek(self) -> bool: ...

    def release(self) -> None: ...

    def reconfigure(self, max_in_flight: int | None) -> None: ...

    def stats(self) -> ConcurrencyStats: ...


class LimitStore(Protocol):
    """Where limiter state is kept: :class:`MemoryLimits` (one process), the shared-memory zone
    (``lbtui.balancer.shared.SharedLimits``, several processes of one balancer), Redis
    (``lbtui.balancer.redis_store.RedisLimits``, several balancers: this GCRA in Lua). The
    algorithms stay here, in the core."""

    def token_bucket(self, name: str, rate: float, burst: float, now: float) -> Bucket: ...

    def keyed_limiter(self, rate: float, burst: float, *, max_keys: int) -> KeyedBuckets: ...

    def concurrency_limit(self, max_in_flight: int | None) -> Concurrency: ...


class MemoryLimits:
    """The limiters in this process's memory."""

    def token_bucket(self, name: str, rate: float, burst: float, now: float) -> TokenBucket:
        return TokenBucket(rate, burst, now)

    def keyed_limiter(self, rate: float, burst: float, *, max_keys: int) -> KeyedLimiter:
        return KeyedLimiter(rate, burst, max_keys=max_keys)

    def concurrency_limit(self, max_in_flight: int | None) -> ConcurrencyLimit:
        return ConcurrencyLimit(max_in_flight)
