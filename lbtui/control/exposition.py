"""``Exposition``: ``/metrics`` at the cost of what changed, in slices that never hold the loop.

``metrics.render`` reads and writes every sample of every backend at each scrape: at 1,000
backends 44,000 lines, 80–130 ms on the event loop that serves traffic. Here each backend's
sample lines (one string per backend family: requests, failures, the latency histogram, …)
are kept and written again only when the backend may have changed — a new outcome (its
record's counters), a change of weight, admin state, health, ejection or breaker state, or an
event naming it — so a scrape costs a key per backend, the lines of the backends that moved,
and one join. The work yields to the loop every ``slice_s``.

The bytes are exactly :func:`metrics.render`'s (the tests compare them): the same families in
the same order, the balancer-wide ones read at each scrape.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lbtui.balancer.pool import Backend
from lbtui.balancer.proxy import Proxy
from lbtui.control.faults import FaultLink
from lbtui.control.groupsums import GroupSums
from lbtui.control.keptviews import EventCursor
from lbtui.control.metrics import (
    BOUND_CUTS,
    OUTCOMES,
    Family,
    GroupMemo,
    Prefixes,
    backend_families,
    balancer_families,
    group_memo_entry,
    header_text,
    lines_text,
    member_now,
    outcome_signature,
    sample_prefixes,
    sample_text,
)
from lbtui.control.statecache import SLICE_S
from lbtui.core.balance import Member
from lbtui.core.record import CODE_CLASSES, FailureKind

_CHECK_EVERY = 2


@dataclass(slots=True)
class _Lines:
    key: tuple[object, ...]
    parts: list[bytes]
    """The sample lines of each family of ``backend_families``, in its order, encoded."""
    samples: list[_Frozen]
    """What each family's lines were written from (its values and histograms, as tuples: the
    collector stops scanning a tuple of numbers and strings once it has seen one, where lists
    kept for 1,000 backends are scanned at every collection): a family whose samples did not
    change keeps its lines (a new outcome moves four families of twelve)."""
    raw: tuple[object, ...]
    """``metrics.outcome_signature`` of the record the lines were written from: which of the
    families a new outcome moved, read without building their samples."""
    prefixes: list[tuple[str, ...]] | None = None
    """Per family of ``backend_families`` (those of ``OUTCOMES``; the others empty), the
    beginnings of this backend's lines in the order its record's values come."""
    formats: list[str] = field(default_factory=list)
    """The same lines as one ``%`` format of counts each (the histogram's but its sum)."""


_Frozen = tuple[object, ...]
_STALE: _Frozen = ()
"""In ``samples`` for a family whose lines were written from the record alone: unlike any
family's samples (``_frozen`` has at least its separator), so it is written again in full."""
_FAILURE_KINDS = tuple(FailureKind)


def _outcome_prefixes(fams: list[Family], name: str) -> list[tuple[str, ...]]:
    """``_Lines.prefixes`` of backend ``name``, ``fams`` being the empty ``backend_families``."""
    out: list[tuple[str, ...]] = [() for _ in fams]
    for k in OUTCOMES:
        f = fams[k]
        labels: list[tuple[str, ...]]
        if k == 0:
            labels = [(name, c) for c in CODE_CLASSES]
        elif k == 1:
            labels = [(name, kind.value) for kind in _FAILURE_KINDS]
        else:
            labels = [(name,)]
        full = f.name + "_total" if f.kind == "counter" else f.name
        out[k] = tuple(p for v in labels for p in sample_prefixes(f, full, v))
    return out


def _format(prefixes: Sequence[str]) -> str:
    """``prefixes``' lines with a count each, as one format: written in one call, not a line
    at a time (a moved backend's 30 lines are most of a scrape's work)."""
    return "".join(p.replace("%", "%%") + "%d.0\n" for p in prefixes)


def _counts_text(prefixes: Sequence[str], fmt: str, counts: Sequence[int]) -> str:
    """The lines of ``counts`` (the record's integer counters), ``fmt`` being ``_format`` of
    ``prefixes``: counts as Go writes them, ``N.0``, below a million; beyond, by
    ``lines_text`` (exponents)."""
    if min(counts) >= 0 and max(counts) < 1_000_000:
        return fmt % tuple(counts)
    return lines_text(prefixes, counts)


def _frozen(
    values: list[tuple[tuple[str, ...], float]],
    histograms: list[tuple[tuple[str, ...], list[int], float, int]],
) -> _Frozen:
    """A family's samples as one flat tuple (two levels deep: the collector lets go of a
    nested tuple one level a collection)."""
    out: list[object] = []
    for labels, value in values:
        out += (labels, value)
    out.append(None)  # between the values and the histograms: no value is None
    for labels, buckets, total, count in histograms:
        out += (labels, tuple(buckets), total, count)
    return tuple(out)


def _key(proxy: Proxy, b: Backend, now: float, peers: tuple[int, ...]) -> tuple[object, ...]:
    r = b.record
    breaker = b.breaker
    return (
        r.requests_total,
        r.in_flight,
        r.latency.count,
        r.retries_total,
        r.bytes_out_total,
        b.weight,
        b.admin,
        b.healthy(),
        proxy.outliers.is_ejected(b.name, now),
        breaker.state if breaker is not None else None,
        peers,
    )


_OUTCOME = 5
"""``_key``'s fields before this one move with outcomes (the record); those after with the
backend's state (which events announce) or the worker processes."""


class Exposition:
    """The ``/metrics`` text of one balancer, kept per backend."""

    def __init__(self, proxy: Proxy, faults: FaultLink | None, *, slice_s: float = SLICE_S):
        self.proxy = proxy
        self.faults = faults
        self.slice_s = slice_s
        self._lines: dict[str, _Lines] = {}
        self._cursor = EventCursor(proxy.events)
        self._prefixes: Prefixes = {}
        self._group_memo: GroupMemo = {}
        """The groups' sums of each backend's record, at its latency count."""
        self._memo_moved: set[str] = set()
        """Backends whose ``_group_memo`` row was written since the groups were last summed."""
        self._group_sums = GroupSums()
        self._families: list[Family] | None = None
        """``backend_families`` with no backend: the names, kinds and help of each."""
        self._lock = asyncio.Lock()
        self.busy_s = 0.0
        """Time the last scrape held the event loop, all slices together."""
        self.longest_s = 0.0
        """Its longest slice."""
        self.rewritten = 0
        """Backends whose lines were written again so far (what the tests read)."""
        self.freeze_built = False
        """Once every backend's lines are first kept, ``gc.freeze()``: as
        ``StateCache.freeze_built``."""

    async def render(self) -> bytes:
        async with self._lock:  # two scrapes at once: the second reuses the first's work
            return await self._render()

    def _spent(self, started: float) -> None:
        spent = time.perf_counter() - started
        self.busy_s += spent
        self.longest_s = max(self.longest_s, spent)

    def _prepare(self, had: _Lines, name: str) -> list[tuple[str, ...]]:
        """``had``'s prefixes and formats, made when its lines are first written (with the
        lines, in what ``freeze_built`` freezes)."""
        if self._families is None:
            self._families = backend_families(self.proxy, [], 0.0)
        pre = had.prefixes = _outcome_prefixes(self._families, name)
        had.formats = [_format(p[:-1] if k == 2 else p) for k, p in enumerate(pre)]
        return pre

    def _outcomes(self, b: Backend, had: _Lines, key: tuple[object, ...]) -> None:
        """Write again the lines of ``b``'s families that its outcomes moved, straight from its
        record into each family's kept line prefixes (no samples built, compared or frozen:
        a moved signature is a moved line; half of 1,000 backends a scrape)."""
        rec = self.proxy.merged_backend_record(b)
        raw = outcome_signature(rec)
        pre = had.prefixes
        if pre is None:
            pre = self._prepare(had, b.name)
        parts, samples, was = had.parts, had.samples, had.raw
        for i, k in enumerate(OUTCOMES):
            if raw[i] == was[i]:
                continue
            counts: Sequence[int]
            if k == 0:
                counts = rec.responses_total[1 : len(CODE_CLASSES) + 1]
            elif k == 1:
                failures = rec.failures_total
                counts = [failures[kind] for kind in _FAILURE_KINDS]
            elif k == 2:
                lat = rec.latency
                cumulative = lat.at_cuts(BOUND_CUTS)
                # the groups' sums read the same cumulative counts
                self._group_memo[b.name] = group_memo_entry(rec, cumulative)
                self._memo_moved.add(b.name)
                counts = [*cumulative, lat.count, lat.count]
            elif k == 3:
                counts = (rec.in_flight,)
            elif k == 9:
                counts = (rec.retries_total,)
            elif k == 10:
                counts = (rec.bytes_in_total,)
            else:
                counts = (rec.bytes_out_total,)
            prefixes = pre[k]
            if k == 2:  # the histogram's last line, its sum, is the one float
                text = _counts_text(prefixes[:-1], had.formats[k], counts)
                text += lines_text(prefixes[-1:], (lat.sum,))
            else:
                text = _counts_text(prefixes, had.formats[k], counts)
            parts[k] = text.encode()
            samples[k] = _STALE  # the next full write of the backend writes this one again
        had.key = key
        had.raw = raw

    async def _render(self) -> bytes:
        started = time.perf_counter()
        self.busy_s = self.longest_s = 0.0
        proxy = self.proxy
        touched = self._cursor.touched()
        peers = tuple(id(p) for p in proxy.peer_records.values())
        backends = list(proxy.backends.values())
        now = proxy.clock()
        members: dict[str, Member] = {}
        for i, b in enumerate(backends):
            if i % _CHECK_EVERY == 0 and time.perf_counter() - started > self.slice_s:
                self._spent(started)
                await asyncio.sleep(0)
                started = time.perf_counter()
                now = proxy.clock()
            if proxy.backends.get(b.name) is not b:  # removed meanwhile
                continue
            members[b.name] = member_now(proxy, b, now)  # rates move with time: every scrape
            key = _key(proxy, b, now, peers)
            had = self._lines.get(b.name)
            quiet = touched is not None and b.name not in touched
            if had is not None and quiet and had.key == key:
                continue
            if had is not None and quiet and had.key[_OUTCOME:] == key[_OUTCOME:]:
                self._outcomes(b, had, key)  # new outcomes alone: the record's families
                self.rewritten += 1
                continue
            rec = proxy.merged_backend_record(b)
            raw = outcome_signature(rec)
            fams = backend_families(proxy, [b], now)
            self._group_memo[b.name] = group_memo_entry(rec, fams[2].histograms[0][1])
            self._memo_moved.add(b.name)
            samples = [_frozen(f.values, f.histograms) for f in fams]
            if had is None:
                parts = [sample_text(f, self._prefixes).encode() for f in fams]
                self._lines[b.name] = had = _Lines(key, parts, samples, raw)
                self._prepare(had, b.name)
            else:  # in place, as the state cache keeps its views
                had.parts[:] = [
                    part if was == now_ else sample_text(f, self._prefixes).encode()
                    for f, now_, was, part in zip(
                        fams, samples, had.samples, had.parts, strict=True
                    )
                ]
                had.samples[:] = samples
                had.key, had.raw = key, raw
            self.rewritten += 1
        if len(self._lines) > len(proxy.backends):
            for gone in self._lines.keys() - proxy.backends.keys():
                del self._lines[gone]
            self._prefixes.clear()  # those of the backends gone with them
            for gone in self._group_memo.keys() - proxy.backends.keys():
                del self._group_memo[gone]
        lines = self._lines
        if self.freeze_built and lines:
            self.freeze_built = False
            gc.freeze()
        self._spent(started)
        await asyncio.sleep(0)
        started = time.perf_counter()
        columns = list(zip(*(lines[n].parts for n in proxy.backends if n in lines), strict=True))
        empty = backend_families(proxy, [], now)
        placeholders = {id(f): k for k, f in enumerate(empty)}
        out: list[bytes] = []
        self._spent(started)
        await asyncio.sleep(0)  # the balance figures next: over every backend, in one step
        started = time.perf_counter()
        groups = self._group_sums.families(proxy, self._group_memo, self._memo_moved)
        self._memo_moved.clear()
        for fam in balancer_families(proxy, self.faults, empty, members, groups=groups):
            if time.perf_counter() - started > self.slice_s:
                self._spent(started)
                await asyncio.sleep(0)
                started = time.perf_counter()
            k = placeholders.get(id(fam))
            if k is None:
                out.append((header_text(fam) + sample_text(fam)).encode())
            else:
                out.append(header_text(fam).encode())
                if columns:
                    out.append(b"".join(columns[k]))
        body = b"".join(out)
        self._spent(started)
        return body
