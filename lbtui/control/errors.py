"""The control plane's errors: one per HTTP status the admin API answers with.

    LbtuiError
    └── ControlError        an action or a query the control plane cannot carry out
        ├── Invalid         422: a value is wrong; ``field`` names it
        ├── NotFound        404: no such backend (or endpoint)
        ├── Conflict        409: the action clashes with the current state (a name taken)
        ├── Unauthorized    401: missing or wrong bearer token
        ├── ReadOnly        403: this console or client was opened read-only
        ├── Forbidden       403: a foreign Host or Origin (a web page, not an operator)
        ├── UnsupportedMediaType  415: a state-changing body that is not application/json
        └── Unavailable     503: the target cannot do it now (no fleet, no faults, unreachable)

``LocalControl`` raises them directly; the admin API turns them into a JSON body
``{"error": {"status", "type", "message", "field"}}`` and ``HttpControl`` turns that body back
into the same class, so both implementations of ``Control`` fail the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import ValidationError

from lbtui.errors import LbtuiError


class ControlError(LbtuiError):
    """Base of the control plane's errors; ``status`` is the HTTP status it maps to."""

    status: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        """The request field that is wrong (``weight``, ``limits.rps``); ``None`` if none."""
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        return {
            "error": {
                "status": self.status,
                "type": type(self).__name__,
                "message": self.message,
                "field": self.field,
            }
        }

    @staticmethod
    def from_json(status: int, body: object) -> ControlError:
        """The error an admin API answer stands for (any non-2xx status and its body)."""
        message = f"HTTP {status}"
        field: str | None = None
        kind: str | None = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            message = str(err.get("message") or message)
            field = err.get("field") if isinstance(err.get("field"), str) else None
            kind = err.get("type") if isinstance(err.get("type"), str) else None
        cls = _BY_NAME.get(kind or "") or _BY_STATUS.get(status, ControlError)
        return cls(message, field=field)


class Invalid(ControlError):
    status = 422


class NotFound(ControlError):
    status = 404


class Conflict(ControlError):
    status = 409


class Unauthorized(ControlError):
    status = 401


class ReadOnly(ControlError):
    status = 403


class Forbidden(ControlError):
    status = 403


class UnsupportedMediaType(ControlError):
    status = 415


class Unavailable(ControlError):
    status = 503


_CLASSES: tuple[type[ControlError], ...] = (
    Forbidden,  # before ReadOnly: an unnamed 403 stays ReadOnly
    UnsupportedMediaType,
    Invalid,
    NotFound,
    Conflict,
    Unauthorized,
    ReadOnly,
    Unavailable,
)
_BY_NAME = {c.__name__: c for c in _CLASSES}
_BY_STATUS = {c.status: c for c in _CLASSES}


def invalid_from(exc: ValidationError, prefix: str = "", fields: Sequence[str] = ()) -> Invalid:
    """One ``Invalid`` for every problem pydantic found, each as ``field: expectation (got x)``;
    ``field`` is the first problem's key path (``prefix`` before it, e.g. ``fault.``).

    A whole-object check (a ``__post_init__``'s ``ValueError``) has no key path: the first of
    ``fields`` its message names stands in, else ``body``."""
    problems: list[str] = []
    first: str | None = None
    for err in exc.errors(include_url=False):
        parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        if not parts:
            words = set(re.findall(r"[A-Za-z_]+", err["msg"]))
            parts = [f for f in fields if f in words][:1]
        path = prefix + ".".join(parts) if parts else prefix.rstrip(".") or "body"
        first = first or path
        kind = err["type"]
        if kind in ("extra_forbidden", "unexpected_keyword_argument"):
            problems.append(f"{path}: unknown field")
            continue
        if kind == "missing":
            problems.append(f"{path}: required field is missing")
            continue
        msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or "got" in msg else f" (got {got!r})"
        problems.append(f"{path}: {msg}{shown}")
    return Invalid("; ".join(problems) or str(exc), field=first)
