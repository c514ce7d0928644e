"""What each dialog asks for, and how its answers are checked: pure, so it is unit-tested.

A form is a tuple of ``FormField``; each field parses its own text and raises ``ValueError``
with a message the dialog shows under the field (``expected a number from 0 to 100``). The
dialog (``screens/form.py``) knows nothing about faults or limits; the builders below turn the
parsed values into what the ``Control`` takes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lbtui.control.model import FaultKind, FaultSpec
from lbtui.tui.numbers import num
from lbtui.units import parse_duration

Parser = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    label: str
    default: str
    parse: Parser
    hint: str = ""
    """Shown under the input until there is an error to show instead."""


def number(lo: float, hi: float, *, integer: bool = False, optional: bool = False) -> Parser:
    """A parser for a number in ``[lo, hi]``; ``optional`` accepts an empty text as ``None``."""
    what = "a whole number" if integer else "a number"

    def parse(text: str) -> float | int | None:
        t = text.strip()
        if not t:
            if optional:
                return None
            raise ValueError(f"required: {what} from {num(lo)} to {num(hi)}")
        try:
            value: float | int = int(t) if integer else float(t)
        except ValueError:
            raise ValueError(f"expected {what} from {num(lo)} to {num(hi)}, got {t!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be from {num(lo)} to {num(hi)}, got {t}")
        return value

    return parse


def optional_duration(text: str) -> float | None:
    """Empty: no duration (until cleared); else ``30s``, ``5m``, ``250ms`` or seconds."""
    t = text.strip()
    if not t:
        return None
    value = parse_duration(t)
    if value <= 0:
        raise ValueError("a duration must be above 0 (leave empty for until cleared)")
    return value


PERCENT = FormField(
    "percent", "Percent of requests", "100", number(0, 100), "0–100; the share that gets the fault"
)
DURATION = FormField(
    "duration", "Duration", "", optional_duration, "e.g. 30s or 5m; empty = until cleared (r)"
)

SLOW_FORM = (
    FormField("ms", "Delay (ms)", "200", number(0, 600_000), "added before forwarding"),
    FormField("jitter_ms", "Jitter (ms)", "0", number(0, 600_000), "each delay is ms ± jitter"),
    PERCENT,
    DURATION,
)
ERRORS_FORM = (
    FormField("status", "Status", "503", number(200, 599, integer=True), "answered instead"),
    PERCENT,
    DURATION,
)
HANG_FORM = (PERCENT, DURATION)


def weight_form(current: float) -> tuple[FormField, ...]:
    return (
        FormField(
            "weight", "Weight", num(current), number(0, 1000), "0–1000; 0 takes it out of rotation"
        ),
    )


def forward_form(weights: Mapping[str, float]) -> tuple[FormField, ...]:
    """One weight a group the route forwards to, in its order (fields ``w0``, ``w1``…: a
    group's name need not be a widget id)."""
    return tuple(
        FormField(f"w{i}", group, num(w), number(0, 1000), "0–1000; 0 sends it nothing")
        for i, (group, w) in enumerate(weights.items())
    )


LIMIT_FIELDS = (
    ("rps", "Global rps", False, "token bucket; empty = no global limit"),
    ("burst", "Burst", False, "bucket size; empty = max(1, rps)"),
    ("per_client_rps", "Per-client rps", False, "one bucket per client; empty = none"),
    ("max_in_flight", "Max in-flight", True, "concurrency limit; empty = none"),
)


def limits_form(current: Mapping[str, object]) -> tuple[FormField, ...]:
    fields = []
    for key, label, integer, hint in LIMIT_FIELDS:
        value = current.get(key)
        default = "" if value is None else num(float(value))  # type: ignore[arg-type]
        lo = 1 if key in ("burst", "max_in_flight") else 0.001
        fields.append(
            FormField(key, label, default, number(lo, 1e9, integer=integer, optional=True), hint)
        )
    return tuple(fields)


def delay_spec(v: Mapping[str, Any]) -> FaultSpec:
    """Raises ``ValueError`` (the spec's own check) for a delay that does nothing."""
    return FaultSpec(
        kind=FaultKind.DELAY,
        ms=float(v["ms"]),
        jitter_ms=float(v["jitter_ms"]) or None,
        percent=float(v["percent"]),
        duration_s=v["duration"],
    )


def abort_spec(v: Mapping[str, Any]) -> FaultSpec:
    return FaultSpec(
        kind=FaultKind.ABORT,
        status=int(v["status"]),
        percent=float(v["percent"]),
        duration_s=v["duration"],
    )


def hang_spec(v: Mapping[str, Any]) -> FaultSpec:
    return FaultSpec(kind=FaultKind.HANG, percent=float(v["percent"]), duration_s=v["duration"])


def limits_changes(
    values: Mapping[str, Any], current: Mapping[str, object]
) -> dict[str, float | int | None]:
    """Only the limits that differ from ``current`` (``None`` clears one)."""
    out: dict[str, float | int | None] = {}
    for key, *_ in LIMIT_FIELDS:
        new = values.get(key)
        if new != current.get(key):
            out[key] = new
    return out


def validate(
    form: tuple[FormField, ...], texts: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse every field: ``(values, errors)``, every problem reported at once."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in form:
        try:
            values[f.name] = f.parse(texts.get(f.name, ""))
        except ValueError as exc:
            errors[f.name] = str(exc)
    return values, errors
