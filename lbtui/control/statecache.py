"""``StateCache``: ``GET /api/v1/state`` at the cost of what changed, never a long pause.

The admin API runs on the event loop that serves traffic, so every millisecond it spends there
is a millisecond every request in flight waits (1,000 backends: 46 ms a poll, read and
serialised whole). Three things keep that cost small and short:

- **per-backend views kept with their JSON** and rebuilt only when the backend may have
  changed: a new outcome (a cheap key of counters read from its record), an event naming it
  (every change of state, weight, breaker, ejection or fault is one), or the next tick of its
  rolling windows while it shows anything that moves with time: 100 ms (the "now" slot) while
  it shows a rate, 1 s otherwise (traffic in the last minute, a countdown, a fault, a score, a
  health check since). A backend idle for a minute costs one key a poll. When only its record
  moved (new outcomes, or its windows with time) and nothing else did (no event, a health
  check that changed no state, nothing else that moves with time), the record's figures, the
  breaker's calls and the health object are read again and spliced into the kept JSON
  (``viewsplice``, ``keptviews``), not the view rebuilt;
- **work in slices**: the rebuild yields to the loop every ``slice_s`` (0.5 ms), one slice per
  turn of the loop whoever does it (``slicing.Turns``, shared with ``/metrics``), so proxied
  requests wait behind one slice at a time;
- **while watched, time is kept in the background** (``keeper.Keeper``): a paced pass reads
  what moves with time alone, and a poll only ``catch_up``s on outcomes and events;
- **deltas**: each rebuilt view whose JSON differs takes the next ``version``; a console that
  sends ``?since=VERSION&epoch=EPOCH`` gets the totals and only the backends changed since
  (plus the list of names, for order and removals), so watching 1,000 quiet backends costs
  what watching 10 does. ``epoch`` is new at each start: versions of another run are refused
  with a full answer.

The answer is ``Snapshot`` JSON (what ``Snapshot.from_json`` reads) with ``version`` and
``epoch`` added, and ``delta: true`` and ``names`` when it carries changes only. Figures of a
backend with no new outcome are at most one tick old (while watched, one poll interval); its
counters, state and the totals are read at each answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import secrets
import time

from pydantic import TypeAdapter

from lbtui.balancer.pool import Backend
from lbtui.control.keptviews import (
    OUTCOME,
    EventCursor,
    Kept,
    Pass,
    assign,
    health_span,
    in_flight_only,
    others_moving,
    rechecked,
    shows_rate,
    view_key,
    windows_moving,
)
from lbtui.control.local import LocalControl
from lbtui.control.model import BackendView, PoolView
from lbtui.control.slicing import Turns
from lbtui.control.snapshot import (
    ConnectionCount,
    assemble,
    backend_view,
    connection_counter,
    member_of,
    pool_views,
    process_views,
    scorer_for,
)
from lbtui.control.viewsplice import (
    calls_json,
    figures_of,
    read_figures,
    splice,
    template,
)
from lbtui.core.balance import Member
from lbtui.core.window import RATE_SLOTS, RATE_WINDOW_S

TICK_S = 1.0
"""The slot of the longer windows (percentiles, the minute of history): a view that shows any
of them moving is read again once a tick."""
RATE_TICK_S = RATE_WINDOW_S / RATE_SLOTS
"""The "now" window's slot (100 ms): a view that shows a rate is read again once a slot (a
backend that stops receiving must read under a tenth of its rate within 2 s, so its view cannot
be a whole second old); one that shows none waits for the next ``TICK_S``."""
SLICE_S = 0.0005
"""Longest stretch of rebuilding between two yields to the event loop: a proxied request goes
through the loop three or four times (request, upstream answer, reply), and may wait behind
one slice each time."""
PACE = 3.0
"""A background pass (``refresh(paced=True)``) rests three times each slice's length after it:
at most a quarter of the loop's time goes to it."""
_CHECK_EVERY = 2
"""Backends rebuilt between two looks at the clock."""
_BACKEND = TypeAdapter(BackendView)
_NO_BACKENDS = b'"backends":[]'


class StateCache:
    """The state of ``control``'s balancer, kept per backend for the admin API."""

    def __init__(
        self,
        control: LocalControl,
        *,
        slice_s: float = SLICE_S,
        tick_s: float = TICK_S,
        rate_tick_s: float = RATE_TICK_S,
        turns: Turns | None = None,
    ) -> None:
        self.control = control
        self.turns = turns or Turns()
        """Taken for each slice (shared with ``/metrics`` by the admin API)."""
        self.slice_s = slice_s
        self.tick_s = tick_s
        self.rate_tick_s = rate_tick_s
        self.epoch = secrets.token_hex(6)
        self.version = 0
        self._entries: dict[str, Kept] = {}
        self._cursor = EventCursor(control.proxy.events)
        self._names: list[str] = []
        self._names_json = b"[]"
        self._refreshing: asyncio.Task[None] | None = None
        self._balance: tuple[tuple[int, int], tuple[dict[str, Member], list[PoolView]]] | None
        self._balance = None
        self.rebuilt = 0
        """Views rebuilt so far (what the tests read)."""
        self.spliced = 0
        """Views whose window figures alone were read again and spliced in so far."""
        self.busy_s = 0.0
        """Time the last answer held the event loop, all slices together (with the pass it
        waited on, if it waited on one)."""
        self.longest_s = 0.0
        """Its longest slice: the longest a proxied request could have waited behind it."""
        self.pass_busy_s = 0.0
        """Time the last pass over the backends held the loop, all slices together."""
        self.pass_longest_s = 0.0
        """Its longest slice."""
        self.pace = PACE
        """A paced pass rests this many times each slice's length after it."""
        self.answering = 0
        """Polls being answered from the kept views: a paced pass steps aside meanwhile."""
        self._answered = asyncio.Event()
        self.paced = False
        """The pass under way is paced (``refresh(paced=True)``, and nobody else waits on it)."""
        self.freeze_built = False
        """Once every backend's view is first kept, ``gc.freeze()`` (``lbtui serve`` sets it):
        the entries live as long as the process and have their figures written in place, so
        full collections need not traverse them (1,000 backends: 11,000 containers, about
        half of a full collection's time). Once: what else was alive then is frozen with them."""

    # --- reading -----------------------------------------------------------------------------

    async def body(self, since: int | None = None, epoch: str | None = None) -> bytes:
        """The state as JSON: everything, or (``since`` from this ``epoch``) only the backends
        changed after version ``since``."""
        self.busy_s = self.longest_s = 0.0
        await self.refresh()
        body = await self.answer(since, epoch)
        self.busy_s += self.pass_busy_s
        self.longest_s = max(self.longest_s, self.pass_longest_s)
        return body

    async def answer(self, since: int | None = None, epoch: str | None = None) -> bytes:
        """``body`` from the views as they are kept, without bringing them up to date first
        (``keeper.Keeper`` does that in the background while a console watches)."""
        await self.turns.take()
        try:
            return await self._answer(since, epoch)
        finally:
            self.turns.give()

    async def _answer(self, since: int | None, epoch: str | None) -> bytes:
        started = time.perf_counter()
        proxy = self.control.proxy
        names = [n for n in self._names if n in self._entries]
        entries = [self._entries[n] for n in names]
        # the balance figures of every pool change only with a view or an event (panic, routes)
        key = (self.version, proxy.events.last_id)
        if self._balance is None or self._balance[0] != key:
            members = {n: e.member for n, e in zip(names, entries, strict=True)}
            started = await self._pause(started)
            self._balance = (key, (members, pool_views(proxy, members)))
            started = await self._pause(started)
        now = proxy.clock()
        snap = assemble(proxy, [], now, time.time(), self._balance[1])
        delta = since is not None and epoch == self.epoch and 0 <= since <= self.version
        after = since if since is not None and delta else -1
        parts = [e.json for e in entries if e.version > after]
        started = await self._pause(started)
        head = dataclasses.replace(snap, backends=[]).to_json_bytes()
        started = await self._pause(started)
        extra = b'{"version":%d,"epoch":%b,' % (self.version, json.dumps(self.epoch).encode())
        if delta:
            extra += b'"delta":true,"names":' + self._names_json + b","
        i = head.index(_NO_BACKENDS)
        tail = head[i + len(_NO_BACKENDS) :]
        # a megabyte at 1,000 backends, copied once: the answer's head and tail go on the first
        # and last view's bytes (a kilobyte each), and one join puts the commas between
        opening = b"".join((extra, head[1:i], b'"backends":['))
        closing = b"]" + tail
        if parts:
            parts[0] = opening + parts[0]
            parts[-1] += closing
            body = b",".join(parts)
        else:
            body = opening + closing
        self._spent(started)
        return body

    def _spent(self, started: float) -> None:
        spent = time.perf_counter() - started
        self.busy_s += spent
        self.longest_s = max(self.longest_s, spent)

    async def _pause(self, started: float) -> float:
        """Yield to the loop if this slice has run its time; when the next one starts."""
        if time.perf_counter() - started < self.slice_s:
            return started
        self._spent(started)
        await self.turns.rest()
        return time.perf_counter()

    async def refresh(self, *, paced: bool = False) -> None:
        """Bring every view up to date; callers arriving meanwhile share the same pass. A
        ``paced`` pass rests between slices until someone not pacing waits on it."""
        task = self._refreshing
        if task is None or task.done():
            self.paced = paced
            task = self._refreshing = asyncio.ensure_future(self._refresh())
        elif not paced:
            self.paced = False  # someone waits on it now: no more resting
        await asyncio.shield(task)

    # --- rebuilding --------------------------------------------------------------------------

    def _respliced(
        self,
        e: Kept,
        b: Backend,
        now: float,
        fast: int,
        tick: bool,
        outcome: ConnectionCount | None,
    ) -> None:
        """Read ``e``'s moving figures again and splice them into its JSON. Within a tick, with
        no new outcome, only the "now" window's (the percentiles' and the series' slots are a
        tick long); at a new tick the windows'; after an outcome every figure of the record
        and the breaker's calls."""
        proxy = self.control.proxy
        rec = proxy.merged_backend_record(b)
        f = e.figures
        parts = e.parts
        assert parts is not None
        if outcome is not None:
            fig = rec.figures(now)
            conns = outcome(b, fig.in_flight)
            assign(f, read_figures(fig, rec.retries_total, conns, f.connections_source))
            if b.breaker is not None and len(parts) == 4:
                e.calls = calls_json(b.breaker.stats(now))
        else:
            rps, demand, errors, traffic = rec.rates(now)
            refused = rec.refused_at_cap_total
            if not tick:
                if (
                    rps == f.rps
                    and demand == f.demand_rps
                    and errors == f.error_ratio
                    and traffic == f.bytes_per_s
                    and refused == f.refused_at_cap_total
                ):  # no slot with anything in it left the window: the view is as it was
                    e.fast = fast
                    self.spliced += 1
                    return
                f.rps_series[-1] = rps
            else:
                f.rps_series[:] = rec.series(now, rps)
                samples = rec.recent_samples(now)
                if samples != f.latency_samples:  # samples left the window
                    q = rec.figures(now)
                    f.p50_ms, f.p90_ms, f.p99_ms, f.p999_ms = (
                        q.p50_ms,
                        q.p90_ms,
                        q.p99_ms,
                        q.p999_ms,
                    )
                    f.latency_samples = samples
            f.rps, f.error_ratio, f.bytes_per_s = rps, errors, traffic
            f.demand_rps, f.refused_at_cap_total = demand, refused
        data = splice(parts, e.calls, f)
        self.spliced += 1
        if data != e.json:
            self.version += 1
            e.version = self.version
            e.json = data
        e.fast = fast
        e.rating = shows_rate(f, f.in_flight)
        e.moving = e.others or windows_moving(f, f.in_flight)
        m = e.member
        if m.rate != f.rps or m.demand != f.demand_rps:
            e.member = Member(f.rps, m.weight, m.eligible, f.demand_rps, m.max_rps, m.admitting)

    def _store(
        self,
        name: str,
        e: Kept | None,
        key: tuple[object, ...],
        when: tuple[int, int, int],
        view: BackendView,
        data: bytes,
        version: int,
    ) -> None:
        """Keep a rebuilt view's JSON and what splicing and the balance figures read of it;
        ``when``: the tick, the rate slot and the health checks it was built at."""
        tick, fast, checks = when
        figures = figures_of(view)
        others = others_moving(view)
        cut = template(data, figures)
        parts, calls = cut if cut is not None else (None, b"")
        health = health_span(parts, view.health)
        moving = others or windows_moving(figures, view.in_flight)
        rating = shows_rate(figures, view.in_flight)
        member = member_of(view)
        if e is None:
            self._entries[name] = Kept(
                key, tick, fast, data, version, moving, rating, member, checks, figures,
                parts, calls, others, health,
            )  # fmt: skip
            return
        # the entry kept, its fields replaced: a rebuilt view (every health check's at the
        # next tick) makes no new containers that outlive the poll for the collector
        e.key, e.tick, e.fast, e.json, e.version = key, tick, fast, data, version
        e.moving, e.rating, e.checks, e.parts, e.calls = moving, rating, checks, parts, calls
        e.others, e.health = others, health
        if member != e.member:
            e.member = member
        assign(e.figures, figures)

    def _context(self) -> Pass:
        control = self.control
        proxy = control.proxy
        now = proxy.clock()
        return Pass(
            connection_counter(proxy),
            scorer_for(proxy),
            process_views(control.fleet),
            tuple(id(p) for p in proxy.peer_records.values()),
            now,
            int(now / self.tick_s),
            int(now / self.rate_tick_s),
        )

    async def kept_body(self, since: int | None = None, epoch: str | None = None) -> bytes:
        """``body`` while a background pass keeps what moves with time (``keeper.Keeper``):
        only a ``catch_up`` before the answer, the pass stepping aside meanwhile."""
        self.busy_s = self.longest_s = 0.0
        self.begin_answer()
        try:
            await self.catch_up()
            return await self.answer(since, epoch)
        finally:
            self.end_answer()

    def begin_answer(self) -> None:
        self.answering += 1
        self._answered.clear()

    def end_answer(self) -> None:
        self.answering -= 1
        if not self.answering:
            self._answered.set()

    async def catch_up(self) -> None:
        """Bring up to date now what moves with outcomes and events — counters, in flight,
        states, every view an event named, new backends — and not what moves with time alone
        (rates, percentiles and series of backends with no new outcome: ``refresh`` does those,
        in the background while a console watches). A key a backend and a splice for each one
        that moved: what a poll must pay before it answers."""
        busy, longest = await self._walk(timely=True)
        self.busy_s += busy
        self.longest_s = max(self.longest_s, longest)

    async def _refresh(self) -> None:
        self.pass_busy_s, self.pass_longest_s = await self._walk(timely=False)

    async def _walk(self, timely: bool) -> tuple[float, float]:
        """One pass over the backends, in slices; its time on the loop and longest slice."""
        await self.turns.take()
        try:
            return await self._walk_slices(timely)
        finally:
            self.turns.give()

    async def _walk_slices(self, timely: bool) -> tuple[float, float]:
        started = time.perf_counter()
        busy = longest = 0.0
        proxy = self.control.proxy
        touched = self._cursor.touched()
        ctx = self._context()
        backends = list(proxy.backends.values())
        entries = self._entries
        for i, b in enumerate(backends):
            if i % _CHECK_EVERY == 0 and (spent := time.perf_counter() - started) > self.slice_s:
                busy += spent
                longest = max(longest, spent)
                paced = self.paced and not timely
                await self.turns.rest(spent * self.pace if paced else 0)
                if paced and self.answering:  # a poll is being answered: let it be
                    await self.turns.wait(self._answered.wait())
                started = time.perf_counter()
                ctx.now = now = proxy.clock()
                ctx.tick, ctx.fast = int(now / self.tick_s), int(now / self.rate_tick_s)
            forced = touched is None or b.name in touched
            key = view_key(ctx.peers, b, ctx.connections)
            if timely and not forced:  # a poll: nothing moved with outcomes, nothing to do
                e = entries.get(b.name)
                if e is not None and e.key == key:
                    continue
            if proxy.backends.get(b.name) is b:  # not removed (or replaced) meanwhile
                self._update(ctx, b, key, forced)
        names = list(proxy.backends)
        if names != self._names:
            for gone in self._entries.keys() - set(names):
                del self._entries[gone]
            self._names = names
            self._names_json = json.dumps(names, separators=(",", ":")).encode()
            self.version += 1  # a removal is a change too
        if self.freeze_built and self._entries:
            self.freeze_built = False
            gc.freeze()
        spent = time.perf_counter() - started
        return busy + spent, max(longest, spent)

    def _update(self, ctx: Pass, b: Backend, key: tuple[object, ...], forced: bool) -> None:
        """Bring ``b``'s view, whose ``view_key`` is now ``key``, up to date: nothing, a splice
        of what moved, or a rebuild."""
        control = self.control
        proxy = control.proxy
        name, now, tick, fast = b.name, ctx.now, ctx.tick, ctx.fast
        connections, scorer, processes = ctx.connections, ctx.scorer, ctx.processes
        e = self._entries.get(name)
        checks = b.health.checks_total if b.health is not None else 0
        if e is not None and not forced and e.key == key:
            if e.tick == tick:
                if not e.rating or e.fast == fast:
                    return
                if e.parts is not None:  # only the "now" window moved
                    self._respliced(e, b, now, fast, False, None)
                    return
            elif not (e.moving or e.checks != checks):
                return
            elif e.parts is not None and not e.others and rechecked(e, b, now, checks):
                e.tick = tick  # only the record's windows (and the checks' runs) moved
                self._respliced(e, b, now, fast, True, None)
                return
        elif (
            e is not None
            and not forced
            and e.parts is not None
            and not e.others
            and e.key[OUTCOME:] == key[OUTCOME:]
            and rechecked(e, b, now, checks)
        ):  # new outcomes alone: the record's figures and the breaker's calls moved
            e.key, e.tick = key, tick
            self._respliced(e, b, now, fast, True, connections or in_flight_only)
            return
        view = backend_view(
            proxy,
            b,
            now,
            connections=connections,
            scorer=scorer,
            process=processes.get(name),
            faults=control.faults,
        )
        data = _BACKEND.dump_json(view)
        self.rebuilt += 1
        if e is None or data != e.json:
            self.version += 1
            version = self.version
        else:
            version = e.version
        self._store(name, e, key, (tick, fast, checks), view, data, version)
