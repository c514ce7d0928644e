"""The detail pane: one backend, its history, and the reason for every state it is in."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from functools import partial

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from lbtui.control.model import BackendView, Event, Snapshot
from lbtui.tui.foreign import detail_lines
from lbtui.tui.history import LatencyHistory
from lbtui.tui.numbers import clock_text, human_bytes, ms_text, num, rate_text, sparkline, wall_of
from lbtui.tui.reasons import Reason, breaker_window, score_text, state_reasons
from lbtui.tui.view import breaker_cell, event_segments, state_cell, weight_text

RECENT_EVENTS = 8
LABEL_W = 9


def _counts(d: dict[str, int]) -> str:
    return " ".join(f"{k} {v}" for k, v in sorted(d.items()) if v) or "none"


PlotLine = tuple[str, str, int, str, str, str, str]
"""What a plot line shows: label, sparkline, its width, now, max, unit, span."""


def _plot_line(
    label: str, values: Sequence[float], width: int, span: str, unit: str, now: float | None
) -> PlotLine:
    """``now`` is the figure the table shows (the same window), not the plot's last point."""
    hi = max(values, default=0.0)
    if unit == "req/s":
        return (
            label,
            sparkline(values, width),
            width,
            rate_text(now or 0.0),
            rate_text(hi),
            unit,
            span,
        )
    return (label, sparkline(values, width), width, ms_text(now), ms_text(hi), unit, span)


def _plot(text: Text, line: PlotLine) -> None:
    label, spark, width, now, hi, unit, span = line
    text.append(f"{label:<{LABEL_W}}", "bold")
    text.append(f"{spark:<{width}}", "cyan")
    text.append(f"  now {now:>5}  max {hi:>5} {unit:<5}", "")
    text.append(f" {span}\n", "bright_black")


Piece = tuple[Hashable, Callable[[], RenderableType]]
"""A renderable and a key that says everything it shows: equal keys, equal renders."""
Part = tuple[Piece, ...]
"""A part of the pane: pieces shown one after the other (a ``Group`` of them)."""


def _grid(label_width: int, label_style: str = "") -> Table:
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(width=label_width, no_wrap=True, style=label_style)
    table.add_column(ratio=1)
    return table


def _why_row(r: Reason | None, foreign: bool = False) -> Table:
    """One row of the reasons' grid. The grid's column widths do not depend on what is in it
    (a fixed one and a ratio one, expanded), so a grid renders as its rows' grids one after
    the other (``tests/tui/test_detail_parts.py``), and a row that did not change need not
    be rendered again."""
    table = _grid(15)
    if r is None:
        normal = (
            "normally — HAProxy takes it in the rotation"
            if foreign
            else "normally — no fault, breaker closed, not ejected"
        )
        table.add_row(Text("● SERVING", "green"), Text(normal, "bright_black"))
    else:
        table.add_row(Text(r.title, r.style), Text(r.text))
    return table


def _fact_row(label: str, value: str) -> Table:
    """One row of the facts' grid (see ``_why_row``)."""
    table = _grid(LABEL_W - 1, "bright_black")
    table.add_row(label, value)
    return table


def detail_parts(
    b: BackendView,
    snapshot: Snapshot,
    history: LatencyHistory,
    events: Sequence[Event],
    width: int = 90,
) -> list[Part]:
    """The pane about ``b``, top to bottom: the name line, the plots, the reasons, the facts,
    the recent events; each a part made of keyed pieces, so that what did not change need
    not be built, rendered or painted again."""
    breaker = breaker_cell(b) if b.breaker is not None and b.breaker.state != "closed" else ()
    head_key = ("head", b.name, state_cell(b), breaker, b.url, b.zone)

    def head() -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {b.name} ", "bold reverse")
        text.append("  ")
        text.append_text(Text.assemble(*state_cell(b)))
        if breaker:
            text.append("  breaker ", "bright_black")
            text.append_text(Text.assemble(*breaker))
        text.append(f"  {b.url}", "bright_black")
        if b.zone:
            text.append(f"  zone {b.zone}", "bright_black")
        return text

    plot_w = max(10, min(120, width - LABEL_W - 38))
    lines = (
        _plot_line("req/s", b.rps_series, plot_w, "60 s", "req/s", b.rps),
        _plot_line("p50 ms", history.p50(b.name), plot_w, "2 min", "ms", b.p50_ms),
        _plot_line("p99 ms", history.p99(b.name), plot_w, "2 min", "ms", b.p99_ms),
    )

    def plots() -> Text:
        text = Text(no_wrap=True, overflow="crop")
        for line in lines:
            _plot(text, line)
        text.rstrip()
        return text

    reasons: list[Reason | None] = list(state_reasons(b, snapshot)) or [None]
    foreign = b.server is not None
    why = tuple((("why", r, foreign), partial(_why_row, r, foreign)) for r in reasons)
    facts = tuple((("fact", row), partial(_fact_row, *row)) for row in _facts(b, snapshot))

    mine = tuple(
        event_segments(e) for e in [e for e in events if e.backend == b.name][-RECENT_EVENTS:]
    )

    def recent() -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("recent events\n", "bold")
        if not mine:
            text.append("  none yet", "bright_black")
        for i, segments in enumerate(reversed(mine)):
            text.append("  ")
            text.append_text(Text.assemble(*segments))
            if i < len(mine) - 1:
                text.append("\n")
        return text

    return [
        ((head_key, head),),
        ((("plots", lines), plots),),
        why,
        facts,
        ((("recent", mine), recent),),
    ]


def part_renderable(part: Part) -> RenderableType:
    """What a part shows, as one renderable."""
    if len(part) == 1:
        return part[0][1]()
    return Group(*(build() for _, build in part))


def _facts(b: BackendView, snapshot: Snapshot) -> list[tuple[str, str]]:
    """The label / value rows under the reasons."""
    rows: list[tuple[str, str]] = []
    cap = f" · max_rps {num(b.max_rps)}" if b.max_rps is not None else ""
    rows.append(
        (
            "weight",
            f"{weight_text(b)} effective/configured{cap} · in-flight {b.in_flight}"
            f" · conns {b.open_connections} ({b.connections_source})",
        )
    )
    rows.append(
        (
            "latency",
            f"p50 {ms_text(b.p50_ms)} · p90 {ms_text(b.p90_ms)} · p99 {ms_text(b.p99_ms)}"
            f" · p99.9 {ms_text(b.p999_ms)} ms · {human_bytes(b.bytes_per_s)}/s",
        )
    )
    rows.append(
        (
            "totals",
            f"{b.requests_total} requests · {_counts(b.responses_total)} · failures "
            f"{_counts(b.failures_total)} · retries {b.retries_total}",
        )
    )
    if b.breaker is not None:
        rows.append(("breaker", breaker_window(b.breaker)))
    if b.health is not None:
        h = b.health
        since = clock_text(wall_of(snapshot, h.since))
        if h.last_check_ok is None:
            last = "no check yet"
        elif h.last_check_ok:
            last = "last check ok"
        else:
            last = f"last check failed: {h.last_check_detail}"
        rows.append(("health", f"{h.state} since {since} — {h.reason}; {last}"))
    if b.server is not None:
        rows.extend(("haproxy", line) for line in detail_lines(b, snapshot.at))
    if b.score is not None:
        rows.append(("score", f"{snapshot.algorithm}: {score_text(b.score)}"))
    if b.process is not None:
        p = b.process
        alive = "alive" if p.alive else "dead"
        rows.append(
            (
                "process",
                f"pid {p.pid} {alive} · cpu {p.cpu_percent:.0f} % · rss {human_bytes(p.rss_bytes)}",
            )
        )
    return rows


def build_detail(
    b: BackendView,
    snapshot: Snapshot,
    history: LatencyHistory,
    events: Sequence[Event],
    width: int = 90,
) -> Group:
    """Everything the pane shows about ``b`` (pure, so tests and screenshots share it)."""
    return Group(*(part_renderable(p) for p in detail_parts(b, snapshot, history, events, width)))


class Prerendered:
    """A renderable already rendered at one width: at that width it replays the segments, at
    any other it renders the original afresh (so it is always exactly the original)."""

    def __init__(self, renderable: RenderableType, width: int, segments: list[Segment]) -> None:
        self.renderable = renderable
        self.width = width
        self.segments = segments

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width == self.width:
            yield from self.segments
        else:
            yield self.renderable

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.renderable)


class BackendDetail(VerticalScroll):
    """Shows the backend selected in the table; scrolls when it is long.

    Each part of the pane (``detail_parts``) is its own ``Static``, stacked as the parts of
    the ``Group`` that ``build_detail`` makes, and is built, rendered and repainted only when
    its key changed: the name line, the reasons and the recent events stay put while the
    figures move. A message (nothing selected, the backend is gone) shows in the first."""

    SLOTS = 5

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._slots = [
            Static("select a backend" if i == 0 else "", id=f"detail-{i}")
            for i in range(self.SLOTS)
        ]
        for slot in self._slots[1:]:
            slot.display = False
        self._shown: list[tuple[Hashable, int, int] | None] = [None] * self.SLOTS
        """For each slot, what it shows when known: the part's key, the width it was
        rendered at, and its height."""
        self._pieces: dict[tuple[Hashable, int], list[Segment]] = {}
        """The render of each piece shown, by key and width."""

    def compose(self) -> ComposeResult:
        yield from self._slots

    def show(
        self,
        snapshot: Snapshot | None,
        name: str | None,
        history: LatencyHistory,
        events: Sequence[Event],
    ) -> None:
        if snapshot is None or name is None:
            self._message(Text("no backend selected", "bright_black"))
            return
        try:
            b = snapshot.backend(name)
        except KeyError:
            self._message(Text(f"{name} is gone", "bright_black"))
            return
        width = self.scrollable_content_region.width or 90
        self._show_parts(detail_parts(b, snapshot, history, events, width))

    def _message(self, text: Text) -> None:
        self._shown = [None] * self.SLOTS
        self._slots[0].update(text)
        for slot in self._slots[1:]:
            slot.display = False

    def _show_parts(self, parts: list[Part]) -> None:
        if len(parts) > self.SLOTS:  # pragma: no cover - detail_parts makes five
            rest = tuple(piece for part in parts[self.SLOTS - 1 :] for piece in part)
            parts = [*parts[: self.SLOTS - 1], rest]
        console = self.app.console
        pieces: dict[tuple[Hashable, int], list[Segment]] = {}
        for i, slot in enumerate(self._slots):
            if i >= len(parts):
                slot.display = False
                self._shown[i] = None
                continue
            part = parts[i]
            key = tuple(k for k, _ in part)
            width = slot.size.width if slot.display else 0
            shown = self._shown[i]
            if shown is not None and width and shown[0] == key and shown[1] == width:
                pieces.update(
                    ((k, width), self._pieces[(k, width)])
                    for k, _ in part
                    if (k, width) in self._pieces
                )
                continue  # it shows exactly that already
            renderable = part_renderable(part)
            if not width:
                self._shown[i] = None
                slot.update(renderable)
                slot.display = True
                continue
            # each piece rendered once, at the slot's width (a Group renders as its pieces one
            # after the other); the height and the paint reuse the render
            options = self.app.console_options.update(highlight=False, width=width)
            segments: list[Segment] = []
            for piece_key, build in part:
                done = self._pieces.get((piece_key, width))
                if done is None:
                    done = list(console.render(build(), options))
                pieces[(piece_key, width)] = done
                segments.extend(done)
            height = _height(segments)
            same_height = shown is not None and shown[1] == width and shown[2] == height
            self._shown[i] = (key, width, height)
            slot.update(Prerendered(renderable, width, segments), layout=not same_height)
        self._pieces = pieces  # only what is shown now: the cache stays small


def _height(segments: list[Segment]) -> int:
    """Lines in a render, counted the way Textual's ``RichVisual.get_height`` counts them."""
    return sum(text.count("\n") for text, _, _ in segments)
