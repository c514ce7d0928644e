"""The event log: newest first, colour-coded by kind, wall-clock times, filterable.

A line-API scroll view (``render_line``) over the list of events: adding a batch appends to a
list and grows the virtual height; only the lines on screen are ever rendered, each event's
line is rendered once and cached. A filter rebuilds only the list of indices shown.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.segment import Segment
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from lbtui.control.model import Event, Note
from lbtui.tui.view import event_segments, event_text, matches

KEEP = 2000
"""Events kept (the balancer's ring holds 2048 by default)."""


class EventLog(ScrollView, can_focus=True):
    """Every event seen since the console started, newest at the top."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._events: list[Event] = []
        self._shown: list[Event] = []
        """Oldest first; line 0 on screen is the last one."""
        self._strips: dict[int, Strip] = {}
        self._width = 0
        self.filter = ""
        self._last_id = 0
        """The newest balancer event added (the console's own notes have negative ids)."""
        self._notes = 0

    @property
    def shown(self) -> list[Event]:
        """The events on the log, newest first."""
        return self._shown[::-1]

    def add(self, events: Iterable[Event]) -> None:
        last = self._last_id
        fresh = [e for e in events if e.id > last]
        if not fresh:
            return
        self._last_id = fresh[-1].id
        self._append(fresh)

    def note(self, message: str, at: float, wall: float) -> Event:
        """An event of the console's own (a chaos run it started or ended), placed on the
        log's timeline now; it has a negative id, so it never shadows the balancer's."""
        self._notes += 1
        event = Note(id=-self._notes, at=at, wall=wall, message=message)
        self._append([event])
        return event

    def _append(self, fresh: list[Event]) -> None:
        self._events.extend(fresh)
        self._shown.extend(e for e in fresh if self._matches(e))
        if len(self._events) > KEEP:
            del self._events[: len(self._events) - KEEP]
            kept = {e.id for e in self._events}
            self._shown = [e for e in self._shown if e.id in kept]
            self._strips = {k: v for k, v in self._strips.items() if k in kept}
        self._resize()

    def clear(self) -> None:
        self._last_id = 0
        self._events.clear()
        self._shown.clear()
        self._strips.clear()
        self._resize()

    def set_filter(self, query: str) -> None:
        self.filter = query.strip()
        self._shown = [e for e in self._events if self._matches(e)]
        self._resize()

    def _matches(self, e: Event) -> bool:
        return not self.filter or matches(event_text(e), self.filter)

    def _strip(self, e: Event) -> Strip:
        strip = self._strips.get(e.id)
        if strip is None:
            text = Text.assemble(*event_segments(e), no_wrap=True)
            segments = list(text.render(self.app.console, end=""))
            strip = Strip(segments, text.cell_len)
            self._strips[e.id] = strip
            self._width = max(self._width, text.cell_len)
        return strip

    def _resize(self) -> None:
        for e in self._shown[-self.size.height - 1 :]:
            self._strip(e)
        self.virtual_size = Size(max(self._width, self.size.width), len(self._shown))
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        style = self.rich_style
        if index >= len(self._shown):
            return Strip([Segment(" " * width, style)], width)
        strip = self._strip(self._shown[-1 - index])
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_style(style)
