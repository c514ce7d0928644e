"""Buckets decided here and settled with a shared store a few times a second.

A replica cannot wait for Redis on every request: one ``EVALSHA`` through redis-py's asyncio
client costs a few hundred microseconds of CPU and a network round trip (``bench/limitstore.py``
measures it beside this), against a budget of 15 µs a request. So each replica decides on a
local copy of every bucket, with the core's :class:`~lbtui.core.limitstore.Gcra` arithmetic, and
every ``store_sync_ms`` sends the store what it admitted since the last time (one script call
settles every bucket, a few hundred keys a call, the calls pipelined: one round trip). The store
adds that cost to the one shared bucket whatever it holds (the requests were served: the debt is
real), and answers with how far the shared bucket is behind now; the local copy takes that debt,
plus whatever it admitted while the answer travelled. This is the "sync the counter, decide
locally" scheme of Envoy's local rate limit with a global quota and of Kong's ``sync_rate``.

What it costs in accuracy: between two settlements every replica may spend what it believed the
shared bucket held, so N replicas can admit up to (N − 1) × (tokens seen + rate × sync period)
more than one bucket in one period. The overshoot is charged to the shared bucket, so the
replicas then refuse until it is paid back: over any span longer than a few periods the total
stays within one period's worth of one bucket (``tests/unit/test_synced_limits.py`` holds three
replicas to 10 %, ``bench/limitstore.py`` measures it against a real Redis).

While the store does not answer, a :class:`Link` says what to do (``[limits] on_store_error``):
admit all, refuse all, or decide on a bucket of the limit divided by the live replicas last
seen (``local``, the default). What was admitted during the outage is not sent when the store
comes back: the shared bucket has refilled meanwhile and sending it would only starve everyone.

No I/O here and no clock: the store (``redis_store.py``) reads the time and does the talking.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Final

from lbtui.core.limiting import BucketStats, KeyedStats, RateLimitDecision
from lbtui.core.limitstore import REFUSED, Gcra

__all__ = ["ALLOW", "DENY", "LOCAL", "SYNCED", "Link", "SyncedBucket", "SyncedKeys"]

SYNCED: Final = 0
"""The store answers: decide on the local copy of the shared bucket."""
ALLOW: Final = 1
DENY: Final = 2
LOCAL: Final = 3
"""The store is lost: decide on this replica's share of the limit."""

MODES: Final = {"allow": ALLOW, "deny": DENY, "local": LOCAL}
"""``on_store_error`` → the mode while the store is lost."""

DENY_RETRY_S: Final = 1.0
"""``Retry-After`` while ``on_store_error = "deny"`` refuses: the store is retried that often."""


class Link:
    """What every bucket of one store reads on each decision: whether the store answers, and
    how many replicas share the limits."""

    __slots__ = ("mode", "peers")

    def __init__(self) -> None:
        self.mode = SYNCED
        self.peers = 1
        """Live replicas last seen (this one included); never below 1."""

    def arithmetic(self, full: Gcra) -> Gcra:
        """What a bucket of limit ``full`` decides on in this mode: this replica's share of it
        while the store is lost in ``local`` mode, else the whole limit."""
        return share(full, self.peers) if self.mode == LOCAL else full


def share(gcra: Gcra, peers: int) -> Gcra:
    """One replica's share of a limit among ``peers``: rate and burst divided (burst at least
    one request)."""
    if peers <= 1:
        return gcra
    return Gcra(gcra.rate / peers, max(1.0, gcra.burst / peers))


class SyncedBucket:
    """A token bucket (``lbtui.core.limitstore.Bucket``) decided here, settled with the store."""

    __slots__ = ("_allowed", "_full", "_g", "_link", "_pending", "_rejected", "_tat", "key")

    def __init__(self, key: str, rate: float, burst: float, now: float, link: Link) -> None:
        self.key = key
        """The bucket's key in the store."""
        self._full = self._g = Gcra(rate, burst)
        self._link = link
        self._tat = now
        self._pending = 0.0
        """Cost admitted here and not yet sent to the store."""
        self._allowed = 0
        self._rejected = 0

    @property
    def rate(self) -> float:
        return self._full.rate

    @property
    def burst(self) -> float:
        return self._full.burst

    def decide(self, now: float, cost: float = 1.0) -> RateLimitDecision:
        mode = self._link.mode
        if mode == ALLOW:
            self._allowed += 1
            return RateLimitDecision(True, self._full.burst, 0.0, 0.0)
        if mode == DENY:
            self._rejected += 1
            return RateLimitDecision(False, 0.0, DENY_RETRY_S, DENY_RETRY_S)
        g = self._g
        new = g.take(self._tat, now, cost)
        if new == REFUSED:
            self._rejected += 1
            return g.decision(False, self._tat, now, cost)
        self._tat = new
        if mode == SYNCED:
            self._pending += cost
        self._allowed += 1
        return g.decision(True, new, now, cost)

    def allow(self, now: float, cost: float = 1.0) -> bool:
        return self.decide(now, cost).allowed

    def peek(self, now: float, cost: float = 1.0) -> bool:
        mode = self._link.mode
        if mode in (ALLOW, DENY):
            return mode == ALLOW
        return self._g.peek(self._tat, now, cost)

    def tokens(self, now: float) -> float:
        return self._g.tokens(self._tat, now)

    def stats(self, now: float) -> BucketStats:
        return BucketStats(
            self._full.rate, self._full.burst, self.tokens(now), self._allowed, self._rejected
        )

    def reconfigure(self, rate: float, burst: float, now: float) -> None:
        full = Gcra(rate, burst)
        g = self._link.arithmetic(full)
        self._tat = self._g.rescaled(self._tat, now, g)
        self._full, self._g = full, g

    # -- the store's side --------------------------------------------------------------------

    def take_pending(self) -> float:
        """The cost to send now (zeroed: what is admitted from here on goes next time)."""
        cost, self._pending = self._pending, 0.0
        return cost

    def settle(self, debt: float, now: float) -> None:
        """The store's answer: the shared bucket is ``debt`` seconds behind now (≤ 0: full)."""
        base = now + debt if debt > 0 else now
        self._tat = base + self._pending * self._g.interval

    def degrade(self, now: float) -> None:
        """The store is lost: in ``local`` mode decide on this replica's share from now."""
        g = self._link.arithmetic(self._full)
        self._tat = self._g.rescaled(self._tat, now, g)
        self._g = g
        self._pending = 0.0

    def restore(self, now: float) -> None:
        """The store is back: the full bucket again; the next settlement brings the debt."""
        self._tat = self._g.rescaled(self._tat, now, self._full)
        self._g = self._full
        self._pending = 0.0


class SyncedKeys:
    """One bucket per client key (``lbtui.core.limitstore.KeyedBuckets``), decided here and
    settled with the store like :class:`SyncedBucket`.

    Kept as ``KeyedLimiter`` keeps them: one ``tat`` a key, least recently used first, a full
    bucket dropped (it is the same as none). A key this replica has not seen starts full here
    even when another replica has used it: its first settlement brings the shared debt, so a
    client spread over N replicas may get up to N bursts once. A settlement sends every key
    with pending cost and refreshes up to ``refresh`` of the others held, most recent first.
    """

    __slots__ = (
        "_allowed",
        "_evicted",
        "_expired",
        "_full",
        "_g",
        "_link",
        "_pending",
        "_rejected",
        "_tats",
        "max_keys",
        "prefix",
        "refresh",
    )

    def __init__(
        self, prefix: str, rate: float, burst: float, link: Link, *, max_keys: int
    ) -> None:
        self.prefix = prefix
        """Each key's name in the store is ``prefix`` + the client key."""
        self._full = self._g = Gcra(rate, burst)
        self._link = link
        self.max_keys = max_keys
        self.refresh = 256
        """Keys held but idle here that a settlement also reads back, at most."""
        self._tats: OrderedDict[Hashable, float] = OrderedDict()
        self._pending: dict[Hashable, float] = {}
        self._allowed = 0
        self._rejected = 0
        self._expired = 0
        self._evicted = 0

    @property
    def rate(self) -> float:
        return self._full.rate

    @property
    def burst(self) -> float:
        return self._full.burst

    def __len__(self) -> int:
        return len(self._tats)

    def decide(self, key: Hashable, now: float, cost: float = 1.0) -> RateLimitDecision:
        mode = self._link.mode
        if mode == ALLOW:
            self._allowed += 1
            return RateLimitDecision(True, self._full.burst, 0.0, 0.0)
        if mode == DENY:
            self._rejected += 1
            return RateLimitDecision(False, 0.0, DENY_RETRY_S, DENY_RETRY_S)
        g = self._g
        tats = self._tats
        tat = tats.get(key)
        if tat is None:
            tat = now
            if len(tats) >= self.max_keys:
                self.sweep(now)
                if len(tats) >= self.max_keys:
                    tats.popitem(last=False)
                    self._evicted += 1
        new = g.take(tat, now, cost)
        if new == REFUSED:
            self._rejected += 1
            return g.decision(False, tat, now, cost)
        tats[key] = new
        tats.move_to_end(key)
        if mode == SYNCED:
            self._pending[key] = self._pending.get(key, 0.0) + cost
        self._allowed += 1
        return g.decision(True, new, now, cost)

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        return self.decide(key, now, cost).allowed

    def remaining(self, key: Hashable, now: float) -> float:
        return self._g.tokens(self._tats.get(key, now), now)

    def sweep(self, now: float) -> int:
        """Drop the full buckets at the least recently used end; returns how many."""
        tats = self._tats
        dropped = 0
        while tats:
            oldest = next(iter(tats))
            if tats[oldest] > now or oldest in self._pending:
                break
            del tats[oldest]
            dropped += 1
        self._expired += dropped
        return dropped

    def reconfigure(self, rate: float, burst: float, now: float) -> None:
        """New rate and burst for every key, each keeping its tokens (capped)."""
        full = Gcra(rate, burst)
        self._rescale(self._link.arithmetic(full), now)
        self._full = full

    def stats(self, now: float) -> KeyedStats:
        return KeyedStats(
            self._full.rate,
            self._full.burst,
            self.max_keys,
            len(self._tats),
            self._allowed,
            self._rejected,
            self._expired,
            self._evicted,
        )

    # -- the store's side --------------------------------------------------------------------

    def take_pending(self) -> Iterator[tuple[Hashable, float]]:
        """``(key, cost)`` to send now: every key with pending cost, then up to
        :attr:`refresh` others held (cost 0: read back only). Pending is zeroed."""
        pending, self._pending = self._pending, {}
        yield from pending.items()
        left = self.refresh
        for key in reversed(self._tats):
            if left <= 0:
                break
            if key not in pending:
                left -= 1
                yield key, 0.0

    def settle(self, key: Hashable, debt: float, now: float) -> None:
        """The store's answer for ``key``: its shared bucket is ``debt`` seconds behind."""
        tats = self._tats
        if key not in tats:
            return  # evicted meanwhile
        since = self._pending.get(key, 0.0)
        if debt <= 0 and since == 0.0:
            del tats[key]  # full: the same as no bucket
            self._expired += 1
            return
        base = now + debt if debt > 0 else now
        tats[key] = base + since * self._g.interval

    def degrade(self, now: float) -> None:
        self._rescale(self._link.arithmetic(self._full), now)
        self._pending = {}

    def restore(self, now: float) -> None:
        self._rescale(self._full, now)
        self._pending = {}

    def _rescale(self, g: Gcra, now: float) -> None:
        old = self._g
        for key, tat in self._tats.items():
            self._tats[key] = old.rescaled(tat, now, g)
        self._g = g
