"""Rolling figures over time: counters, rates, latency histograms, EWMA.

Latency is kept in log-bucketed histograms (HDR-style: every bucket is 2**(1/16) ≈ 4.4 % wider
than the previous, so any quantile is within ±2.2 % of the true value) from 1 µs to about 70
minutes. Percentiles, never averages. Windows are rings of fixed slots: recording is O(1) and
allocation-free on the hot path; reading (a snapshot, a few times a second) merges the slots.

Nothing here reads a clock: every call takes ``now`` in monotonic seconds.

**The windowing rule** (one for every view: table, detail, header, ``/api/v1/state``, events):
the constants below are the only place the window lengths are written, and the Snapshot
carries them (``Snapshot.windows``) so that the console can label its columns.

- "now" rates and shares (req/s, error %, bytes/s, the header's totals) cover the last
  ``RATE_WINDOW_S`` (1 s) in ``RATE_SLOTS`` slots of 100 ms, sliding: a backend that stops
  receiving reads ≤ 10 % of its former rate within 1.1 s;
- percentiles cover the last ``QUANTILE_WINDOW_S`` (10 s) and are ``None`` when the window
  holds fewer than ``MIN_QUANTILE_SAMPLES`` samples (too few for a p99 to mean anything, and a
  backend that stopped receiving shows no old latency as current once its samples age out);
- sparklines show one value per complete second over the last ``SERIES_WINDOW_S`` (60 s);
- before a window has filled (a record younger than its window), rates divide by the time
  elapsed since the record's ``start``, not by the window's length.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import add, sub
from typing import Final, TypeVar

SUB_BUCKETS = 16
"""Buckets per doubling of latency."""
N_BUCKETS = 32 * SUB_BUCKETS + 1
"""Bucket 0 holds everything under 1 µs; the last bucket everything from 2**32 µs up."""
_ZEROS: Final = [0] * N_BUCKETS
"""What a slot of a rolling histogram is cleared to, in place."""

RATE_WINDOW_S: Final = 1.0
"""Seconds a "now" rate or share covers (req/s, error %, bytes/s, the totals' rates)."""
RATE_SLOTS: Final = 10
"""Slots of a "now" window: 100 ms each, so the rate slides in tenths of its window."""
QUANTILE_WINDOW_S: Final = 10.0
"""Seconds the latency percentiles (p50/p90/p99/p99.9) cover."""
QUANTILE_SLOTS: Final = 10
MIN_QUANTILE_SAMPLES: Final = 10
"""Fewer samples than this in the percentile window: the percentiles are ``None`` (shown ``—``)."""
SERIES_WINDOW_S: Final = 60.0
"""Seconds of history in a sparkline series: one value per complete second."""

_log2 = math.log2
_T = TypeVar("_T", int, float)


def bucket_of(seconds: float) -> int:
    """Index of the bucket that holds ``seconds``."""
    us = seconds * 1e6
    if us < 1.0:
        return 0
    i = int(_log2(us) * SUB_BUCKETS) + 1
    return i if i < N_BUCKETS else N_BUCKETS - 1


def bucket_lower(i: int) -> float:
    """Lower edge of bucket ``i`` in seconds."""
    if i <= 0:
        return 0.0
    return float(2.0 ** ((i - 1) / SUB_BUCKETS) / 1e6)


def bucket_upper(i: int) -> float:
    """Upper edge of bucket ``i`` in seconds (``inf`` for the last)."""
    if i >= N_BUCKETS - 1:
        return math.inf
    return float(2.0 ** (i / SUB_BUCKETS) / 1e6)


def bucket_value(i: int) -> float:
    """The representative value of bucket ``i``: its geometric middle, in seconds."""
    if i <= 0:
        return 0.0
    return float(2.0 ** ((i - 0.5) / SUB_BUCKETS) / 1e6)


def quantile_of(counts: Sequence[int], total: int, q: float) -> float:
    """The ``q`` quantile (0..1) of a bucket-count array holding ``total`` samples; 0 if empty."""
    if total <= 0:
        return 0.0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, c in enumerate(counts):
        if c:
            seen += c
            if seen >= rank:
                return bucket_value(i)
    return bucket_value(len(counts) - 1)


def quantiles_of(counts: Sequence[int], total: int, qs: Sequence[float]) -> list[float]:
    """``quantile_of`` for several ``qs`` at once: one running sum, one bisection each."""
    if total <= 0:
        return [0.0] * len(qs)
    cum = list(accumulate(counts))
    last = len(counts) - 1
    return [_VALUES[min(bisect_left(cum, max(1, math.ceil(q * total))), last)] for q in qs]


def _span(counts: Sequence[int]) -> tuple[int, int]:
    """The slice ``[lo, hi)`` outside which the (non-negative) ``counts`` are all zero;
    ``(0, 0)`` when every count is zero."""
    cum = list(accumulate(counts))
    total = cum[-1] if cum else 0
    if total <= 0:
        return 0, 0
    return bisect_right(cum, 0), bisect_left(cum, total) + 1


def _sum_columns(rows: Sequence[list[_T]]) -> list[_T]:
    """Element-wise sum of equally long ``rows`` (at least one), as a new list."""
    if len(rows) == 1:
        return list(rows[0])
    if len(rows) == 2:
        return list(map(add, rows[0], rows[1]))
    return list(map(sum, zip(*rows, strict=True)))


def _sum_counts(lists: Sequence[list[int]], lo: int, hi: int) -> list[int]:
    """Element-wise sum of bucket-count arrays, all zero outside ``[lo, hi)``, as a new list.

    Only the span is added (latencies fill a few dozen neighbouring buckets of the 513)."""
    if len(lists) == 1:
        return list(lists[0])
    if not lists or lo >= hi:
        return [0] * N_BUCKETS
    return _padded(lo, _sum_columns([c[lo:hi] for c in lists]))


def _padded(lo: int, mid: list[int]) -> list[int]:
    """A full bucket-count array from the span ``mid`` that starts at bucket ``lo``."""
    out = [0] * N_BUCKETS
    out[lo : lo + len(mid)] = mid
    return out


class LatencyHistogram:
    """Cumulative latency histogram: every sample since start."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * N_BUCKETS
        self.count = 0
        self.sum = 0.0

    def record(self, seconds: float) -> None:
        self.counts[bucket_of(seconds)] += 1
        self.count += 1
        self.sum += seconds

    def quantile(self, q: float) -> float:
        return quantile_of(self.counts, self.count, q)

    def merge(self, other: LatencyHistogram) -> None:
        for i, c in enumerate(other.counts):
            if c:
                self.counts[i] += c
        self.count += other.count
        self.sum += other.sum

    @classmethod
    def merged(cls, parts: Sequence[LatencyHistogram]) -> LatencyHistogram:
        """A new histogram holding every sample of ``parts`` (which are left untouched)."""
        out = cls()
        held = [p.counts for p in parts if p.count]
        if held:
            out.counts = _sum_columns(held)
        out.count = sum(p.count for p in parts)
        out.sum = sum(p.sum for p in parts)
        return out

    def __getstate__(self) -> tuple[int, list[int], int, float]:
        # only the span of non-zero buckets: a pickle a fraction the size, and as fast to load
        lo, hi = _span(self.counts)
        return lo, self.counts[lo:hi], self.count, self.sum

    def __setstate__(self, state: tuple[int, list[int], int, float]) -> None:
        lo, mid, self.count, self.sum = state
        self.counts = _padded(lo, mid)

    def at_cuts(self, cuts: Sequence[int]) -> list[int]:
        """The count of samples in the first ``cut`` buckets, for each of ``cuts`` (ascending):
        :meth:`cumulative` with the bounds turned into bucket counts once, by its caller
        (``/metrics`` reads this for every backend that moved, half of 1,000 a scrape: one
        compiled pass, not a slice and a sum per bound)."""
        counts = self.counts
        total = self.count
        out: list[int] = []
        acc = 0
        i = 0
        for cut in cuts:
            # once every sample is counted, the buckets above are empty: not read (latencies
            # of a few ms end in the 200th of 400 buckets the 30 s bound spans)
            if acc < total:
                while i < cut:
                    acc += counts[i]
                    i += 1
            out.append(acc)
        return out

    def cumulative(self, bounds: Sequence[float]) -> list[int]:
        """Counts of samples ≤ each bound (seconds), as a Prometheus histogram wants them.

        A bucket is counted under a bound when its representative value is ≤ the bound.
        """
        out: list[int] = []
        acc = 0
        i = 0
        for b in bounds:
            while i < N_BUCKETS and bucket_value(i) <= b:
                acc += self.counts[i]
                i += 1
            out.append(acc)
        return out


_VALUES = [bucket_value(i) for i in range(N_BUCKETS)]


class _Ring:
    """Slot bookkeeping shared by the rolling figures: which slot ``now`` falls in, and clearing
    the slots that time has passed by.

    Writers check ``int(now / slot_s) == _epoch`` themselves first (the newest slot again:
    nearly every write) and write to ``pos``; only a write in another slot calls ``advance``."""

    __slots__ = ("_epoch", "n_slots", "pos", "slot_s", "start")

    def __init__(self, window_s: float = 10.0, slots: int = 10, start: float = -math.inf) -> None:
        # (defaults: a compiled class is unpickled by calling it with no arguments)
        if window_s <= 0 or slots < 2:
            raise ValueError("a window needs a positive length and at least 2 slots")
        self.slot_s = window_s / slots
        self.n_slots = slots
        self.start = start
        """When counting began (monotonic seconds); ``-inf``: the window counts as full."""
        self._epoch = -1  # index (in slot units since 0) of the newest slot written
        self.pos = 0
        """Position of the newest slot written (``_epoch % n_slots``)."""

    def advance(self, now: float) -> tuple[int, list[int]]:
        """Return the current slot's position and the positions that must be cleared first.

        The position is -1 for a write older than the window (a late write, its ``now`` read
        long before): it belongs to no slot held, and is dropped."""
        epoch = int(now / self.slot_s)
        stale: list[int] = []
        if epoch != self._epoch:
            if epoch <= self._epoch - self.n_slots:
                return -1, stale
            if self._epoch < 0 or epoch - self._epoch >= self.n_slots:
                stale = list(range(self.n_slots))
            elif epoch > self._epoch:
                stale = [e % self.n_slots for e in range(self._epoch + 1, epoch + 1)]
            if epoch > self._epoch:
                self._epoch = epoch
                self.pos = epoch % self.n_slots
        return epoch % self.n_slots, stale

    def live_epochs(self, now: float) -> range:
        """Epochs of the slots inside the window at ``now`` that hold data (empty before the
        first write): those not older than the window and not newer than the latest write."""
        if self._epoch < 0:
            return range(0)
        epoch = int(now / self.slot_s)
        n = self.n_slots
        lo = max(epoch - n + 1, self._epoch - n + 1, 0)
        return range(lo, min(epoch, self._epoch) + 1)

    def live(self, now: float) -> list[int]:
        """Positions of slots that are inside the window at ``now``."""
        n = self.n_slots
        return [e % n for e in self.live_epochs(now)]

    def covered(self, now: float) -> float:
        """Seconds of the window that have passed: (slots - 1) whole slots plus the current part,
        or, while the window is younger than that, the time since ``start`` (at least a slot:
        a rate read just after the start is not a count divided by nearly nothing)."""
        # from the oldest live slot's start, found as the slots are (``now % slot_s`` can
        # disagree with ``int(now / slot_s)`` by a rounding and count a slot twice)
        full = now - (int(now / self.slot_s) - self.n_slots + 1) * self.slot_s
        elapsed = now - self.start
        if elapsed >= full:
            return full
        return elapsed if elapsed > self.slot_s else self.slot_s

    @classmethod
    def aligned(cls, rings: Sequence[_Ring]) -> tuple[_Ring, list[range]]:
        """A ring as one would be that got the writes of all ``rings``, and for each of them the
        epochs of its slots that lie in that ring's window (the others are dropped).

        Epochs are ``int(now / slot_s)`` on a clock all the rings share, so a slot position is
        the same in every ring: only which epochs are still held differs."""
        if not rings:
            raise ValueError("nothing to merge")
        first = rings[0]
        n, slot_s = first.n_slots, first.slot_s
        for r in rings:
            if r.n_slots != n or r.slot_s != slot_s:
                raise ValueError(
                    f"windows differ: {n} slots of {slot_s:g} s and {r.n_slots} of {r.slot_s:g} s"
                )
        out = cls(slot_s * n, n, min(r.start for r in rings))
        out.slot_s = slot_s  # the parts' own, not (slot_s * n) / n rounded
        out._epoch = top = max(r._epoch for r in rings)
        out.pos = top % n if top >= 0 else 0
        # a ring holds epochs (its newest - n, its newest]; the window kept: (top - n, top]
        oldest = max(top - n + 1, 0)
        return out, [range(oldest, r._epoch + 1) for r in rings]


class RollingCounter:
    """A count over the last ``window_s`` seconds, in ``slots`` slots; ``rate`` is per second.

    A write to the newest slot again (nearly every write) adds to ``_cur``, a plain float
    field, rather than to the slot list, whose items are float objects: compiled, that is an
    addition instead of a new float object a write (a request writes several counters). The
    newest slot's count is ``_slots[pos] + _cur``; ``_settle`` moves ``_cur`` into the list
    before the slots move on or are read."""

    __slots__ = ("_cur", "_ring", "_slots")

    def __init__(self, window_s: float = 10.0, slots: int = 10, start: float = -math.inf) -> None:
        self._ring = _Ring(window_s, slots, start)
        self._slots = [0.0] * slots
        self._cur = 0.0
        """Written to the newest slot (``_ring.pos``) and not yet in ``_slots``."""

    def add(self, n: float, now: float) -> None:
        ring = self._ring
        if int(now / ring.slot_s) == ring._epoch:
            self._cur += n
            return
        self._settle()
        pos, stale = ring.advance(now)
        if pos < 0:
            return
        for s in stale:
            self._slots[s] = 0.0
        self._slots[pos] += n

    def _settle(self) -> None:
        """``_cur`` into its slot: the slot list then holds every count."""
        if self._cur:
            self._slots[self._ring.pos] += self._cur
            self._cur = 0.0

    def _values(self) -> list[float]:
        """Every slot's count, ``_cur`` included, leaving the counter as it is."""
        if not self._cur:
            return self._slots
        out = list(self._slots)
        out[self._ring.pos] += self._cur
        return out

    def total(self, now: float) -> float:
        self._settle()
        ring = self._ring
        epoch = int(now / ring.slot_s)
        last = ring._epoch
        if epoch == last:
            return sum(self._slots)  # every slot is in the window: the common case
        if epoch > last:
            n = ring.n_slots
            if epoch - last >= n or last < 0:
                return 0.0  # nothing written for a whole window (an idle backend, read)
            slots = self._slots
            return sum(slots[e % n] for e in range(max(epoch - n + 1, 0), last + 1))
        return sum(self._slots[p] for p in ring.live(now))

    def rate(self, now: float) -> float:
        return self.total(now) / self._ring.covered(now)

    def covered(self, now: float) -> float:
        """Seconds of the window that have passed (what ``rate`` divides by)."""
        return self._ring.covered(now)

    def series(self, now: float) -> list[float]:
        """Per-slot rates, oldest first, for sparklines (the current slot is partial)."""
        self._settle()
        ring = self._ring
        epoch = int(now / ring.slot_s)
        if epoch == ring._epoch and epoch >= ring.n_slots:
            k = (epoch + 1) % ring.n_slots
            scale = 1.0 / ring.slot_s
            return [v * scale for v in self._slots[k:] + self._slots[:k]]
        live = ring.live_epochs(now)
        n = ring.n_slots
        scale = 1.0 / ring.slot_s
        slots = self._slots
        return [slots[e % n] * scale if e in live else 0.0 for e in range(epoch - n + 1, epoch + 1)]

    def complete_series(self, now: float) -> list[float]:
        """``series`` without the current, partial slot (whose rate would read low until it
        ends): the ``slots - 1`` complete slots before ``now``, oldest first."""
        return self.series(now)[:-1]

    @classmethod
    def merged(cls, parts: Sequence[RollingCounter]) -> RollingCounter:
        """A new counter showing, at any ``now``, what one counter given every write of
        ``parts`` would (which are left untouched). They must share a window and slot count
        (``ValueError`` otherwise, or if there are none)."""
        ring, held = _Ring.aligned([p._ring for p in parts])
        n = ring.n_slots
        rows: list[list[float]] = []
        for p, epochs in zip(parts, held, strict=True):
            if len(epochs) == n:  # every slot it holds is in the window: the common case
                rows.append(p._values())
            elif epochs:
                own = p._values()
                row = [0.0] * n
                for e in epochs:
                    row[e % n] = own[e % n]
                rows.append(row)
        out = cls(ring.slot_s * n, n)
        out._ring = ring
        out._slots = _sum_columns(rows) if rows else [0.0] * n
        return out


class RollingHistogram:
    """Latency histogram over the last ``window_s`` seconds."""

    __slots__ = ("_acc", "_counts", "_n", "_ring")

    def __init__(self, window_s: float = 10.0, slots: int = 10, start: float = -math.inf) -> None:
        self._ring = _Ring(window_s, slots, start)
        self._counts = [[0] * N_BUCKETS for _ in range(slots)]
        self._n = [0] * slots
        self._acc = [0] * N_BUCKETS
        """The sum of every slot held (kept as slots fill and clear): a read in the slot of
        the latest write is one copy instead of a merge."""

    def record(self, seconds: float, now: float) -> None:
        self.record_bucket(bucket_of(seconds), now)

    def record_bucket(self, i: int, now: float) -> None:
        """``record`` of a sample whose bucket (``bucket_of``) is known already."""
        ring = self._ring
        if int(now / ring.slot_s) == ring._epoch:
            pos = ring.pos
        else:
            pos, stale = ring.advance(now)
            if pos < 0:
                return
            for s in stale:
                if self._n[s]:
                    # in place: the lists made at start-up stay where gc.freeze put them, out
                    # of every collection's scan (a new list per slot per second made each full
                    # collection of a 1,000-backend balancer traverse millions of items)
                    row = self._counts[s]
                    self._acc[:] = map(sub, self._acc, row)
                    row[:] = _ZEROS
                    self._n[s] = 0
        self._counts[pos][i] += 1
        self._acc[i] += 1
        self._n[pos] += 1

    def window_counts(self, now: float) -> tuple[list[int], int]:
        """Bucket counts and sample count over the window."""
        live = set(self._ring.live(now))
        acc = self._acc
        total = sum(self._n)
        for p in range(self._ring.n_slots):
            if self._n[p] and p not in live:  # held, but older than the window at ``now``
                acc = list(map(sub, acc, self._counts[p]))
                total -= self._n[p]
        return list(acc) if acc is self._acc else acc, total

    def quantiles(self, qs: Sequence[float], now: float) -> list[float]:
        counts, total = self.window_counts(now)
        return quantiles_of(counts, total, qs)

    def count(self, now: float) -> int:
        return sum(self._n[p] for p in self._ring.live(now))

    def rate(self, now: float) -> float:
        """Samples per second over the window (as ``RollingCounter.rate`` would count them)."""
        return self.count(now) / self._ring.covered(now)

    @classmethod
    def merged(cls, parts: Sequence[RollingHistogram]) -> RollingHistogram:
        """A new histogram showing, at any ``now``, what one histogram given every sample of
        ``parts`` would (which are left untouched). They must share a window and slot count
        (``ValueError`` otherwise, or if there are none)."""
        ring, held = _Ring.aligned([p._ring for p in parts])
        n = ring.n_slots
        by_pos: list[list[list[int]]] = [[] for _ in range(n)]
        ns = [0] * n
        sums: list[list[int]] = []
        dropped: list[list[int]] = []
        for p, epochs in zip(parts, held, strict=True):
            own_n, own_counts = p._n, p._counts
            kept = {e % n for e in epochs}
            if not any(own_n[q] for q in kept):
                continue
            sums.append(p._acc)
            for q in range(n):
                if own_n[q]:
                    if q in kept:
                        by_pos[q].append(own_counts[q])
                        ns[q] += own_n[q]
                    else:  # held by the part, but older than the merged window
                        dropped.append(own_counts[q])
        acc = _sum_columns(sums) if sums else [0] * N_BUCKETS
        for c in dropped:
            acc = list(map(sub, acc, c))
        # the window's sum is the parts' sums less the slots dropped: every slot kept is zero
        # wherever it is, and only that span of them needs adding
        lo, hi = _span(acc)
        out = cls(ring.slot_s * n, n)
        out._ring = ring
        out._n = ns
        out._counts = [_sum_counts(c, lo, hi) for c in by_pos]
        out._acc = acc
        return out

    def __getstate__(self) -> tuple[_Ring, list[int], int, list[list[int] | None], list[int]]:
        # only the span of non-zero buckets (and nothing of an empty slot): a pickle a fraction
        # the size, and several times faster to load
        lo, hi = _span(self._acc)
        spans = [c[lo:hi] if k else None for c, k in zip(self._counts, self._n, strict=True)]
        return self._ring, self._n, lo, spans, self._acc[lo:hi]

    def __setstate__(
        self, state: tuple[_Ring, list[int], int, list[list[int] | None], list[int]]
    ) -> None:
        self._ring, ns, lo, spans, acc = state
        self._n = list(ns)
        self._counts = [[0] * N_BUCKETS if c is None else _padded(lo, c) for c in spans]
        self._acc = _padded(lo, acc)


class Ewma:
    """Exponentially weighted moving average with a time constant ``tau_s`` (irregular samples).

    ``update`` with a sample ``x`` at ``now``: ``value += (x - value) * (1 - exp(-dt / tau))``.
    """

    __slots__ = ("_t", "tau_s", "value")

    def __init__(self, tau_s: float, initial: float = 0.0) -> None:
        self.tau_s = tau_s
        self.value = initial
        self._t: float | None = None

    def update(self, x: float, now: float) -> float:
        if self._t is None:
            self.value = x
        else:
            dt = max(now - self._t, 0.0)
            w = math.exp(-dt / self.tau_s)
            self.value = self.value * w + x * (1.0 - w)
        self._t = now
        return self.value
