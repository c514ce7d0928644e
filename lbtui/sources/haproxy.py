"""``HaproxyControl``: the console's ``Control`` on a running HAProxy, through its Runtime API.

``lbtui attach unix:///run/haproxy/admin.sock`` (or ``tcp://HOST:PORT``) gets the same console
as on lbtui: each snapshot is one read of ``show stat``, ``show servers state`` and ``show info``
(``haproxy_view`` turns them into the model), and what changed since the previous read becomes
events — a server going DOWN with HAProxy's check result (``L4CON Connection refused``), a
drain or weight set by someone else. HAProxy keeps no timeline of its own, so the timeline is
this console's: events seen while attached, and this console's own actions.

The keys map onto ``set server BACKEND/SERVER state ready|drain|maint`` and ``… weight N``
(an integer 0–256, HAProxy's range). What HAProxy cannot do (delay, abort, breakers, algorithm,
limits) raises ``Unavailable`` with the reason that ``Snapshot.unavailable`` also carries, so
the console says why instead of opening a form. ``read_only`` refuses every action.

The first change this control makes to a server remembers its admin state and weight as
found; :meth:`HaproxyControl.rollback` puts them back (the end of a console session or a chaos
run), and :meth:`HaproxyControl.restore` brings every server back to a snapshot's state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

from lbtui.control.errors import Invalid, NotFound, ReadOnly, Unavailable
from lbtui.control.model import (
    Action,
    ActionResult,
    AdminChanged,
    AdminState,
    Announce,
    ConfigNote,
    Event,
    Note,
    SetAdmin,
    SetWeight,
    Snapshot,
    WeightChanged,
)
from lbtui.sources.counters import CounterRates
from lbtui.sources.haproxy_view import Seen, build, changes, record, unavailable
from lbtui.sources.runtime_api import (
    RuntimeApi,
    SocketAddress,
    parse_info,
    parse_servers_state,
    parse_stat,
)
from lbtui.sources.timeline import PolledTimeline

MIN_READ_INTERVAL_S = 0.1
"""Reads closer together than this share one (the snapshot poll and the event stream)."""
EVENT_POLL_S = 0.25
"""How often the event stream reads HAProxy when nobody asks for snapshots."""
MAX_WEIGHT = 256

HAPROXY_STATE: dict[AdminState, str] = {
    "active": "ready",
    "draining": "drain",
    "disabled": "maint",
}
"""lbtui's admin states as ``set server … state`` words."""


class HaproxyControl:
    """See and steer one HAProxy through its Runtime API (stats socket at admin level)."""

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        origin: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        timeout_s: float = 3.0,
    ) -> None:
        self.url = url
        self.api = RuntimeApi(SocketAddress.parse(url), timeout_s=timeout_s)
        self.read_only = read_only
        self.origin = origin
        """Who acts through this control (``chaos NAME``): put on its action events."""
        self._clock = clock
        self._wall = wall_clock
        self.timeline = PolledTimeline(
            self.snapshot, EVENT_POLL_S, clock=clock, wall_clock=wall_clock
        )
        self.ring = self.timeline.ring
        self._rates = CounterRates()
        self._seen: dict[str, Seen] | None = None
        self._pid: str | None = None
        self._last: Snapshot | None = None
        self._read_at = -1e18
        self._lock = asyncio.Lock()
        self.found: dict[str, tuple[AdminState, float]] = {}
        """Each server this control changed: its admin state and weight before the first
        change (what :meth:`rollback` restores)."""

    def describe_target(self) -> str:
        return self.url

    # --- reading

    async def snapshot(self) -> Snapshot:
        async with self._lock:
            return await self._read()

    async def _read(self) -> Snapshot:
        now = self._clock()
        if self._last is not None and now - self._read_at < MIN_READ_INTERVAL_S:
            return dataclasses.replace(self._last, last_event_id=self.ring.last_id)
        stat_text, state_text, info_text = await asyncio.gather(
            self.api.command("show stat"),
            self.api.command("show servers state"),
            self.api.command("show info"),
        )
        stat = parse_stat(stat_text)
        info = parse_info(info_text)
        now = self._clock()
        pid = info.get("Pid")
        if self._pid is not None and pid != self._pid:
            self._rates = CounterRates()  # its counters start over
            self._emit(
                ConfigNote(message=f"HAProxy restarted (pid {self._pid} → {pid})"), notify=False
            )
        record(self._rates, now, stat)
        snap, seen = build(
            stat,
            parse_servers_state(state_text),
            self._rates,
            now=now,
            wall=self._wall(),
            last_event_id=0,
        )
        if self._seen is None:
            groups = len(snap.pools)
            self._emit(
                ConfigNote(
                    message=f"attached to HAProxy {info.get('Version', '?')} (pid {pid}): "
                    f"{len(snap.frontends)} frontends, {len(seen)} servers in {groups} backends"
                ),
                notify=False,
            )
        else:
            for event in changes(self._seen, seen):
                self._emit(event, notify=False)
        self._pid = pid
        self._seen = seen
        self.timeline.notify()
        self._last = dataclasses.replace(snap, last_event_id=self.ring.last_id)
        self._read_at = now
        return self._last

    def _emit(self, event: Event, *, notify: bool = True) -> Event:
        return self.timeline.emit(event, notify=notify)

    async def events(self, since_id: int = 0) -> list[Event]:
        return self.ring.since(since_id)

    def stream_events(self, since_id: int = 0) -> AsyncIterator[Event]:
        """Events above ``since_id``, then each new one: the source is read every
        ``EVENT_POLL_S`` while the stream is followed (a read the snapshot poll made counts)."""
        return self.timeline.follow(since_id)

    async def act(self, action: Action) -> ActionResult:
        if self.read_only:
            raise ReadOnly("this console is read-only")
        reason = unavailable().get(action.kind)
        if reason is not None:
            raise Unavailable(reason)
        if isinstance(action, Announce):
            self._emit(Note(message=action.text, origin=self.origin))
            return None
        async with self._lock:
            if self._seen is None:
                await self._read()
            assert self._seen is not None
            if isinstance(action, SetAdmin):
                await self._set_admin(action.backend, action.state)
            elif isinstance(action, SetWeight):
                await self._set_weight(action.backend, action.weight)
            else:
                raise Unavailable(f"HAProxy's Runtime API has no verb for {action.kind}")
        return None

    def _server(self, name: str) -> Seen:
        assert self._seen is not None
        seen = self._seen.get(name)
        if seen is None:
            raise NotFound(
                f"no server named {name!r} (HAProxy's servers are BACKEND/SERVER)",
                field="backend",
            )
        return seen

    async def _command(self, line: str, field: str) -> None:
        answer = (await self.api.command(line)).strip()
        if not answer:
            return
        if answer.startswith("No such"):
            raise NotFound(f"HAProxy: {answer}", field="backend")
        if "permission denied" in answer.lower():
            raise Unavailable(f"HAProxy: {answer} (the stats socket needs 'level admin')")
        raise Invalid(f"HAProxy refused {line!r}: {answer}", field=field)

    async def _set_admin(self, name: str, state: AdminState) -> None:
        seen = self._server(name)
        self.found.setdefault(name, (seen.admin, seen.weight))
        await self._command(f"set server {name} state {HAPROXY_STATE[state]}", "state")
        word = {"active": "READY", "draining": "DRAIN", "disabled": "MAINT"}[state]
        self._emit(
            AdminChanged(
                backend=name,
                old=seen.admin,
                new=state,
                message=f"{seen.status} → {word} (set server state {HAPROXY_STATE[state]})",
                origin=self.origin,
            )
        )
        up = seen.up if state != "active" or seen.admin != "disabled" else True
        assert self._seen is not None
        self._seen[name] = dataclasses.replace(seen, admin=state, up=up)
        self._read_at = -1e18  # the next snapshot reads the new state

    async def _set_weight(self, name: str, weight: float) -> None:
        seen = self._server(name)
        if weight != int(weight) or not 0 <= weight <= MAX_WEIGHT:
            raise Invalid(
                f"HAProxy weights are whole numbers from 0 to {MAX_WEIGHT}, got {weight:g}",
                field="weight",
            )
        self.found.setdefault(name, (seen.admin, seen.weight))
        await self._command(f"set server {name} weight {int(weight)}", "weight")
        self._emit(
            WeightChanged(
                backend=name,
                old=seen.weight,
                new=int(weight),
                message=f"weight {seen.weight:g} → {int(weight)} (set server weight)",
                origin=self.origin,
            )
        )
        assert self._seen is not None
        self._seen[name] = dataclasses.replace(seen, weight=float(int(weight)))
        self._read_at = -1e18

    # --- undo

    async def rollback(self) -> list[str]:
        """Put back the admin state and weight of every server this control changed, as it
        found them; the servers restored (a server gone meanwhile is skipped)."""
        restored: list[str] = []
        for name, (admin, weight) in sorted(self.found.items()):
            try:
                await self.act(SetWeight(backend=name, weight=weight))
                await self.act(SetAdmin(backend=name, state=admin))
            except NotFound:
                continue
            restored.append(name)
        self.found.clear()
        return restored

    async def restore(self, baseline: Snapshot) -> list[str]:
        """Bring every server of ``baseline`` back to its admin state and weight there, when
        they differ now; the servers changed."""
        now = await self.snapshot()
        changed: list[str] = []
        for b in baseline.backends:
            try:
                current = now.backend(b.name)
            except KeyError:
                continue
            if current.weight_configured != b.weight_configured:
                await self.act(SetWeight(backend=b.name, weight=b.weight_configured))
                changed.append(b.name)
            if current.admin != b.admin:
                await self.act(SetAdmin(backend=b.name, state=b.admin))
                if b.name not in changed:
                    changed.append(b.name)
        return changed

    async def aclose(self) -> None:
        return None
