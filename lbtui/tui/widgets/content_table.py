"""The backends table's painting: a DataTable whose rendering is keyed by content.

Rendering is keyed by content rather than by DataTable's table-wide update counter (which
``update_cell`` bumps, so that one changed figure re-renders every visible cell of every row):

- a changed cell is written into the table's data in place and only its *row* is marked
  dirty (one ``refresh`` for all of them), so rows that did not change are not painted again;
- a row's line is built as DataTable builds it (``_render_line_in_row`` then
  ``_render_line``, for this table's layout: a row cursor, no fixed columns, no labels), but
  from the cells it had the last time it was painted in the same place and state: only the
  cells that changed are rendered, and a cursor move repaints two rows, not the table;
- a cell's segments are built without Rich's ``Padding``/``Text`` pipeline when it is simple
  (one line, it fits, no control or zero-width characters): ``plain_cell_line`` makes the very
  segments that pipeline makes, and anything else goes through it as before;
- what does not change during a paint (widths, cursor, styles) is read once per paint.

``tests/tui/test_backends_render.py`` holds every line to what DataTable renders itself.

Split from ``backends.py`` so that the table's behaviour (rows by name, sorting, filtering)
and its painting, which mirrors DataTable's own internals, are each a module.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len, get_character_cell_size
from rich.console import Console
from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._segment_tools import line_crop
from textual.cache import LRUCache
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable

from lbtui.tui.view import (
    COLUMNS,
    Cell,
)

_CACHE_MAX = 4096
_COLUMN_INDEX = {c.key: i for i, c in enumerate(COLUMNS)}
_NULL = Style.null()
_EMPTY_TEXT = Text(no_wrap=True, end="")
"""What DataTable shows for an empty cell (``_data_table._EMPTY_TEXT``)."""


def _simple(text: str) -> bool:
    """``text`` renders as itself, one cell per cell width: printable, no zero-width parts."""
    if text.isascii():
        return text.isprintable()
    if not text.isprintable() or "\u200d" in text or "\ufe0f" in text:
        return False
    sizes = [get_character_cell_size(ch) for ch in text]
    return min(sizes) > 0 and sum(sizes) == cell_len(text)


def plain_cell_line(
    console: Console, cell: Cell, right: bool, width: int, padding: int
) -> list[Segment] | None:
    """The unstyled segments of a one-line cell, as ``console.render_lines(Padding(Text.assemble(
    *cell, justify=…, no_wrap=True), (0, padding)), width × 1, no_wrap)`` gives them; ``None``
    when the cell is not simple enough to be sure (it does not fit, it has control or
    zero-width characters, a right-justified text with trailing blanks)."""
    inner = width - 2 * padding
    if inner < 1:
        return None
    pieces = [(t, s) for t, s in cell if t]
    total = 0
    for t, _ in pieces:
        if not _simple(t):
            return None
        total += cell_len(t)
    if total > inner:
        return None
    fill = inner - total
    body: list[Segment] = []
    if not any(s for _, s in pieces):
        # no spans: Text.render yields the whole padded line as one unstyled segment
        plain = "".join(t for t, _ in pieces)
        if right:
            if plain != plain.rstrip():
                return None
            body.append(Segment(" " * fill + plain))
        else:
            body.append(Segment(plain + " " * fill))
    else:
        if right and pieces[-1][0] != pieces[-1][0].rstrip():
            return None
        get_style = console.get_style
        # Text.render: a segment per stretch between span boundaries; unstyled text (and the
        # justification's blanks) in between has the text's own (null) style
        run = " " * fill if right else ""
        for t, s in pieces:
            if s:
                if run:
                    body.append(Segment(run, _NULL))
                    run = ""
                body.append(Segment(t, Style.combine((_NULL, get_style(s, default=_NULL)))))
            else:
                run += t
        if not right:
            run += " " * fill
        if run:
            body.append(Segment(run, _NULL))
    if padding:
        side = Segment(" " * padding, _NULL)
        return [side, *body, side]
    return body


@dataclass(frozen=True, slots=True)
class _Frame:
    """What a paint of the table depends on besides the rows themselves."""

    content_keyed: bool
    width: int
    scroll_x: int
    scroll_y: int
    fixed_height: int
    style: Style
    cursor_row: int
    hover_row: int
    show_cursor: bool
    show_hover_cursor: bool
    pseudo_classes: object
    update_count: int
    columns: tuple[tuple[int, int], ...]
    """For each column on screen: its index in ``COLUMNS`` and its rendered width."""
    table_width: int

    @property
    def key(self) -> tuple[object, ...]:
        """What a row's line depends on (the cursor and hover only through the row's own
        state, which is keyed separately)."""
        return (
            self.width,
            self.show_cursor,
            self.show_hover_cursor,
            self.pseudo_classes,
            self.update_count,
            self.columns,
        )


@dataclass(frozen=True, slots=True)
class _RowStyles:
    """The styles of one row's cells (``pre`` for each column, ``post``) and of its blank."""

    row_style: Style
    pres: tuple[Style, ...]
    post: Style | None
    extend: Style


@dataclass(slots=True)
class _Painted:
    """A row's line as last painted: its state (place, cursor, widths…), its cells, the
    segments of each cell (simplified), and the strip."""

    state: tuple[object, ...]
    row: tuple[Cell, ...]
    cells: list[list[Segment]]
    strip: Strip


class ContentKeyedTable(DataTable[Text]):
    """A row-cursor DataTable of ``Cell`` rows keyed by name, painted by content: subclasses
    keep ``_rows`` (a row's cells, in ``COLUMNS`` order), write changed cells into the
    table's data in place, then call ``_refresh_rows``."""

    def __init__(self, **kwargs: object) -> None:
        # before DataTable's __init__, which clears the caches
        self._plain_lines: LRUCache[tuple[object, ...], list[list[Segment]]] = LRUCache(4096)
        self._styled: LRUCache[tuple[object, ...], list[Segment]] = LRUCache(8192)
        """A cell's segments on one line, styled for its place (and simplified)."""
        self._painted: dict[tuple[str, int], _Painted] = {}
        """The last line painted for each row (and line of a row)."""
        self._meta_styles: dict[tuple[int, int, bool], Style] = {}
        self._styles_by_row: dict[tuple[object, ...], _RowStyles] = {}
        self._pass: dict[object, object] | None = None
        """Memo of one ``render_lines`` call: styles and widths cannot change during one."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._rows: dict[str, tuple[Cell, ...]] = {}
        self._texts: dict[Cell, Text] = {}

    def _text(self, cell: Cell, right: bool) -> Text:
        key = (*cell, ("R", "")) if right else cell
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) > _CACHE_MAX:
                self._texts.clear()
            text = Text.assemble(*cell, justify="right" if right else "left", no_wrap=True)
            self._texts[key] = text
        return text

    @property
    def _content_keyed(self) -> bool:
        """The table is laid out the way the content-keyed rendering below assumes: a row
        cursor, no fixed rows or columns, no row labels (always so here; otherwise every
        path is DataTable's own)."""
        return (
            self.cursor_type == "row"
            and not self.fixed_rows
            and not self.fixed_columns
            and not self._labelled_row_exists
        )

    def _meta(self, row_index: int, column_index: int, out_of_bounds: bool = False) -> Style:
        """The mouse's meta of a cell (or of the blank right of a row), as DataTable sets it."""
        key = (row_index, column_index, out_of_bounds)
        meta = self._meta_styles.get(key)
        if meta is None:
            if len(self._meta_styles) > _CACHE_MAX:
                self._meta_styles.clear()
            data: dict[str, object] = {"row": row_index, "column": column_index}
            if out_of_bounds:
                data["out_of_bounds"] = True
            meta = self._meta_styles[key] = Style.from_meta(data)
        return meta

    def _data_cell_styles(
        self, hover: bool, cursor: bool, *, css_priority: bool = True
    ) -> tuple[Style, Style]:
        """DataTable's styles for a data cell (not a header, not a row label); without
        ``css_priority``, the cursor's colours ignore the CSS priority settings (the blank
        right of a row)."""
        return self._get_styles_to_render_cell(
            False,
            False,
            False,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            css_priority and self.cursor_foreground_priority == "css",
            css_priority and self.cursor_background_priority == "css",
        )

    def _cell_styles(
        self, row_index: int, column_index: int, base_style: Style, cursor: bool, hover: bool
    ) -> tuple[Style, Style | None]:
        """The styles DataTable renders a data cell with: ``Styled(…, pre, post)``."""
        component_style, post_style = self._data_cell_styles(hover, cursor)
        pre = base_style + self._meta(row_index, column_index) + component_style
        return pre, post_style or None

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        """DataTable's cell render; a data cell's from the table's own cells (its data is
        updated in place, which DataTable's caches would not see)."""
        if row_index < 0 or column_index < 0 or not self._content_keyed:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        row = self._rows.get(row_key.value or "") if row_key is not None else None
        if row_key is None or row is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        i = _COLUMN_INDEX[column_key.value or ""]
        pre, post = self._cell_styles(row_index, column_index, base_style, cursor, hover)
        plain = self._plain_cell(row[i], COLUMNS[i].right, width, self.rows[row_key].height)
        return [list(Segment.apply_style(line, pre, post)) for line in plain]

    def _plain_cell(self, cell: Cell, right: bool, width: int, height: int) -> list[list[Segment]]:
        """The cell's lines before any style: the fast path, or Rich's own render."""
        key = (cell, right, width, height, self.cell_padding)
        lines = self._plain_lines.get(key)
        if lines is None:
            console = self.app.console
            line = plain_cell_line(console, cell, right, width, self.cell_padding)
            if line is not None and height == 1:
                lines = [line]
            else:
                options = self.app.console_options.update_dimensions(width, height)
                if height == 1:
                    options = options.update(no_wrap=True)
                text = self._text(cell, right)
                lines = console.render_lines(
                    Padding(text or _EMPTY_TEXT, (0, self.cell_padding)), options
                )
            self._plain_lines[key] = lines
        return lines

    def render_lines(self, crop: Region) -> list[Strip]:
        self._pass = {}
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def _frame(self) -> _Frame:
        """What every line of a paint depends on besides its row (read once per paint)."""
        memo = self._pass
        frame = memo.get("frame") if memo is not None else None
        if not isinstance(frame, _Frame):
            scroll_x, scroll_y = self.scroll_offset
            columns = tuple(
                (_COLUMN_INDEX[c.key.value or ""], c.get_render_width(self))
                for c in self.ordered_columns
            )
            frame = _Frame(
                content_keyed=self._content_keyed,
                width=self.size.width,
                scroll_x=scroll_x,
                scroll_y=scroll_y,
                fixed_height=self.header_height if self.show_header else 0,
                style=self.rich_style,
                cursor_row=self.cursor_coordinate.row,
                hover_row=self.hover_coordinate.row,
                show_cursor=self.show_cursor,
                show_hover_cursor=self._show_hover_cursor,
                pseudo_classes=self._pseudo_class_state,
                update_count=self._update_count,
                columns=columns,
                table_width=self._row_label_column_width + sum(w for _, w in columns),
            )
            if memo is not None:
                memo["frame"] = frame
        return frame

    def render_line(self, y: int) -> Strip:
        """DataTable's, with what does not change during a paint read once per paint."""
        frame = self._frame()
        if self._pass is None or not frame.content_keyed:
            return super().render_line(y)
        if y >= frame.fixed_height:
            y += frame.scroll_y
        return self._render_line(y, frame.scroll_x, frame.scroll_x + frame.width, frame.style)

    def _row_styles(
        self, row_index: int, base_style: Style, cursor: bool, hover: bool
    ) -> _RowStyles:
        """The styles of a row's cells and of the blank right of it (DataTable's
        ``_render_line_in_row`` for a row cursor), kept while they stay the same."""
        memo = self._pass if self._pass is not None else {}
        key = ("row", row_index % 2, base_style, cursor, hover)
        got = memo.get(key)
        if not isinstance(got, tuple):
            row_style = self._get_row_style(row_index, base_style)
            cell_styles = self._data_cell_styles(hover, cursor)
            extend_style, _ = self._data_cell_styles(hover, cursor, css_priority=False)
            got = memo[key] = (row_style, cell_styles, extend_style)
        row_style, (component_style, post_style), extend_style = got
        styles_key = (row_index, row_style, component_style, post_style, extend_style)
        styles = self._styles_by_row.get(styles_key)
        if styles is None:
            if len(self._styles_by_row) > _CACHE_MAX:
                self._styles_by_row.clear()
            pres = tuple(
                row_style + self._meta(row_index, column_index) + component_style
                for column_index in range(len(self.columns))
            )
            extend = row_style + extend_style + self._meta(row_index, 0, out_of_bounds=True)
            styles = self._styles_by_row[styles_key] = _RowStyles(
                row_style, pres, post_style or None, extend
            )
        return styles

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        """A line of the table. A data row's is DataTable's ``_render_line_in_row`` (for a row
        cursor without fixed columns or labels) then ``_render_line``, built from the cells
        it had last time whenever the row kept its place and state."""
        frame = self._frame()
        if not frame.content_keyed:
            return super()._render_line(y, x1, x2, base_style)
        width = frame.width
        try:
            row_key, line_no = self._get_offsets(y)
        except LookupError:
            return Strip.blank(width, base_style)
        name = row_key.value or ""
        row = self._rows.get(name)
        if row is None or row_key is self._header_row_key:
            return super()._render_line(y, x1, x2, base_style)
        row_index = self._row_locations.get(row_key)
        if row_index is None:
            return super()._render_line(y, x1, x2, base_style)
        cursor = row_index == frame.cursor_row
        hover = row_index == frame.hover_row
        height = self.rows[row_key].height
        styles = self._row_styles(row_index, base_style, cursor, hover)
        state = (row_index, height, x1, x2, base_style, styles, cursor, hover, frame.key)
        last = self._painted.get((name, line_no))
        if last is not None and last.state == state:
            if last.row == row:
                return last.strip
            reuse = last
        else:
            reuse = None
        cells: list[list[Segment]] = []
        pres, post = styles.pres, styles.post
        for column_index, (i, column_width) in enumerate(frame.columns):
            cell = row[i]
            if reuse is not None and reuse.row[i] == cell:
                cells.append(reuse.cells[column_index])
                continue
            pre = pres[column_index]
            key = (cell, i, column_width, height, line_no, pre, post)
            segments = self._styled.get(key)
            if segments is None:
                plain = self._plain_cell(cell, COLUMNS[i].right, column_width, height)[line_no]
                segments = list(Segment.simplify(Segment.apply_style(plain, pre, post)))
                self._styled[key] = segments
            cells.append(segments)
        table_width = frame.table_width
        extend = Segment(" " * max(0, width - table_width), styles.extend)
        segments = [segment for cell_segments in cells for segment in cell_segments]
        segments.append(extend)
        if x1 == 0 and x2 >= width and table_width <= width:
            # nothing to crop or pad, and nothing left to merge: every cell is simplified and
            # no two neighbours share a style (each carries its own row/column meta)
            strip = Strip(segments, width)
        else:
            strip = Strip(line_crop(segments, x1, x2, width))
            strip = strip.adjust_cell_length(width, base_style).simplify()
        self._painted[(name, line_no)] = _Painted(state, row, cells, strip)
        return strip

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._plain_lines.clear()
        self._styled.clear()
        self._painted.clear()
        self._styles_by_row.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._plain_lines.clear()
        self._styled.clear()
        self._painted.clear()
        self._styles_by_row.clear()

    def _refresh_rows(self, names: list[str]) -> None:
        """Mark the lines of these rows (those on screen) for repainting, in one refresh
        (``DataTable.refresh_row`` for each, without its cost per row in rows above)."""
        wanted = set(names)
        window = self.window_region
        offset = self.scroll_offset
        width = max(
            self.size.width,
            sum(c.get_render_width(self) for c in self.columns.values())
            + self._row_label_column_width,
        )
        y = self.header_height if self.show_header else 0
        regions = []
        for row in self.ordered_rows:
            if row.key.value in wanted:
                region = Region(0, y, width, row.height)
                if window.overlaps(region):
                    regions.append(region.translate(-offset))
            y += row.height
        if regions:
            self.refresh(*_merge_rows(regions))


def _merge_rows(regions: list[Region]) -> list[Region]:
    """Adjacent full-width row regions merged into bands (fewer regions to repaint)."""
    out: list[Region] = []
    for r in sorted(regions, key=lambda r: r.y):
        last = out[-1] if out else None
        if last is not None and last.x == r.x and last.width == r.width and r.y <= last.bottom:
            out[-1] = Region(last.x, last.y, last.width, max(last.bottom, r.bottom) - last.y)
        else:
            out.append(r)
    return out
