"""``LoadHandle``: what the console needs of a load generator running next to it.

``lbtui demo`` passes its ``lbtui.loadgen.LoadGenerator`` (which has exactly this shape);
``lbtui attach`` passes none and the load panel is not shown. ``live()`` is in-process and
cheap (the generator promises 10 Hz), so the panel reads it on a timer, not in a worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lbtui.loadgen import LiveFigures


MIN_RATE = 1.0
MAX_RATE = 50_000.0
STEP = 1.25
"""``+`` multiplies the rate by this, ``-`` divides by it."""


class LoadHandle(Protocol):
    def live(self) -> LiveFigures: ...

    @property
    def rate(self) -> float: ...

    def set_rate(self, rate: float) -> None: ...


def stepped_rate(rate: float, up: bool) -> float:
    """The next rate for ``+`` / ``-``: ×1.25 or ÷1.25, kept within [1, 50 000] req/s."""
    new = rate * STEP if up else rate / STEP
    if rate <= 0 and up:
        new = MIN_RATE
    return round(min(MAX_RATE, max(MIN_RATE, new)), 2)
