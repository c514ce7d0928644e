"""The limiters of the shared limits zone: a token bucket by name, the per-client table and
the concurrency limit, each a view of its words in the segment (see :mod:`lbtui.balancer.shared`
for the zone, its lock and why the state is shared). The arithmetic is the core's
(:class:`~lbtui.core.limitstore.Gcra`); these keep state.

Split from the zone so that each is a module of its concept: ``shared.py`` owns the segment,
this reads and writes the limiters' words, ``shared_layout.py`` says where each word is.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TYPE_CHECKING

from lbtui.balancer.shared_layout import (
    C_MAX,
    C_PEAK,
    FP_CACHE,
    K_ALLOWED,
    K_BURST,
    K_CURSOR,
    K_EVICTED,
    K_EXPIRED,
    K_KEYS,
    K_MAX_KEYS,
    K_RATE,
    K_REJECTED,
    N_ALLOWED,
    N_BURST,
    N_RATE,
    N_REJECTED,
    N_TAT,
    R_ACQUIRED,
    R_IN_FLIGHT,
    R_PEAK,
    R_REJECTED,
    ROW_WORDS,
    SWEEP_SLOTS,
    WINDOW,
    fingerprint,
    positive_int,
)
from lbtui.core.limiting import (
    BucketStats,
    ConcurrencyStats,
    KeyedStats,
    RateLimitDecision,
    check_max_in_flight,
    check_rate_burst,
)
from lbtui.core.limitstore import REFUSED, Gcra

if TYPE_CHECKING:
    from lbtui.balancer.shared import SharedLimits


class SharedTokenBucket:
    """A token bucket (``lbtui.core.limitstore.Bucket``) whose ``tat``, rate, burst and counters
    are in shared memory; the arithmetic is the core's :class:`Gcra`, run under the lock for a
    decision."""

    __slots__ = ("_acquire", "_d", "_g", "_lock", "_q", "_release", "_s", "_zone")

    def __init__(self, zone: SharedLimits, slot: int, gcra: Gcra) -> None:
        self._zone = zone  # the segment stays mapped while a view is alive
        self._d = zone.floats
        self._q = zone.ints
        self._lock = zone.lock
        self._acquire = zone.lock.acquire
        self._release = zone.lock.release
        self._s = slot
        self._g = gcra

    def _gcra(self) -> Gcra:
        """The arithmetic for the rate and burst in shared memory (another process may have
        changed them)."""
        d, s, g = self._d, self._s, self._g
        rate, burst = d[s + N_RATE], d[s + N_BURST]
        if rate != g.rate or burst != g.burst:
            g = self._g = Gcra(rate, burst)
        return g

    @property
    def rate(self) -> float:
        return float(self._d[self._s + N_RATE])

    @property
    def burst(self) -> float:
        return float(self._d[self._s + N_BURST])

    def _take(self, now: float, cost: float) -> tuple[bool, float, Gcra]:
        """Decide under the lock: (allowed, ``tat`` afterwards, the arithmetic used)."""
        s, d = self._s, self._d
        self._acquire()  # not ``with``: the lock's __enter__ and __exit__ are Python calls
        try:
            g = self._gcra()
            tat = d[s + N_TAT]
            new = g.take(tat, now, cost)
            allowed = new != REFUSED
            if allowed:
                d[s + N_TAT] = tat = new
            self._q[s + (N_ALLOWED if allowed else N_REJECTED)] += 1
        finally:
            self._release()
        return allowed, tat, g

    def allow(self, now: float, cost: float = 1.0) -> bool:
        return self._take(now, cost)[0]

    def decide(self, now: float, cost: float = 1.0) -> RateLimitDecision:
        allowed, tat, g = self._take(now, cost)
        return g.decision(allowed, tat, now, cost)

    def peek(self, now: float, cost: float = 1.0) -> bool:
        return self._gcra().peek(self._d[self._s + N_TAT], now, cost)

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        return self._gcra().retry_after(self._d[self._s + N_TAT], now, cost)

    def reset_after(self, now: float) -> float:
        return self._gcra().reset_after(self._d[self._s + N_TAT], now)

    def tokens(self, now: float) -> float:
        return self._gcra().tokens(self._d[self._s + N_TAT], now)

    def reconfigure(self, rate: float, burst: float, now: float) -> None:
        """As ``TokenBucket.reconfigure``, for every process; a call that changes nothing
        (the same change made again by another process) keeps the state as it is."""
        new = Gcra(rate, burst)
        s, d = self._s, self._d
        with self._lock:
            g = self._gcra()
            if g.rate == new.rate and g.burst == new.burst:
                return
            d[s + N_TAT] = g.rescaled(d[s + N_TAT], now, new)
            d[s + N_BURST] = new.burst
            d[s + N_RATE] = new.rate
            self._g = new

    def stats(self, now: float) -> BucketStats:
        g, q, s = self._gcra(), self._q, self._s
        tokens = g.tokens(self._d[s + N_TAT], now)
        return BucketStats(g.rate, g.burst, tokens, q[s + N_ALLOWED], q[s + N_REJECTED])


class SharedKeyedLimiter:
    """A keyed limiter (``lbtui.core.limitstore.KeyedBuckets``) whose buckets are a fixed
    open-addressing table in shared memory.

    A key lives in one of the ``16`` slots from its home slot (its fingerprint modulo the
    capacity). A new key takes an empty slot of that window, else one whose bucket is full
    again (``tat <= now``: the same as no bucket, counted as expired), else it evicts the bucket
    nearest to full (counted as evicted). With the table at least twice ``max_keys``, evictions
    of live buckets stay rare until about ``max_keys`` clients are active at once; ``keys`` can
    pass ``max_keys`` (up to the capacity) rather than evict early. :meth:`sweep` frees full
    buckets a slice of the table at a time, from a cursor shared by all processes.
    """

    __slots__ = (
        "_acquire",
        "_base",
        "_cap",
        "_d",
        "_fps",
        "_g",
        "_lock",
        "_mask",
        "_q",
        "_release",
        "_zone",
    )

    def __init__(self, zone: SharedLimits, rate: float, burst: float, max_keys: int) -> None:
        positive_int("max_keys", max_keys)
        self._g = Gcra(rate, burst)  # checks rate and burst
        self._zone = zone
        self._d = zone.floats
        self._q = zone.ints
        self._lock = zone.lock
        self._acquire = zone.lock.acquire
        self._release = zone.lock.release
        self._base = zone.clients_start
        self._cap = zone.handle.client_slots
        self._mask = self._cap - 1
        self._fps: dict[Hashable, int] = {}

    def _fp(self, key: Hashable) -> int:
        fps = self._fps
        fp = fps.get(key)
        if fp is None:
            if len(fps) >= FP_CACHE:
                fps.clear()
            fp = fps[key] = fingerprint(key)
        return fp

    def _sync(self) -> Gcra:
        """The arithmetic for the rate and burst in shared memory (another process may have
        changed them)."""
        d, g = self._d, self._g
        rate, burst = d[K_RATE], d[K_BURST]
        if rate != g.rate or burst != g.burst:
            g = self._g = Gcra(rate, burst)
        return g

    def _find(self, fp: int) -> int:
        """The word index of ``fp``'s slot, or -1."""
        q = self._q
        home = self._base + (fp & self._mask) * 2
        if q[home] == fp:
            return home
        window = q[home : home + 2 * WINDOW : 2].tolist()
        if fp in window:
            return home + 2 * window.index(fp)
        return -1

    def _tat(self, key: Hashable, now: float) -> float:
        """``key``'s ``tat``, or ``now`` (a full bucket) when it has none. Under the lock."""
        self._sync()
        slot = self._find(self._fp(key))
        return self._d[slot + 1] if slot >= 0 else now

    def _take(self, fp: int, now: float, cost: float) -> tuple[bool, float]:
        """Decide under the lock: (allowed, the key's ``tat`` afterwards or ``now``)."""
        g = self._sync()
        q, d = self._q, self._d
        slot = self._find(fp)
        if slot >= 0:
            tat = d[slot + 1]
            new = g.take(tat, now, cost)
            if new != REFUSED:
                d[slot + 1] = new
                q[K_ALLOWED] += 1
                return True, new
            q[K_REJECTED] += 1
            return False, tat
        if cost > g.burst:
            q[K_REJECTED] += 1
            return False, now
        home = self._base + (fp & self._mask) * 2
        tats = d[home + 1 : home + 2 * WINDOW : 2].tolist()
        lowest = min(tats)  # an empty slot's is -inf
        slot = home + 2 * tats.index(lowest)
        if q[slot] == 0:
            q[K_KEYS] += 1
        elif lowest <= now:
            q[K_EXPIRED] += 1
        else:
            q[K_EVICTED] += 1
        new = now + cost * g.interval
        d[slot + 1] = new
        q[slot] = fp
        q[K_ALLOWED] += 1
        return True, new

    @property
    def rate(self) -> float:
        return float(self._d[K_RATE])

    @property
    def burst(self) -> float:
        return float(self._d[K_BURST])

    def __len__(self) -> int:
        return self._q[K_KEYS]

    def __contains__(self, key: Hashable) -> bool:
        fp = self._fp(key)
        with self._lock:
            return self._find(fp) >= 0

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        fp = self._fp(key)
        self._acquire()
        try:
            return self._take(fp, now, cost)[0]
        finally:
            self._release()

    def decide(self, key: Hashable, now: float, cost: float = 1.0) -> RateLimitDecision:
        fp = self._fp(key)
        self._acquire()
        try:
            allowed, tat = self._take(fp, now, cost)
        finally:
            self._release()
        return self._g.decision(allowed, tat, now, cost)

    def _tat_and_gcra(self, key: Hashable, now: float) -> tuple[float, Gcra]:
        with self._lock:
            return self._tat(key, now), self._g

    def peek(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        tat, g = self._tat_and_gcra(key, now)
        return g.peek(tat, now, cost)

    def retry_after(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        tat, g = self._tat_and_gcra(key, now)
        return g.retry_after(tat, now, cost)

    def reset_after(self, key: Hashable, now: float) -> float:
        tat, g = self._tat_and_gcra(key, now)
        return g.reset_after(tat, now)

    def remaining(self, key: Hashable, now: float) -> float:
        tat, g = self._tat_and_gcra(key, now)
        return g.tokens(tat, now)

    def sweep(self, now: float) -> int:
        """Free the full buckets in the next 512 slots of the table (round robin over all
        processes' calls); returns how many. A bounded step, cheap on every tick."""
        q, d = self._q, self._d
        slots = self._cap + WINDOW - 1
        dropped = 0
        with self._lock:
            start = q[K_CURSOR]
            end = min(start + SWEEP_SLOTS, slots)
            a, b = self._base + 2 * start, self._base + 2 * end
            fps = q[a:b:2].tolist()
            tats = d[a + 1 : b : 2].tolist()
            for i, fp in enumerate(fps):
                if fp and tats[i] <= now:
                    q[a + 2 * i] = 0
                    d[a + 2 * i + 1] = -math.inf
                    dropped += 1
            q[K_CURSOR] = end if end < slots else 0
            q[K_KEYS] -= dropped
            q[K_EXPIRED] += dropped
        return dropped

    def reconfigure(self, rate: float, burst: float, now: float) -> None:
        """As :meth:`KeyedLimiter.reconfigure`, for every process; a call that changes nothing
        (the same change made again by another process) keeps the buckets as they are.

        O(capacity) under the lock: an operator's action, not for the request path.
        """
        check_rate_burst(rate, burst)
        new_rate, new_burst = float(rate), float(burst)
        q, d = self._q, self._d
        with self._lock:
            old = self._sync()
            old_rate, old_burst = old.rate, old.burst
            if (old_rate, old_burst) == (new_rate, new_burst):
                return
            slots = self._cap + WINDOW - 1
            chunk = 1 << 16
            dropped = 0
            for first in range(0, slots, chunk):
                a = self._base + 2 * first
                b = self._base + 2 * min(first + chunk, slots)
                fps = q[a:b:2].tolist()
                tats = d[a + 1 : b : 2].tolist()
                for i, fp in enumerate(fps):
                    if not fp:
                        continue
                    debt = tats[i] - now
                    held = max(old_burst - debt * old_rate, 0.0)
                    if debt <= 0 or held >= new_burst:  # full, now or under the new burst
                        q[a + 2 * i] = 0
                        d[a + 2 * i + 1] = -math.inf
                        dropped += 1
                    else:
                        d[a + 2 * i + 1] = now + (new_burst - held) / new_rate
            q[K_KEYS] -= dropped
            q[K_EXPIRED] += dropped
            d[K_RATE] = new_rate
            d[K_BURST] = new_burst
            self._sync()

    def stats(self, now: float) -> KeyedStats:
        q, d = self._q, self._d
        return KeyedStats(
            d[K_RATE],
            d[K_BURST],
            q[K_MAX_KEYS],
            q[K_KEYS],
            q[K_ALLOWED],
            q[K_REJECTED],
            q[K_EXPIRED],
            q[K_EVICTED],
        )


class SharedConcurrencyLimit:
    """A concurrency limit (``lbtui.core.limitstore.Concurrency``) over all processes: one row
    of counts per process.

    Unlimited, :meth:`try_acquire` and :meth:`release` touch only this process's row, without
    the lock. With a cap, :meth:`try_acquire` sums ``in_flight`` over the rows under the lock;
    :meth:`release` still only lowers its own row, so a sum racing it errs on the safe side.
    ``peak_in_flight`` is the peak over all processes while a cap is set, and the sum of the
    rows' peaks (an upper bound) while unlimited.
    """

    __slots__ = ("_acquire", "_lock", "_q", "_release", "_row", "_rows_end", "_rows_start", "_zone")

    def __init__(self, zone: SharedLimits, max_in_flight: int | None) -> None:
        check_max_in_flight(max_in_flight)
        self._zone = zone
        self._q = zone.ints
        self._lock = zone.lock
        self._acquire = zone.lock.acquire
        self._release = zone.lock.release
        self._row = zone.row
        self._rows_start = zone.rows_start
        self._rows_end = zone.named_start

    def _column(self, offset: int) -> list[int]:
        start = self._rows_start + offset
        column: list[int] = self._q[start : self._rows_end : ROW_WORDS].tolist()
        return column

    @property
    def max_in_flight(self) -> int | None:
        return self._q[C_MAX] or None

    @property
    def in_flight(self) -> int:
        return sum(self._column(R_IN_FLIGHT))

    def try_acquire(self) -> bool:
        q, row = self._q, self._row
        cap = q[C_MAX]
        if not cap:
            n = q[row] + 1
            q[row] = n
            if n > q[row + R_PEAK]:
                q[row + R_PEAK] = n
            q[row + R_ACQUIRED] += 1
            return True
        self._acquire()
        try:
            total = sum(q[self._rows_start : self._rows_end : ROW_WORDS].tolist())
            if total >= cap:
                q[row + R_REJECTED] += 1
                return False
            n = q[row] + 1
            q[row] = n
            if n > q[row + R_PEAK]:
                q[row + R_PEAK] = n
            q[row + R_ACQUIRED] += 1
            if total >= q[C_PEAK]:
                q[C_PEAK] = total + 1
        finally:
            self._release()
        return True

    def peek(self) -> bool:
        cap = self._q[C_MAX]
        return not cap or self.in_flight < cap

    def release(self) -> None:
        q, row = self._q, self._row
        n = q[row]
        if n <= 0:
            raise RuntimeError("ConcurrencyLimit.release() without a matching try_acquire()")
        q[row] = n - 1

    def reconfigure(self, max_in_flight: int | None) -> None:
        """Change the cap for every process; requests above a lowered cap finish."""
        cap = check_max_in_flight(max_in_flight)
        with self._lock:
            self._q[C_MAX] = cap or 0

    def stats(self) -> ConcurrencyStats:
        q = self._q
        cap = q[C_MAX]
        peaks = self._column(R_PEAK)
        return ConcurrencyStats(
            cap or None,
            sum(self._column(R_IN_FLIGHT)),
            q[C_PEAK] if cap else sum(peaks),
            sum(self._column(R_ACQUIRED)),
            sum(self._column(R_REJECTED)),
        )
