"""The backends table: one row per backend, keyed by name, updated cell by cell.

As in dolphie's process list: rows are keyed, vanished rows removed, new ones added, only the
cells whose text changed are updated (``update_cell``), and the table is re-sorted only when
the order changed, after which the cursor is put back on the backend it was on. The cells come
from ``view.backend_row`` as hashable tuples, and the Rich ``Text`` for each distinct cell is
cached, so an unchanged figure costs a tuple comparison per tick.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowDoesNotExist

from lbtui.control.model import Snapshot
from lbtui.tui.view import COLUMNS, SORT_KEYS, Cell, backend_row, matches, row_text, sort_names

_CACHE_MAX = 4096
_COLUMN_INDEX = {c.key: i for i, c in enumerate(COLUMNS)}


class BackendTable(DataTable[Text]):
    """Backends of the latest snapshot, filtered and sorted."""

    @dataclass
    class SortChanged(Message):
        column: str | None
        reverse: bool

    def __init__(self, *, sort: str | None = None, reverse: bool = False, **kwargs: object) -> None:
        # before DataTable's __init__, which clears the caches
        self._cell_lines: LRUCache[tuple[object, ...], list[list[Segment]]] = LRUCache(8192)
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.sort_column = sort
        self.sort_reverse = reverse
        self.filter = ""
        self._rows: dict[str, tuple[Cell, ...]] = {}
        self._texts: dict[Cell, Text] = {}
        self._snapshot: Snapshot | None = None
        self.updates = 0
        """Cells updated since start (for tests and the curious)."""

    def on_mount(self) -> None:
        for col in COLUMNS:
            # room for the sort arrow, so the header never truncates
            width = max(col.width, len(col.label) + 2)
            self.add_column(self._label(col.key), key=col.key, width=width)

    # --- rendering

    def _label(self, key: str) -> Text:
        col = next(c for c in COLUMNS if c.key == key)
        label = col.label
        if key == self.sort_column:
            label += " ▼" if self.sort_reverse else " ▲"
        return Text(label, justify="right" if col.right else "left", style="bold")

    def _text(self, cell: Cell, right: bool) -> Text:
        key = (*cell, ("R", "")) if right else cell
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) > _CACHE_MAX:
                self._texts.clear()
            text = Text.assemble(*cell, justify="right" if right else "left", no_wrap=True)
            self._texts[key] = text
        return text

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        """DataTable's cell render, cached by the cell's content.

        DataTable keys its cell cache on a table-wide update counter, so one ``update_cell``
        re-renders every visible cell; with 50 backends changing a few figures four times a
        second that is most of the UI's time. Here a cell is re-rendered only when its own
        content (or position, style, cursor) changed.
        """
        if row_index < 0 or column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        row = self._rows.get(row_key.value or "") if row_key is not None else None
        if row is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        key = (
            row_key,
            row[_COLUMN_INDEX[column_key.value or ""]],
            row_index,
            column_index,
            base_style,
            width,
            cursor,
            hover,
            self._show_hover_cursor,
            self._pseudo_class_state,
        )
        lines = self._cell_lines.get(key)
        if lines is None:
            lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
            self._cell_lines[key] = lines
        return lines

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._cell_lines.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cell_lines.clear()

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
        selected = self.selected
        rows: dict[str, tuple[Cell, ...]] = {}
        for b in snapshot.backends:
            row = backend_row(b)
            if self.filter and not matches(row_text(b, row), self.filter):
                continue
            rows[b.name] = row
        for name in [n for n in self._rows if n not in rows]:
            self.remove_row(name)
            del self._rows[name]
        for name, row in rows.items():
            old = self._rows.get(name)
            if old is None:
                self.add_row(
                    *(self._text(c, col.right) for c, col in zip(row, COLUMNS, strict=True)),
                    key=name,
                )
            else:
                for c_old, c_new, col in zip(old, row, COLUMNS, strict=True):
                    if c_old != c_new:
                        self.update_cell(name, col.key, self._text(c_new, col.right))
                        self.updates += 1
            self._rows[name] = row
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
        for col in COLUMNS:
            self.columns[ColumnKey(col.key)].label = self._label(col.key)
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
