"""The detail pane in keyed parts renders exactly as the one ``Group`` it was before.

``BackendDetail`` shows ``detail_parts`` piece by piece (widgets/detail.py): the reasons and
the facts grids one row at a time, each row rendered once and kept while it is the same.
That is only right if a grid renders as its rows' grids one after the other, which holds for
these grids (a fixed column and a ratio column, expanded: the widths do not depend on the
cells); checked here on random rows, and the whole pane against the single-table build.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from rich.console import Console, Group
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from lbtui.control.model import BackendView, Event, Snapshot
from lbtui.tui.history import LatencyHistory
from lbtui.tui.reasons import state_reasons
from lbtui.tui.widgets.detail import (
    LABEL_W,
    _fact_row,
    _facts,
    _why_row,
    build_detail,
    detail_parts,
    part_renderable,
)
from tests.tui.recorded_fixture import build_events, build_snapshot
from tests.tui.test_responsiveness import fleet_of

WORDS = ("p50", "1.2", "·", "ms", "[bold]x[/]", "[Errno 111]", "漢字", "requests", "2xx 49", "—")


def render(console: Console, renderable: object, width: int) -> list[Segment]:
    return list(console.render(renderable, console.options.update(width=width, highlight=False)))


def whole_facts(rows: Sequence[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(width=LABEL_W - 1, no_wrap=True, style="bright_black")
    table.add_column(ratio=1)
    for label, value in rows:
        table.add_row(label, value)
    return table


def whole_why(b: BackendView, snapshot: Snapshot) -> Table:
    """The reasons' grid as ``build_detail`` built it in one table."""
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(width=15, no_wrap=True)
    table.add_column(ratio=1)
    reasons = state_reasons(b, snapshot)
    for r in reasons:
        table.add_row(Text(r.title, r.style), Text(r.text))
    if not reasons:
        table.add_row(
            Text("● SERVING", "green"),
            Text("normally — no fault, breaker closed, not ejected", "bright_black"),
        )
    return table


def test_a_grid_renders_as_its_rows():
    console = Console(width=200, color_system="truecolor")
    rng = random.Random(1)
    for _ in range(400):
        rows = [
            (
                rng.choice(["weight", "latency", "totals", "breaker", "a-very-long-label"]),
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 40))),
            )
            for _ in range(rng.randint(1, 6))
        ]
        width = rng.randint(12, 160)
        rows_one_by_one = Group(*(_fact_row(*row) for row in rows))
        assert render(console, rows_one_by_one, width) == render(console, whole_facts(rows), width)


def snapshots() -> list[tuple[Snapshot, list[Event]]]:
    return [(build_snapshot(), build_events()), (fleet_of(8), [])]


def test_the_pane_renders_as_before():
    console = Console(width=200, color_system="truecolor")
    history = LatencyHistory()
    for snap, events in snapshots():
        history.add(snap)
        for b in snap.backends:
            for width in (40, 90, 140):
                parts = detail_parts(b, snap, history, events, width)
                assert len(parts) == 5
                head, plots, _why, _facts_part, recent = (part_renderable(p) for p in parts)
                before = Group(
                    head,
                    plots,
                    whole_why(b, snap),
                    whole_facts(_facts(b, snap)),
                    recent,
                )
                assert render(console, build_detail(b, snap, history, events, width), width) == (
                    render(console, before, width)
                )
                # each piece renders alone what it renders in the part
                for part in parts:
                    pieces = [s for _, build in part for s in render(console, build(), width)]
                    assert pieces == render(console, part_renderable(part), width)


def test_keys_say_what_pieces_show():
    snap = build_snapshot()
    history = LatencyHistory()
    history.add(snap)
    b = snap.backends[1]
    one = detail_parts(b, snap, history, build_events(), 90)
    two = detail_parts(b, snap, history, build_events(), 90)
    assert [[k for k, _ in p] for p in one] == [[k for k, _ in p] for p in two]
    assert _why_row(None).row_count == 1
