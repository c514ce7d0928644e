"""``MultiControl``: one ``Control`` over several balancers (``lbtui attach URL URL…``).

It composes a ``Control`` per balancer (``HttpControl`` for attach) and shows them as one:

- **seeing**: every snapshot asks all balancers at once; the reachable ones are merged
  (``merge.py`` says how each figure adds up) and each balancer's own state, reachable or not,
  is kept in :attr:`MultiControl.balancers` for the console's balancers panel and the
  per-balancer breakdown. One balancer that does not answer drops out of the sums and stays
  listed with its last snapshot and the reason; only when none answers does ``snapshot``
  raise (``Unavailable``), which is what a console's link state is for.
- **events**: one timeline, kept here. Each balancer's events are pulled (``events``) or
  streamed by a pump task per balancer, tagged with the balancer's name (``Event.balancer``),
  put on the console's clock and given ids of this timeline, in time order within what
  arrives together. A balancer that restarts (its ids went back) is followed from its start.
- **acting**: an action goes to every balancer, or to the one chosen (:meth:`select`), all at
  once; each one's result is an :class:`Outcome`, which a console collects with
  :func:`collect_outcomes` to show them. The action fails if any balancer refused it.

With a single balancer it is that balancer: ids, times and errors pass through unchanged, so
it passes the ``Control`` contract suite as the others do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from lbtui.control.errors import ControlError, ReadOnly, Unavailable
from lbtui.control.interface import Control
from lbtui.control.merge import BalancerView, Merger, Part, clock_shift
from lbtui.control.model import Action, ActionResult, Event, Snapshot

KEEP_EVENTS = 4096
"""Events this timeline holds (a balancer's ring holds 2048)."""
PUMP_BACKOFF_S = (0.5, 5.0)
"""First and longest pause before a broken event stream is followed again."""


class PartlyDone(ControlError):
    """An action some balancers carried out and others refused or could not be reached for;
    the message lists each. Never on the wire: only a console over several balancers says it."""

    status = 207


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one balancer answered to one action."""

    balancer: str
    error: ControlError | None
    """None: done."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def text(self) -> str:
        return f"{self.balancer} ✓" if self.error is None else f"{self.balancer} ✖ {self.error}"


_OUTCOMES: ContextVar[list[Outcome] | None] = ContextVar("lbtui_multi_outcomes", default=None)


@contextlib.contextmanager
def collect_outcomes() -> Iterator[list[Outcome]]:
    """Within this block (this task), every balancer's result of every action sent through a
    ``MultiControl`` is appended to the list it gives."""
    got: list[Outcome] = []
    token = _OUTCOMES.set(got)
    try:
        yield got
    finally:
        _OUTCOMES.reset(token)


class _Balancer:
    """What is known of one balancer: its control, last snapshot, how far its events were read."""

    def __init__(self, name: str, control: Control) -> None:
        self.name = name
        self.control = control
        self.snapshot: Snapshot | None = None
        self.received: float | None = None
        self.problem = "not asked yet"
        self.reachable = False
        self.event_id = 0
        """The newest of its event ids on the timeline."""
        self.pump: asyncio.Task[None] | None = None


class MultiControl:
    """Several balancers, by name, as one ``Control``."""

    def __init__(
        self,
        members: Sequence[tuple[str, Control]],
        *,
        read_only: bool = False,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        names = [n for n, _ in members]
        if not names:
            raise ValueError("no balancer to watch")
        if len(set(names)) != len(names):
            raise ValueError(f"balancer names must differ, got {names}")
        self._members = [_Balancer(n, c) for n, c in members]
        self.single = len(self._members) == 1
        self.read_only = read_only or all(c.read_only for _, c in members)
        self.timeout_s = timeout_s
        self._clock = clock
        self._wall = wall
        self.target: str | None = None
        """The balancer actions go to; None: every one."""
        self.balancers: tuple[BalancerView, ...] = tuple(self._views())
        """Each balancer as of the latest snapshot: what a console's balancers panel shows."""
        self._ring: deque[Event] = deque(maxlen=KEEP_EVENTS)
        self._last_id = 0
        self._grown: asyncio.Event | None = None
        self._primed = False
        self._merger = Merger()

    @property
    def changed(self) -> frozenset[str] | None:
        """Backends the last snapshot changed (None: any may have), as ``HttpControl`` says."""
        if self.single:
            got: frozenset[str] | None = getattr(self._members[0].control, "changed", None)
            return got
        return self._merger.changed

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._members]

    def describe_target(self) -> str:
        if self.single:
            return self._members[0].control.describe_target()
        return ", ".join(m.control.describe_target() for m in self._members)

    def targets(self) -> list[str]:
        """Each balancer's own target (its admin API's URL)."""
        return [m.control.describe_target() for m in self._members]

    def select(self, name: str | None) -> None:
        """Send actions to ``name`` only, or (None) to every balancer."""
        if name is not None and name not in self.names:
            raise ValueError(f"no balancer named {name!r} (known: {', '.join(self.names)})")
        self.target = name

    # --- seeing ------------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        got = await asyncio.gather(*(self._ask(m) for m in self._members), return_exceptions=True)
        now, wall = self._clock(), self._wall()
        for m, res in zip(self._members, got, strict=True):
            if isinstance(res, BaseException):
                m.reachable = False
                m.problem = _problem(res)
                continue
            if res.last_event_id < m.event_id:
                self._restarted(m)
            m.snapshot, m.received, m.reachable, m.problem = res, now, True, ""
        self.balancers = tuple(self._views())
        live = [m for m in self._members if m.reachable and m.snapshot is not None]
        if not live:
            first = got[0]
            if self.single and isinstance(first, BaseException):
                raise first
            raise Unavailable(
                "no balancer answers: " + "; ".join(f"{m.name}: {m.problem}" for m in self._members)
            )
        if self.single:
            assert live[0].snapshot is not None
            return live[0].snapshot
        parts = [
            Part(m.name, m.snapshot, clock_shift(m.snapshot, now, wall))
            for m in live
            if m.snapshot is not None
        ]
        return self._merger.merge(parts, at=now, wall=wall, last_event_id=self._last_id)

    async def _ask(self, m: _Balancer) -> Snapshot:
        async with asyncio.timeout(self.timeout_s):
            return await m.control.snapshot()

    def _views(self) -> Iterator[BalancerView]:
        now = self._clock()
        for m in self._members:
            age = 0.0 if m.reachable or m.received is None else now - m.received
            yield BalancerView(
                m.name, m.control.describe_target(), m.reachable, m.problem, m.snapshot, age
            )

    def _restarted(self, m: _Balancer) -> None:
        """Its ids went back: a new balancer behind the address. Follow it from its start."""
        m.event_id = 0
        if self.single:
            self._ring.clear()
            self._last_id = 0
        if m.pump is not None:
            m.pump.cancel()
            m.pump = asyncio.create_task(self._pump(m))

    # --- events ------------------------------------------------------------------------------

    async def events(self, since_id: int = 0) -> list[Event]:
        await self._pull()
        return [e for e in self._ring if e.id > since_id]

    async def _pull(self) -> None:
        """Read every balancer's events since the last seen, and put them on the timeline in
        time order."""
        got = await asyncio.gather(
            *(m.control.events(m.event_id) for m in self._members), return_exceptions=True
        )
        batch: list[tuple[_Balancer, Event]] = []
        for m, res in zip(self._members, got, strict=True):
            if isinstance(res, BaseException):
                if self.single:
                    raise res
                continue
            batch += [(m, e) for e in res]
        batch.sort(key=lambda pair: pair[1].wall)
        for m, e in batch:
            self._ingest(m, e)
        self._primed = True

    def _ingest(self, m: _Balancer, e: Event) -> None:
        if e.id <= m.event_id:
            return
        m.event_id = e.id
        if self.single:
            self._last_id = e.id
            self._ring.append(e)
        else:
            self._last_id += 1
            shift = clock_shift_of(self._clock(), self._wall())
            e = dataclasses.replace(e, id=self._last_id, at=e.wall + shift, balancer=m.name)
            self._ring.append(e)
        if self._grown is not None:
            self._grown.set()
            self._grown = None

    async def stream_events(self, since_id: int = 0) -> AsyncIterator[Event]:
        if not self._primed:
            await self._pull()
        for m in self._members:
            if m.pump is None or m.pump.done():
                m.pump = asyncio.create_task(self._pump(m))
        last = since_id
        while True:
            grown = self._grown = self._grown or asyncio.Event()
            fresh = [e for e in self._ring if e.id > last]
            for e in fresh:
                last = e.id
                yield e
            if not fresh:
                await grown.wait()

    async def _pump(self, m: _Balancer) -> None:
        """Follow one balancer's event stream onto the timeline, for as long as this control
        lives; a broken stream is followed again after a pause."""
        pause = PUMP_BACKOFF_S[0]
        while True:
            try:
                async for e in m.control.stream_events(m.event_id):
                    self._ingest(m, e)
                    pause = PUMP_BACKOFF_S[0]
            except asyncio.CancelledError:
                raise
            except Exception:
                pass
            await asyncio.sleep(pause)
            pause = min(pause * 2, PUMP_BACKOFF_S[1])

    # --- acting ------------------------------------------------------------------------------

    async def act(self, action: Action) -> ActionResult:
        if self.read_only:
            raise ReadOnly("this console is read-only: actions are refused")
        chosen = [m for m in self._members if self.target in (None, m.name)]
        got = await asyncio.gather(*(m.control.act(action) for m in chosen), return_exceptions=True)
        outcomes: list[Outcome] = []
        for m, res in zip(chosen, got, strict=True):
            if isinstance(res, ControlError):
                outcomes.append(Outcome(m.name, res))
            elif isinstance(res, BaseException):
                outcomes.append(Outcome(m.name, Unavailable(_problem(res))))
            else:
                outcomes.append(Outcome(m.name, None))
        collected = _OUTCOMES.get()
        if collected is not None:
            collected.extend(outcomes)
        failed = [o.error for o in outcomes if o.error is not None]
        if not failed:
            return next((r for r in got if isinstance(r, dict)), None)
        if len(chosen) == 1:
            raise failed[0]
        message = "; ".join(o.text() for o in outcomes)
        kinds = {type(e) for e in failed}
        if len(failed) == len(outcomes) and len(kinds) == 1:
            raise kinds.pop()(message, field=failed[0].field)
        raise PartlyDone(message, field=failed[0].field)

    async def rollback(self) -> list[str]:
        """Each balancer's rollback (the faults this session set there), ``name/backend`` each
        (just the backend with a single balancer)."""
        cleared: list[str] = []
        for m in self._members:
            undo = getattr(m.control, "rollback", None)
            if undo is None:
                continue
            try:
                names = await undo()
            except ControlError:
                continue
            cleared += names if self.single else [f"{m.name}/{n}" for n in names]
        return cleared

    async def aclose(self) -> None:
        pumps = [m.pump for m in self._members if m.pump is not None]
        for task in pumps:
            task.cancel()
        if pumps:
            await asyncio.wait(pumps)
        for m in self._members:
            m.pump = None
            await m.control.aclose()


def clock_shift_of(at: float, wall: float) -> float:
    """What turns a wall time into a time on the clock read as (at, wall)."""
    return at - wall


def _problem(exc: BaseException) -> str:
    if isinstance(exc, ControlError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "no answer (timeout)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
