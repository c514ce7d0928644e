"""Numbers as the console shows them: rates, latencies, ratios, durations, sizes, times of
day, and sparklines. Pure and Textual-free like the rest of the view model (``lbtui.tui.view``),
split from it so that the table row, the detail pane and the header all read their figures
from one place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import lru_cache

from lbtui.control.model import Snapshot

# --- numbers -----------------------------------------------------------------------------------


def num(x: float) -> str:
    """A short number for people: ``0.4``, ``1``, ``0.33``, ``12.5``, ``1250``."""
    if not math.isfinite(x):
        return "∞" if x > 0 else "–"
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.2f}".rstrip("0").rstrip(".")


def rate_text(rps: float) -> str:
    """Requests per second: ``0``, ``3.2``, ``123``, ``12.3k``."""
    if rps <= 0:
        return "0"
    if rps < 10:
        return f"{rps:.1f}"
    if rps < 10_000:
        return f"{rps:.0f}"
    return f"{rps / 1000:.1f}k"


NO_SAMPLES = "—"
"""A percentile over a window that holds too few samples to say (the snapshot's ``None``)."""


def ms_text(ms: float | None) -> str:
    """Milliseconds: ``0.42``, ``3.2``, ``123``, ``12.3k``; ``—`` when the window holds too
    few samples for the percentile (``None``)."""
    if ms is None:
        return NO_SAMPLES
    if not math.isfinite(ms) or ms <= 0:
        return "–"
    if ms < 1:
        return f"{ms:.2f}"
    if ms < 10:
        return f"{ms:.1f}"
    if ms < 10_000:
        return f"{ms:.0f}"
    return f"{ms / 1000:.1f}k"


def percent_text(ratio: float) -> str:
    """A ratio (0..1) as a percentage without the sign: ``0``, ``0.4``, ``12.5``, ``100``."""
    p = ratio * 100
    if p <= 0:
        return "0"
    if p < 10:
        return f"{p:.1f}"
    return f"{p:.0f}"


def human_duration(seconds: float | None) -> str:
    """``250 ms``, ``3.2 s``, ``42 s``, ``5 m 03 s``, ``2 h 05 m``; ``–`` for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = max(seconds, 0.0)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        m, sec = divmod(int(s), 60)
        return f"{m} m {sec:02d} s"
    h, rem = divmod(int(s), 3600)
    return f"{h} h {rem // 60:02d} m"


def human_bytes(n: float) -> str:
    """``512 B``, ``4.0 KiB``, ``12.3 MiB``, ``1.5 GiB``."""
    value = float(max(n, 0))
    if value < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def clock_text(wall: float) -> str:
    """Wall-clock time of day ``HH:MM:SS`` (local time)."""
    return time.strftime("%H:%M:%S", time.localtime(wall))


def wall_of(snapshot: Snapshot, at: float) -> float:
    """The Unix time of monotonic ``at`` on the balancer's clock (model.py, "Times")."""
    return snapshot.wall - (snapshot.at - at)


# --- sparklines --------------------------------------------------------------------------------

BLOCKS = "▁▂▃▄▅▆▇█"


def resample(values: Sequence[float], width: int) -> list[float]:
    """At most ``width`` values; each is the maximum of its bucket, so a spike stays visible."""
    n = len(values)
    if width <= 0:
        return []
    if n <= width:
        return list(values)
    out = []
    for i in range(width):
        lo, hi = i * n // width, (i + 1) * n // width
        out.append(max(values[lo:hi]))
    return out


def sparkline(values: Sequence[float], width: int | None = None, top: float | None = None) -> str:
    """A one-line plot in unicode blocks, scaled to ``top`` (default: the largest value).

    Zero is a blank, any positive value at least ``▁``, so an idle stretch reads as idle.
    """
    # memoised: fifty backends' series change once a second, the console asks four times
    return _sparkline(tuple(values), width, top)


@lru_cache(maxsize=1024)
def _sparkline(values: tuple[float, ...], width: int | None, top: float | None) -> str:
    vals = resample(values, width) if width is not None else list(values)
    hi = top if top is not None else max(vals, default=0.0)
    if hi <= 0:
        return " " * len(vals)
    out = []
    for v in vals:
        if v <= 0 or not math.isfinite(v):
            out.append(" ")
        else:
            idx = min(len(BLOCKS) - 1, max(0, math.ceil(v / hi * len(BLOCKS)) - 1))
            out.append(BLOCKS[idx])
    return "".join(out)
