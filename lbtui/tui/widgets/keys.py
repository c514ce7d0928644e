"""The footer: the keys the main screen answers to now, as many as fit one line.

Textual's ``Footer`` lays its keys out in a row that scrolls sideways when it is too narrow,
which at 80 columns left a piece of a hidden key on screen beside the palette's. This one
builds its line from the same place (the screen's active bindings, so a key the app refuses,
as in a read-only console, is not offered) and keeps only what fits, in binding order, with
``?`` help first so the rest is always one key away, and ``^p palette`` at the right.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widgets import Static

PALETTE = "^p palette"


class KeyBar(Static):
    """One line of ``key what`` pairs fitted to the width."""

    def __init__(
        self,
        *,
        hide_action: Callable[[str], bool] = lambda _a: False,
        dim_action: Callable[[str], bool] = lambda _a: False,
        **kwargs: object,
    ) -> None:
        """``hide_action(action)``: leave this action out (a read-only console's actions);
        ``dim_action(action)``: show it greyed, the balancer cannot do it (HAProxy cannot
        delay); its key still says why."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.hide_action = hide_action
        self.dim_action = dim_action

    DEFAULT_CSS = """
    KeyBar {
        height: 1;
        background: $panel;
    }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._changed)
        self._changed()

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def on_resize(self) -> None:
        self._changed()

    def _changed(self, _screen: object = None) -> None:
        self.update(self.build(self.size.width or self.app.size.width))

    def refresh_keys(self) -> None:
        """Build the line again (what the balancer can do has changed)."""
        self._changed()

    def keys(self) -> list[tuple[str, str, bool]]:
        """``(key, description, dimmed)`` of every binding shown in the footer and enabled
        now, one per action, ``?`` first."""
        out: list[tuple[str, str, bool]] = []
        seen: set[str] = set()
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if not binding.show or not active.enabled or binding.action in seen:
                continue
            if self.hide_action(binding.action):
                continue
            seen.add(binding.action)
            dim = self.dim_action(binding.action)
            out.append((self.app.get_key_display(binding), binding.description, dim))
        out.sort(key=lambda kd: kd[1] != "help")
        return out

    def build(self, width: int) -> Text:
        line = Text(no_wrap=True, overflow="crop", end="")
        room = width - len(PALETTE) - 2
        for key, what, dim in self.keys():
            item = f" {key} {what} "
            if line.cell_len + len(item) > room:
                break
            line.append(f" {key}", "bright_black" if dim else "bold cyan")
            line.append(f" {what} ", "bright_black strike" if dim else "")
        line.append(" " * max(0, width - line.cell_len - len(PALETTE) - 1))
        line.append("^p", "bold cyan")
        line.append(" palette ")
        return line
