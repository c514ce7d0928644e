"""Where limiter state is kept, and the one arithmetic every keeper runs on it.

The limiters of ``lbtui.core.limiting`` keep their state in this process's memory. With several
processes serving one balancer the same limits must hold over all of them, so the state moves
out: to a shared-memory zone (``lbtui.balancer.shared``), or to Redis for several balancers
(``lbtui.balancer.redis_store``: decided locally, settled in one Lua call a few times a
second). :class:`LimitStore` is that seam, as ``limits`` puts a storage under each strategy:
a store makes the three limiters (:class:`Bucket`, :class:`KeyedBuckets`,
:class:`Concurrency`); :class:`MemoryLimits` is this process's. A store keeps numbers and
makes a read-decide-write atomic; the deciding is :class:`Gcra`'s (``limiting``, where the
memory limiters run on it too; named here as well for the stores), on the one float a bucket
is (its theoretical arrival time ``tat``).

``tests/unit/test_limit_stores.py`` runs one contract over every store.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from lbtui.core.limiting import (
    REFUSED,
    BucketStats,
    ConcurrencyLimit,
    ConcurrencyStats,
    Gcra,
    KeyedLimiter,
    KeyedStats,
    RateLimitDecision,
    TokenBucket,
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
