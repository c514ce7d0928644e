"""The frontends panel: a foreign balancer's listeners (HAProxy frontends), or lbtui's own
listeners, one line each.

Shown when the snapshot has frontends (``lbtui.tui.foreign.frontends_text`` builds it), or
lbtui listeners worth a line (several, HTTPS, a redirect, tunnels: ``lbtui.tui.listening``);
one plain listener is the totals bar's business.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from lbtui.control.model import Snapshot
from lbtui.tui.foreign import frontends_text
from lbtui.tui.listening import listeners_text, worth_showing


class FrontendsPanel(Static):
    """Updated with each snapshot; hidden while it has no frontends."""

    _shown: Text | None = None
    _lines = 0

    def show(self, snapshot: Snapshot) -> None:
        own = not snapshot.frontends and worth_showing(snapshot)
        has = bool(snapshot.frontends) or own
        lines = len(snapshot.listeners) if own else len(snapshot.frontends)
        if self.display != has or (has and lines != self._lines):
            self.display = has
            self.styles.height = lines + 3
            self._lines = lines
        if not has:
            return
        text = listeners_text(snapshot) if own else frontends_text(snapshot)
        if text == self._shown:
            return
        self._shown = text
        self.update(text)
