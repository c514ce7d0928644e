"""The value types scenario files are made of: durations with a unit, percents, backend
names, and strict models (unknown keys rejected, frozen)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lbtui.fleet.spec import NAME_PATTERN
from lbtui.units import parse_duration

MAX_RUN_S = 3600.0
"""An experiment lasts an hour at most (every loop is bounded)."""


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        if value.strip().replace(".", "", 1).isdigit():
            raise ValueError(
                f'expected a duration with a unit such as "3s" or "250ms", got {value!r}'
            )
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError('expected a duration string such as "3s" or "250ms"')


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0, le=MAX_RUN_S)]
PositiveDuration = Annotated[float, BeforeValidator(_duration), Field(gt=0, le=MAX_RUN_S)]
Percent = Annotated[float, Field(ge=0, le=100)]
BACKEND_NAME_PATTERN = NAME_PATTERN.removesuffix("$") + r"(/[A-Za-z0-9_.:-]{1,63})?$"
"""A fleet backend's name, or HAProxy's ``BACKEND/SERVER`` when attached to HAProxy."""
BackendName = Annotated[str, Field(pattern=BACKEND_NAME_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
