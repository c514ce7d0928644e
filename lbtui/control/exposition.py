"""``Exposition``: ``/metrics`` at the cost of what changed, in slices that never hold the loop.

``metrics.render`` reads and writes every sample of every backend at each scrape: at 1,000
backends 44,000 lines, 80–130 ms on the event loop that serves traffic. Here each backend's
sample lines (one string per backend family: requests, failures, the latency histogram, …)
are kept and written again only when the backend may have changed — a new outcome (its
record's counters), a change of weight, admin state, health, ejection or breaker state, or an
event naming it — so a scrape costs a key per backend, the lines of the backends that moved,
and the joins. The work yields to the loop every ``slice_s``, one admin slice a turn of the
loop, the state's and this one's together (``slicing.Turns``).

Each family's lines are kept as one list over the backends (the order of the answer), and a
moved backend's new lines are written into it in place: the answer is a join of each list and
one of those between the headers, not a table of every backend's lines turned into columns at
each scrape. A moved family's lines come from one bytes format per backend and family (its
labels written once), its counts in the holes.

The bytes are exactly :func:`metrics.render`'s (the tests compare them): the same families in
the same order, the balancer-wide ones read at each scrape.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lbtui.balancer.pool import AdminState, Backend
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
    sample_prefixes,
    sample_text,
)
from lbtui.control.slicing import Turns
from lbtui.control.statecache import PACE, SLICE_S
from lbtui.core.balance import Member
from lbtui.core.breaker import BreakerState
from lbtui.core.record import CODE_CLASSES, BackendRecord, FailureKind

_CHECK_EVERY = 2


@dataclass(slots=True)
class _Lines:
    counts: tuple[int, ...]
    """``_counts_key`` when the lines were last written."""
    state: tuple[object, ...]
    """``_state_key`` when they were last written in full."""
    parts: list[bytes]
    """The sample lines of each family of ``backend_families``, in its order, encoded."""
    samples: list[_Frozen]
    """What each family's lines were written from (its values and histograms, as tuples: the
    collector stops scanning a tuple of numbers and strings once it has seen one, where lists
    kept for 1,000 backends are scanned at every collection): a family whose samples did not
    change keeps its lines (a new outcome moves four families of twelve)."""
    raw: tuple[object, ...]
    """``_signature`` of the record the lines were written from: which of the
    families a new outcome moved, read without building their samples."""
    prefixes: list[tuple[str, ...]] | None = None
    """Per family of ``backend_families`` (those of ``OUTCOMES``; the others empty), the
    beginnings of this backend's lines in the order its record's values come."""
    formats: list[bytes] = field(default_factory=list)
    """The same lines as one bytes ``%`` format of counts each (the histogram's sum a ``%b``
    of its text)."""
    member: Member | None = None
    """What the balance figures last read of it: kept while its rates and state stay (an
    idle backend's), not made again at each scrape."""


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


def _format(prefixes: Sequence[str]) -> bytes:
    """``prefixes``' lines with a count each, as one bytes format: written in one call, not a
    line at a time, and not encoded afterwards (a moved backend's lines are most of a
    scrape's work)."""
    return "".join(p.replace("%", "%%") + "%d.0\n" for p in prefixes).encode()


def _histogram_format(prefixes: Sequence[str]) -> bytes:
    """``_format`` of a histogram's lines, its last (the sum, a float) a ``%b`` of its text."""
    return _format(prefixes[:-1]) + prefixes[-1].replace("%", "%%").encode() + b"%b\n"


def _counts_bytes(prefixes: Sequence[str], fmt: bytes, counts: Sequence[int]) -> bytes:
    """The lines of ``counts`` (the record's integer counters), ``fmt`` being ``_format`` of
    ``prefixes``: counts as Go writes them, ``N.0``, below a million; beyond, by
    ``lines_text`` (exponents)."""
    if min(counts) >= 0 and max(counts) < 1_000_000:
        return fmt % tuple(counts)
    return lines_text(prefixes, counts).encode()


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


def _signature(rec: BackendRecord) -> tuple[object, ...]:
    """What each of the ``OUTCOMES`` families of ``rec`` is written from, in their order, in
    numbers cheap to read and compare: a family whose entry is unchanged has the same samples
    (a histogram's buckets only grow with its count)."""
    lat = rec.latency
    return (
        tuple(rec.responses_total),
        tuple(rec.failures_total.values()),
        (lat.count, lat.sum),
        rec.in_flight,
        rec.retries_total,
        rec.bytes_in_total,
        rec.bytes_out_total,
    )


def _counts_key(b: Backend) -> tuple[int, ...]:
    """What moves with each outcome of ``b`` (its record's): its outcome families are
    written again when this does."""
    r = b.record
    return (r.requests_total, r.in_flight, r.latency.count, r.retries_total, r.bytes_out_total)


def _state_key(proxy: Proxy, b: Backend, now: float, peers: tuple[int, ...]) -> tuple[object, ...]:
    """What moves with ``b``'s state (which events announce) or the worker processes: all its
    lines are written again when this does. Its first five fields are what ``_member`` reads."""
    breaker = b.breaker
    return (
        b.weight,
        b.admin,
        b.healthy(),
        proxy.outliers.is_ejected(b.name, now),
        breaker.state if breaker is not None else None,
        peers,
    )


_DOWN_STATES = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
_FAMILIES = 12
"""``backend_families``' length."""
_SHARED_MEMBERS = 4096
"""Distinct ``Member`` figures kept to be shared (all let go past this many)."""
Columns = list[list[bytes]]
"""Per family of ``backend_families``, each backend's lines, in the answer's order."""


def _member(
    b: Backend,
    had: _Lines,
    key: tuple[object, ...],
    rate: float,
    demand: float,
    shared: dict[tuple[object, ...], Member],
) -> Member:
    """``metrics.member_now`` of ``b``, read from its ``_state_key`` and its rates now:
    ``had``'s kept ``Member`` while the same (an idle backend's rates stay 0), else the one
    in ``shared`` with the same figures (a ``Member`` is a value: under an even load most
    backends have one of a few rates), else a new one."""
    weight, admin, healthy, ejected, state = key[0], key[1], key[2], key[3], key[4]
    admitting = admin is AdminState.ACTIVE and state not in _DOWN_STATES
    eligible = admitting and healthy is True and ejected is False
    m = had.member
    if (
        m is not None
        and m.rate == rate
        and m.demand == demand
        and m.weight == weight
        and m.eligible is eligible
        and m.admitting is admitting
        and m.max_rps == b.max_rps
    ):
        return m
    figures = (rate, demand, weight, eligible, admitting, b.max_rps)
    m = shared.get(figures)
    if m is None:
        if len(shared) >= _SHARED_MEMBERS:
            shared.clear()
        m = shared[figures] = Member(
            rate=rate,
            weight=b.weight,
            eligible=eligible,
            demand=demand,
            max_rps=b.max_rps,
            admitting=admitting,
        )
    had.member = m
    return m


class Exposition:
    """The ``/metrics`` text of one balancer, kept per backend."""

    def __init__(
        self,
        proxy: Proxy,
        faults: FaultLink | None,
        *,
        slice_s: float = SLICE_S,
        turns: Turns | None = None,
    ):
        self.proxy = proxy
        self.faults = faults
        self.slice_s = slice_s
        self.turns = turns or Turns()
        """Taken for each slice (shared with the state by the admin API)."""
        self._lines: dict[str, _Lines] = {}
        self._columns: Columns = [[] for _ in range(_FAMILIES)]
        """Each family's lines of the backends ``_order`` names, in that order."""
        self._order: list[str] = []
        self._cursor = EventCursor(proxy.events)
        self._members: dict[tuple[object, ...], Member] = {}
        """``Member`` by its figures: see ``_member``."""
        self._prefixes: Prefixes = {}
        self._group_memo: GroupMemo = {}
        """The groups' sums of each backend's record, at its latency count."""
        self._memo_moved: set[str] = set()
        """Backends whose ``_group_memo`` row was written since the groups were last summed."""
        self._group_sums = GroupSums()
        self._families: list[Family] | None = None
        """``backend_families`` with no backend: the names, kinds and help of each."""
        self._lock = asyncio.Lock()
        self.paced = False
        """The background pass under way rests between its slices (``refresh``)."""
        self.pass_busy_s = 0.0
        """Time the last background pass held the event loop, all slices together."""
        self.pass_longest_s = 0.0
        """Its longest slice."""
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
        """The exposition text (``metrics.render``'s bytes)."""
        return b"".join(await self.render_parts())

    async def render_parts(self) -> list[bytes]:
        """The exposition text in pieces, a family (or its head) each, to be written one after
        the other: the 2.3 MB of 1,000 backends are not copied once more into one."""
        self.paced = False  # a background pass under way: no more resting, a scrape waits
        async with self._lock:  # two scrapes at once: the second reuses the first's work
            await self.turns.take()
            try:
                return await self._render()
            finally:
                self.turns.give()

    async def refresh(self, *, paced: bool = False) -> None:
        """Write the lines of the backends that moved, without an answer: ``keeper.Keeper``'s
        background pass while ``/metrics`` is scraped steadily, so that the scrape finds few
        left to write. ``paced``: rest ``PACE`` times each slice after it, until a scrape
        comes (``render`` waits for the pass, which stops resting)."""
        async with self._lock:
            self.paced = paced
            await self.turns.take()
            try:
                _, _, self.pass_busy_s, self.pass_longest_s = await self._walk(False)
            finally:
                self.turns.give()
                self.paced = False

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
        had.formats = [_histogram_format(p) if k == 2 else _format(p) for k, p in enumerate(pre)]
        return pre

    def _outcomes(
        self, b: Backend, rec: BackendRecord, had: _Lines, columns: Columns | None, at: int
    ) -> None:
        """Write again the lines of ``b``'s families that its outcomes moved, straight from its
        record ``rec`` through each family's kept format (no samples built, compared or
        frozen: a moved signature is a moved line; half of 1,000 backends a scrape), into its
        kept lines and at ``at`` in ``columns`` (when they are in the answer's order)."""
        raw = _signature(rec)
        pre = had.prefixes
        if pre is None:
            pre = self._prepare(had, b.name)
        parts, samples, was, formats = had.parts, had.samples, had.raw, had.formats
        for i, k in enumerate(OUTCOMES):
            if raw[i] == was[i]:
                continue
            part: bytes
            if k == 2:
                lat = rec.latency
                cumulative = lat.at_cuts(BOUND_CUTS)
                # the groups' sums read the same cumulative counts
                self._group_memo[b.name] = group_memo_entry(rec, cumulative)
                self._memo_moved.add(b.name)
                count, total = lat.count, lat.sum
                # every count of it is between 0 and its count; a sum in this range is
                # written by Go (and ``metrics.go_float``) as Python's repr writes it
                if count < 1_000_000 and 0.0001 <= total < 1_000_000.0:
                    part = formats[2] % (*cumulative, count, count, repr(total).encode())
                else:
                    part = lines_text(pre[2], [*cumulative, count, count, total]).encode()
            elif k == 0:
                counts = rec.responses_total[1 : len(CODE_CLASSES) + 1]
                part = _counts_bytes(pre[0], formats[0], counts)
            elif k == 1:
                failures = rec.failures_total
                part = _counts_bytes(pre[1], formats[1], [failures[f] for f in _FAILURE_KINDS])
            else:
                if k == 3:
                    value = rec.in_flight
                elif k == 9:
                    value = rec.retries_total
                elif k == 10:
                    value = rec.bytes_in_total
                else:
                    value = rec.bytes_out_total
                if 0 <= value < 1_000_000:
                    part = formats[k] % (value,)
                else:
                    part = lines_text(pre[k], (value,)).encode()
            parts[k] = part
            if columns is not None:
                columns[k][at] = part
            samples[k] = _STALE  # the next full write of the backend writes this one again
        had.raw = raw

    def _whole(
        self,
        b: Backend,
        rec: BackendRecord,
        had: _Lines | None,
        counts: tuple[int, ...],
        state: tuple[object, ...],
        now: float,
    ) -> _Lines:
        """Write ``b``'s lines from its samples (a new backend, or one whose state moved):
        the families whose samples did not change keep theirs."""
        fams = backend_families(self.proxy, [b], now)
        raw = _signature(rec)
        self._group_memo[b.name] = group_memo_entry(rec, fams[2].histograms[0][1])
        self._memo_moved.add(b.name)
        samples = [_frozen(f.values, f.histograms) for f in fams]
        if had is None:
            parts = [sample_text(f, self._prefixes).encode() for f in fams]
            had = self._lines[b.name] = _Lines(counts, state, parts, samples, raw)
            self._prepare(had, b.name)
            return had
        # in place, as the state cache keeps its views
        had.parts[:] = [
            part if was == now_ else sample_text(f, self._prefixes).encode()
            for f, now_, was, part in zip(fams, samples, had.samples, had.parts, strict=True)
        ]
        had.samples[:] = samples
        had.counts, had.state, had.raw = counts, state, raw
        return had

    async def _render(self) -> list[bytes]:
        members, now, self.busy_s, self.longest_s = await self._walk(True)
        return await self._answer(members, now)

    async def _walk(self, answering: bool) -> tuple[dict[str, Member], float, float, float]:
        """Every backend's lines brought up to date, in slices: the balance figures' members
        (read only when ``answering``: they move with time, and a background pass's would be
        stale by the scrape), the time they were read at, the time the walk held the loop and
        its longest slice."""
        started = time.perf_counter()
        busy = longest = 0.0
        proxy = self.proxy
        touched = self._cursor.touched()
        peers = tuple(id(p) for p in proxy.peer_records.values())
        backends = list(proxy.backends.values())
        order = list(proxy.backends)
        # the kept lists are written in place while the fleet is the same; rebuilt otherwise
        columns: Columns | None = self._columns if order == self._order else None
        lines = self._lines
        now = proxy.clock()
        members: dict[str, Member] = {}
        for i, b in enumerate(backends):
            if i % _CHECK_EVERY == 0 and (spent := time.perf_counter() - started) > self.slice_s:
                busy += spent
                longest = max(longest, spent)
                await self.turns.rest(spent * PACE if self.paced else 0.0)
                started = time.perf_counter()
                now = proxy.clock()
            name = b.name
            if proxy.backends.get(name) is not b:  # removed meanwhile
                continue
            rec = proxy.merged_backend_record(b)
            counts = _counts_key(b)
            state = _state_key(proxy, b, now, peers)
            had = lines.get(name)
            if had is None or had.state != state or (touched is None or name in touched):
                had = self._whole(b, rec, had, counts, state, now)
                if columns is not None:
                    for k, part in enumerate(had.parts):
                        columns[k][i] = part
                self.rewritten += 1
            elif had.counts != counts:  # new outcomes alone: the record's families
                self._outcomes(b, rec, had, columns, i)
                had.counts = counts
                self.rewritten += 1
            if answering:
                rate, demand = rec.rps_and_demand(now)  # rates move with time: every scrape
                members[name] = _member(b, had, state, rate, demand, self._members)
        self._settle(order if columns is not None else None)
        if self.freeze_built and lines:
            self.freeze_built = False
            gc.freeze()
        spent = time.perf_counter() - started
        return members, now, busy + spent, max(longest, spent)

    def _settle(self, order: list[str] | None) -> None:
        """Let go of the backends gone; the kept lists made again unless the fleet is still
        ``order`` (that of the lists, which the scrape wrote into)."""
        proxy, lines = self.proxy, self._lines
        if len(lines) > len(proxy.backends):
            for gone in lines.keys() - proxy.backends.keys():
                del lines[gone]
            self._prefixes.clear()  # those of the backends gone with them
            for gone in self._group_memo.keys() - proxy.backends.keys():
                del self._group_memo[gone]
        now = list(proxy.backends)
        if now != order:  # a backend came or went
            names = [n for n in now if n in lines]
            columns = [list(c) for c in zip(*(lines[n].parts for n in names), strict=True)]
            self._columns = columns or [[] for _ in range(_FAMILIES)]
            self._order = names

    async def _answer(self, members: dict[str, Member], now: float) -> list[bytes]:
        """The groups' sums, then the balance figures over ``members`` and the families in
        their order, then their join: each in slices of its own."""
        proxy = self.proxy
        await self.turns.rest()
        started = time.perf_counter()
        groups = self._group_sums.families(proxy, self._group_memo, self._memo_moved)
        self._memo_moved.clear()
        self._spent(started)
        await self.turns.rest()  # then the balance figures, over every backend in one step
        started = time.perf_counter()
        empty = backend_families(proxy, [], now)
        placeholders = {id(f): k for k, f in enumerate(empty)}
        columns = self._columns
        out: list[bytes] = []
        for fam in balancer_families(proxy, self.faults, empty, members, groups=groups):
            if time.perf_counter() - started > self.slice_s:
                self._spent(started)
                await self.turns.rest()
                started = time.perf_counter()
            at = placeholders.get(id(fam))
            if at is None:
                # their line prefixes kept too (groups, pools, flags: a few dozen)
                out.append((header_text(fam) + sample_text(fam, self._prefixes)).encode())
            else:
                out.append(header_text(fam).encode())
                # a family at a time (the histograms' a megabyte at 1,000 backends): the
                # answer's one join, of 12,000 lines, ran past 2 ms
                out.append(b"".join(columns[at]))
        self._spent(started)
        return out
