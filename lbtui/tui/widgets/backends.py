"""The backends table: one row per backend, keyed by name, updated cell by cell.

As in dolphie's process list: rows are keyed, vanished rows removed, new ones added, only the
cells whose text changed are updated, and the table is re-sorted only when the order changed,
after which the cursor is put back on the backend it was on. The cells come from
``view.backend_row`` as hashable tuples, so an unchanged figure costs a tuple comparison per tick.

Its rendering is keyed by content rather than by DataTable's table-wide update counter, so
that one changed figure repaints one row: see ``lbtui.tui.widgets.content_table``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowDoesNotExist, RowKey

from lbtui.control.model import Snapshot, Windows
from lbtui.tui.groups_view import backend_groups
from lbtui.tui.view import (
    COLUMNS,
    SORT_KEYS,
    Cell,
    backend_row,
    fit_columns,
    matches,
    row_text,
    sort_names,
)
from lbtui.tui.view import column_width as header_width
from lbtui.tui.widgets.content_table import ContentKeyedTable


class BackendTable(ContentKeyedTable):
    """Backends of the latest snapshot, filtered and sorted."""

    @dataclass
    class SortChanged(Message):
        column: str | None
        reverse: bool

    def __init__(self, *, sort: str | None = None, reverse: bool = False, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.sort_column = sort
        self.sort_reverse = reverse
        self.filter = ""
        self._snapshot: Snapshot | None = None
        self.updates = 0
        """Cells updated since start (for tests and the curious)."""
        self.windows = Windows()
        """The windows the headers name (``req/s 1s``), from the latest snapshot."""
        self.source = "lbtui"
        """The snapshot's source: a foreign one names some columns its own way."""
        self.shown_columns: tuple[int, ...] = ()
        """Indexes into ``COLUMNS`` of the columns on screen, in order."""

    def on_mount(self) -> None:
        self._fit(self.app.size.width)

    def on_resize(self) -> None:
        self._fit(self.size.width)

    def _fit(self, width: int) -> None:
        """Show the columns that fit ``width`` (``view.fit_columns``), keeping room for the
        vertical scrollbar; a change of columns rebuilds the table (on a resize, never on a
        tick), and the cursor stays on its backend."""
        if width <= 0:
            return
        room = width - self.styles.scrollbar_size_vertical
        wanted = fit_columns(room, self.windows, self.source)
        titles = [self._label(COLUMNS[i].key) for i in wanted]
        if wanted == self.shown_columns and all(
            self.columns[ColumnKey(COLUMNS[i].key)].label == t
            for i, t in zip(wanted, titles, strict=True)
        ):
            return
        selected = self.selected
        self.clear(columns=True)
        self._rows = {}
        self._painted.clear()
        self.shown_columns = wanted
        for i in wanted:
            col = COLUMNS[i]
            self.add_column(
                self._label(col.key),
                key=col.key,
                width=header_width(col, self.windows, self.source),
            )
        if self._snapshot is not None:
            self.show(self._snapshot)
            if selected is not None:
                self.select(selected)

    # --- header labels

    def _label(self, key: str) -> Text:
        col = next(c for c in COLUMNS if c.key == key)
        label = col.title(self.windows, self.source)
        if key == self.sort_column:
            label += " ▼" if self.sort_reverse else " ▲"
        return Text(label, justify="right" if col.right else "left", style="bold")

    @property
    def selected(self) -> str | None:
        """The backend under the cursor."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    def show(self, snapshot: Snapshot) -> None:
        """Bring the table to ``snapshot``: add, remove and update rows; keep the cursor."""
        self._snapshot = snapshot
        windows = snapshot.windows
        if windows != self.windows or snapshot.source != self.source:
            self.windows = windows
            self.source = snapshot.source
            self._fit(self.size.width or self.app.size.width)  # headers name the windows
        selected = self.selected
        rows: dict[str, tuple[Cell, ...]] = {}
        groups = backend_groups(snapshot) if snapshot.pools else {}
        for b in snapshot.backends:
            row = backend_row(b, snapshot.at, groups.get(b.name, ""))
            if self.filter and not matches(row_text(b, row), self.filter):
                continue
            rows[b.name] = row
        gone = [n for n in self._rows if n not in rows]
        if len(gone) > 32 and 4 * len(gone) > len(self._rows):
            # DataTable.remove_row is linear in the rows: a filter that hides most of 1,000
            # rows is quicker to show from an empty table than row by row (3.6 s vs 0.1 s)
            self.clear()
            self._rows.clear()
            self._painted.clear()
            gone = []
        for name in gone:
            self.remove_row(name)
            del self._rows[name]
            for key in [k for k in self._painted if k[0] == name]:
                del self._painted[key]
        in_place = self._content_keyed
        changed: list[str] = []
        visible = self.shown_columns
        for name, row in rows.items():
            old = self._rows.get(name)
            if old is None:
                self.add_row(*(self._text(row[i], COLUMNS[i].right) for i in visible), key=name)
            elif old != row:
                data = self._data[RowKey(name)]
                shown_changed = False
                for i in visible:
                    c_new = row[i]
                    if old[i] != c_new:
                        col = COLUMNS[i]
                        if in_place:
                            # the row is repainted below; the rendering is keyed by content
                            data[ColumnKey(col.key)] = self._text(c_new, col.right)
                        else:
                            self.update_cell(name, col.key, self._text(c_new, col.right))
                        self.updates += 1
                        shown_changed = True
                if shown_changed:
                    changed.append(name)
            self._rows[name] = row
        if in_place and changed:
            self._refresh_rows(changed)
        self._order(snapshot, selected)

    def _order(self, snapshot: Snapshot, selected: str | None) -> None:
        wanted = sort_names(
            (b for b in snapshot.backends if b.name in self._rows),
            self.sort_column,
            self.sort_reverse,
        )
        current = [r.key.value for r in self.ordered_rows]
        if current != wanted:
            position = {name: i for i, name in enumerate(wanted)}
            self.sort("name", key=lambda cell: position[cell.plain])
        if selected is not None and selected in self._rows:
            self.select(selected)

    def select(self, name: str) -> bool:
        """Put the cursor on ``name``'s row; whether it is shown."""
        try:
            index = self.get_row_index(name)
        except RowDoesNotExist:
            return False
        if index != self.cursor_row:
            self.move_cursor(row=index, animate=False, scroll=True)
        return True

    # --- sorting and filtering

    def set_sort(self, column: str | None, reverse: bool = False) -> None:
        self.sort_column = column
        self.sort_reverse = reverse
        for i in self.shown_columns:
            key = COLUMNS[i].key
            self.columns[ColumnKey(key)].label = self._label(key)
        self._update_count += 1
        self.refresh()
        if self._snapshot is not None:
            self._order(self._snapshot, self.selected)
        self.post_message(self.SortChanged(column, reverse))

    def cycle_sort(self) -> None:
        """Next column (``S``): configuration order, then every sortable column in turn."""
        order: list[str | None] = [None, *SORT_KEYS]
        i = order.index(self.sort_column) if self.sort_column in order else 0
        self.set_sort(order[(i + 1) % len(order)], self.sort_reverse)

    def reverse_sort(self) -> None:
        self.set_sort(self.sort_column, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = event.column_key.value
        column = "rps" if key == "spark" else key
        if column == self.sort_column:
            self.set_sort(column, not self.sort_reverse)
        else:
            self.set_sort(column, False)

    def set_filter(self, query: str) -> None:
        self.filter = query.strip()
        if self._snapshot is not None:
            self.show(self._snapshot)
