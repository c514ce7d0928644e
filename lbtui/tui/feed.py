"""The console's two live sources, each a loop that posts typed messages.

``poll_snapshots`` asks the ``Control`` for a snapshot every ``refresh_s`` (bounded by a timeout)
and posts ``SnapshotArrived``; a burst of those collapses to the newest (``can_replace``, as in
toolong's messages). Over HTTP the control asks only for what changed since its last read
(``?since``) and says which backends those were (``changed``), so a console watching 1,000 quiet
backends costs the balancer what one watching 10 does. ``follow_events`` streams events and
posts them in batches (``EventsArrived``) so that a storm of events costs one repaint, not
hundreds.

When the control fails (unreachable, unauthorized, connection lost, timeout) the snapshot loop
posts ``LinkChanged`` with the problem and a countdown, and retries with exponential backoff
capped at ``MAX_BACKOFF_S``; the widgets keep the last snapshot, greyed as stale. Nothing here
touches a widget: the app runs these loops in workers and routes the messages (STYLE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from textual.message import Message

from lbtui.control.errors import ControlError, Unauthorized
from lbtui.control.interface import Control
from lbtui.control.model import Event, Snapshot

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 10.0
EVENT_BATCH_S = 0.05
"""Events arriving within this long of the first of a burst are posted together."""


class Backoff:
    """1 s, 2 s, 4 s, 8 s, 10 s, 10 s … until ``reset``."""

    def __init__(self, first_s: float = FIRST_BACKOFF_S, cap_s: float = MAX_BACKOFF_S) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self._next = first_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


def describe_error(exc: BaseException) -> str:
    """One short line for the header: what went wrong talking to the balancer."""
    if isinstance(exc, Unauthorized):
        return f"the admin API refused the token (401: {exc.message}); check --token"
    if isinstance(exc, ControlError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "no answer (timeout)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@dataclass(frozen=True, slots=True)
class Link:
    """The state of the connection to the balancer, as the header shows it."""

    ok: bool
    problem: str = ""
    retry_in_s: float | None = None
    failures: int = 0
    """Consecutive failed polls."""
    refused: bool = False
    """The balancer refused the token (401): not a connection problem, and no retry will
    change it; the console stops (``lbtui attach`` exits 2)."""


@dataclass
class SnapshotArrived(Message):
    snapshot: Snapshot
    took_s: float
    """How long the control took to answer."""
    events_known: int = 0
    """The newest event id the console had when it asked: a snapshot whose ``last_event_id``
    is below it comes from a balancer that restarted (ids start over)."""
    changed: frozenset[str] | None = None
    """Backends that changed since the previous snapshot, when the control knows (an attach
    reads deltas); ``None``: any may have. Widgets may redraw only those rows."""

    def can_replace(self, message: Message) -> bool:
        # a burst collapses to the newest, which then may carry changes it did not list
        if isinstance(message, SnapshotArrived) and self.changed is not None:
            if message.changed is None:
                self.changed = None
            else:
                self.changed = self.changed | message.changed
        return isinstance(message, SnapshotArrived)


@dataclass
class EventsArrived(Message):
    events: tuple[Event, ...]


@dataclass
class LinkChanged(Message):
    link: Link

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LinkChanged)


Post = Callable[[Message], object]


async def poll_snapshots(
    control: Control,
    post: Post,
    refresh_s: float,
    *,
    timeout_s: float | None = None,
    backoff: Backoff | None = None,
    known_event_id: Callable[[], int] = lambda: 0,
) -> None:
    """Forever: snapshot, post, wait ``refresh_s``; on failure, count down and retry."""
    timeout = timeout_s if timeout_s is not None else max(2.0, 8 * refresh_s)
    backoff = backoff or Backoff()
    failures = 0
    while True:
        started = time.monotonic()
        known = known_event_id()
        try:
            async with asyncio.timeout(timeout):
                snap = await control.snapshot()
        except Unauthorized as exc:
            post(LinkChanged(Link(False, describe_error(exc), None, failures + 1, refused=True)))
            return
        except (ControlError, OSError, TimeoutError, ConnectionError) as exc:
            problem = describe_error(exc)
        except Exception as exc:  # httpx and friends: whatever the transport raises
            problem = describe_error(exc)
        else:
            took = time.monotonic() - started
            if failures:
                failures = 0
                backoff.reset()
                post(LinkChanged(Link(ok=True)))
            changed: frozenset[str] | None = getattr(control, "changed", None)
            post(SnapshotArrived(snap, took, known, changed))
            await asyncio.sleep(max(0.0, refresh_s - took))
            continue
        failures += 1
        delay = backoff.next()
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            post(LinkChanged(Link(False, problem, left, failures)))
            await asyncio.sleep(min(1.0, left))
        post(LinkChanged(Link(False, problem, 0.0, failures)))


async def follow_events(
    control: Control,
    post: Post,
    *,
    since_id: int = 0,
    backoff: Backoff | None = None,
    batch_s: float = EVENT_BATCH_S,
) -> None:
    """Forever: stream events from ``since_id`` on, posting them in batches; on a broken
    stream, resume from the last id seen after a backoff."""
    backoff = backoff or Backoff()
    last_id = since_id
    pending: list[Event] = []
    arrived = asyncio.Event()

    async def read(stream: AsyncIterator[Event]) -> None:
        nonlocal last_id
        async for event in stream:
            if event.id <= last_id:
                continue
            last_id = event.id
            pending.append(event)
            arrived.set()
            backoff.reset()

    while True:
        stream = control.stream_events(last_id)
        reader = asyncio.create_task(read(stream))
        try:
            while not reader.done():
                waiter = asyncio.create_task(arrived.wait())
                try:
                    await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if pending:
                    await asyncio.sleep(batch_s)  # let the rest of a burst arrive
                    batch = tuple(pending)
                    pending.clear()
                    arrived.clear()
                    post(EventsArrived(batch))
            reader.result()  # raises what broke the stream
        except asyncio.CancelledError:
            raise
        except Exception:  # the snapshot loop reports the link's state
            pass
        finally:
            if not reader.done():
                reader.cancel()
                await asyncio.wait({reader})
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        await asyncio.sleep(backoff.next())


def new_events(events: list[Event], batch: tuple[Event, ...], keep: int = 2000) -> list[Event]:
    """``events`` (oldest first) with ``batch`` appended, deduplicated by id, at most ``keep``."""
    last = events[-1].id if events else 0
    events.extend(e for e in batch if e.id > last)
    if len(events) > keep:
        del events[: len(events) - keep]
    return events
