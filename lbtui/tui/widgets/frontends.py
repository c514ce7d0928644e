"""The frontends panel: a foreign balancer's listeners (HAProxy frontends), one line each.

Shown only when the snapshot has frontends (``lbtui.tui.foreign.frontends_text`` builds it);
lbtui's own listener is the totals bar's business.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from lbtui.control.model import Snapshot
from lbtui.tui.foreign import frontends_text


class FrontendsPanel(Static):
    """Updated with each snapshot; hidden while it has no frontends."""

    _shown: Text | None = None

    def show(self, snapshot: Snapshot) -> None:
        has = bool(snapshot.frontends)
        if self.display != has:
            self.display = has
            self.styles.height = len(snapshot.frontends) + 3
        if not has:
            return
        text = frontends_text(snapshot)
        if text == self._shown:
            return
        self._shown = text
        self.update(text)
