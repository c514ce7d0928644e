"""``?``: every key the console answers to, grouped, with what it does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "close", id="help.close")
    ]

    def __init__(
        self, groups: Sequence[tuple[str, Sequence[tuple[str, str]]]], note: str = ""
    ) -> None:
        """``groups``: ``(title, [(keys, what it does), …])``."""
        super().__init__()
        self.groups = groups
        self.note = note

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="help"):
            yield Static("lbtui — keys", id="question")
            if self.note:
                yield Static(self.note, classes="hint")
            for title, rows in self.groups:
                table = Table(title=title, title_justify="left", show_header=False, box=None)
                table.add_column("key", style="bold cyan", min_width=12)
                table.add_column("what")
                for keys, what in rows:
                    table.add_row(keys, what)
                yield Static(table, classes="help-group")
            yield Static("Esc, ? or q closes · Ctrl+P lists every command", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
