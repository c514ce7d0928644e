"""The backends table's own rendering is DataTable's, segment for segment.

``BackendTable`` renders data rows keyed by content and builds simple cells without Rich's
``Padding``/``Text`` pipeline (widgets/backends.py). These tests hold it to what DataTable and
Rich give for the same cells: the fast cell path against ``console.render_lines``, and every
line of a live table, after figures changed in place and with the cursor and hover moved,
against DataTable's own ``_render_line``.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from rich.console import Console
from rich.padding import Padding
from rich.segment import Segment
from rich.text import Text
from textual.coordinate import Coordinate
from textual.strip import Strip
from textual.widgets import DataTable

from lbtui.control.model import Snapshot
from lbtui.tui.app import LbtuiApp
from lbtui.tui.recorded import RecordedControl
from lbtui.tui.view import COLUMNS, Cell, backend_row
from lbtui.tui.widgets.backends import BackendTable
from lbtui.tui.widgets.content_table import plain_cell_line
from tests.tui.conftest import SIZE, ready
from tests.tui.recorded_fixture import build_snapshot
from tests.tui.test_responsiveness import fleet_of

STYLES = ("", "bold", "cyan", "bold red", "bright_black", "dark_orange", "bold dark_orange")
TEXTS = (
    "",
    " ",
    "0",
    "12",
    "1250",
    "0.42",
    "–",
    "● up",
    "⊘ ejected",
    "OPEN (forced)",
    "▁▂▃▄▅▆▇█",
    "  ▁▂ ▃",
    "delay 200±50ms",
    " 50%→49%",
    "ended ",
    "12.3 MiB",
    "trailing ",
    "a\tb",
    "wide 漢字",
    "é",
    "e\u0301",
    "x" * 30,
)


def rich_lines(console: Console, cell: Cell, right: bool, width: int, pad: int) -> list[Segment]:
    text = Text.assemble(*cell, justify="right" if right else "left", no_wrap=True)
    options = console.options.update_dimensions(width, 1).update(no_wrap=True)
    lines = console.render_lines(Padding(text, (0, pad)), options)
    assert len(lines) == 1
    return lines[0]


def cells() -> list[Cell]:
    out: list[Cell] = [()]
    for snap in (build_snapshot(), fleet_of(8)):
        for b in snap.backends:
            out.extend(backend_row(b))
    rng = random.Random(3)
    for _ in range(400):
        n = rng.randint(1, 4)
        out.append(tuple((rng.choice(TEXTS), rng.choice(STYLES)) for _ in range(n)))
    return out


def test_fast_cells_are_what_rich_renders():
    console = Console(width=200, color_system="truecolor")
    fast = 0
    for cell in cells():
        for right in (False, True):
            for width in (3, 6, 9, 12, 20, 24):
                for pad in (0, 1, 2):
                    line = plain_cell_line(console, cell, right, width, pad)
                    if line is None:
                        continue
                    fast += 1
                    assert line == rich_lines(console, cell, right, width, pad), (cell, right)
    assert fast > 3000  # the fast path is the common one


def moved(snap: Snapshot, rng: random.Random) -> Snapshot:
    backends = [
        dataclasses.replace(
            b,
            rps=round(rng.uniform(0, 100), 1),
            in_flight=rng.randint(0, 12),
            p99_ms=round(rng.uniform(5, 300), 1),
            rps_series=[*b.rps_series[1:], rng.uniform(0, 100)],
        )
        for b in snap.backends
    ]
    return dataclasses.replace(snap, at=snap.at + 0.25, backends=backends)


def table_lines(table: BackendTable) -> list[Strip]:
    """Every line of the table, then every line on screen (as a paint asks for them)."""
    width = table.size.width
    style = table.rich_style
    lines = [table._render_line(y, 0, width, style) for y in range(table.virtual_size.height)]
    table._pass = {}
    try:
        lines += [table.render_line(y) for y in range(table.size.height)]
    finally:
        table._pass = None
    return lines


@pytest.mark.parametrize("n", [4, 50])
async def test_table_lines_are_what_datatable_renders(n, monkeypatch):
    snap = fleet_of(n) if n > 4 else build_snapshot()
    app = LbtuiApp(RecordedControl(snap, []), refresh_s=60)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        table = app.query_one(BackendTable)
        rng = random.Random(5)
        checks = 0
        for step in range(6):
            snap = moved(snap, rng)
            table.show(snap)  # figures change in place
            if step == 2:
                table.move_cursor(row=min(3, n - 1), animate=False)
            if step == 3:
                table.hover_coordinate = Coordinate(1, 2)
                table._show_hover_cursor = True
            if step == 4:
                table.blur()
                table.scroll_to(y=3, animate=False, immediate=True)
            await pilot.pause()
            table._pseudo_class_state = table.get_pseudo_class_state()
            ours = table_lines(table)
            with monkeypatch.context() as m:
                m.setattr(BackendTable, "_render_cell", DataTable._render_cell)
                m.setattr(BackendTable, "_render_line", DataTable._render_line)
                m.setattr(BackendTable, "render_line", DataTable.render_line)
                table._update_count += 1  # DataTable's caches key on it
                theirs = table_lines(table)
            assert len(ours) == len(theirs) == n + 1 + table.size.height
            for y, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                assert list(a) == list(b), f"line {y} differs at step {step}"
                checks += 1
        assert checks >= 6 * (n + 1)
        if n > 4:
            assert table.scroll_offset.y == 3  # scrolled lines were compared
        assert table.get_cell(snap.backends[0].name, "in_flight").plain == str(
            snap.backends[0].in_flight
        )
        assert len(table.shown_columns) == len(table.columns)
        # at 160 wide, all but rss and the two a wider terminal adds (zone, group)
        assert len(table.columns) >= len(COLUMNS) - 3
