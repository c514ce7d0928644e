"""A small form: one input a field, each checked on submit, every problem shown inline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from lbtui.tui.forms import FormField, validate


class FormScreen(ModalScreen[Any]):
    """Returns ``build(values)`` (the parsed values by default), or ``None`` when cancelled.

    ``build`` may raise ``ValueError`` for a problem across fields (a delay of 0 ms with no
    jitter); it is shown above the buttons and the form stays open."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "cancel", id="form.cancel")
    ]

    def __init__(
        self,
        title: str,
        fields: tuple[FormField, ...],
        note: str = "",
        build: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.fields = fields
        self.note = note
        self.build = build

    def compose(self) -> ComposeResult:
        with _Scroll(id="dialog", classes="form"):
            yield Static(self.title_text, id="question")
            if self.note:
                yield Static(self.note, classes="hint")
            for f in self.fields:
                with Horizontal(classes="field"):
                    yield Label(f.label, classes="field-label")
                    yield Input(f.default, id=f"field-{f.name}", select_on_focus=True)
                yield Static(f.hint, id=f"hint-{f.name}", classes="field-hint")
            yield Static("", id="form-error", classes="field-hint error")
            yield Static("Enter applies · Esc cancels", classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Apply", variant="primary", id="apply")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(f"#field-{self.fields[0].name}", Input).focus()

    def texts(self) -> dict[str, str]:
        return {f.name: self.query_one(f"#field-{f.name}", Input).value for f in self.fields}

    def submit(self) -> None:
        values, errors = validate(self.fields, self.texts())
        for f in self.fields:
            hint = self.query_one(f"#hint-{f.name}", Static)
            box = self.query_one(f"#field-{f.name}", Input)
            if f.name in errors:
                hint.update(f"✖ {errors[f.name]}")
                hint.add_class("error")
                box.add_class("-invalid")
            else:
                hint.update(f.hint)
                hint.remove_class("error")
                box.remove_class("-invalid")
        general = self.query_one("#form-error", Static)
        general.update("")
        if errors:
            first = next(f for f in self.fields if f.name in errors)
            self.query_one(f"#field-{first.name}", Input).focus()
            return
        result: Any = values
        if self.build is not None:
            try:
                result = self.build(values)
            except ValueError as exc:
                general.update(f"✖ {exc}")
                return
        self.dismiss(result)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "apply":
            self.submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class _Scroll(VerticalScroll, can_focus=False):
    """The dialog's body: it scrolls on a short terminal (80×24) so that every field and the
    buttons can be reached; the fields keep the focus (Tab moves between them)."""
