"""The run as one picture: an inline SVG timeline, drawn here with no library and no asset.

Top to bottom, on one time axis (seconds since the load started): the timeline's actions as
numbered markers with their labels; what clients got each second (stacked by outcome, with
the load's target rate dashed); the clients' p99 each second; one lane per backend — its
attempts per second and its errors per second, and under them two bands: the breaker's state
(open red, half-open amber, forced open purple) and its other states (a fault set, draining,
disabled, health down, ejected); and the balancer's events as ticks. Every mark carries a
``<title>``, so hovering in a browser says what it is.

``series`` computes the per-second figures the chart (and the JSON report) show, from the
recording's cumulative counters: one reading, no second count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

from lbtui.chaos.recording import (
    CLIENT_CLASSES,
    ActionRecord,
    BackendSample,
    Recording,
    Sample,
)

WIDTH = 1100
LEFT = 96
RIGHT = 24
PLOT_W = WIDTH - LEFT - RIGHT

CLIENT_COLORS = {
    "2xx": "#4caf50",
    "3xx": "#8bc34a",
    "4xx": "#ff9800",
    "429": "#ffc107",
    "5xx": "#e53935",
    "transport": "#6d1b1b",
}
BREAKER_COLORS = {"open": "#e53935", "half_open": "#ffb300", "forced_open": "#8e24aa"}
STATE_COLORS = {
    "fault": "#d81b60",
    "draining": "#90a4ae",
    "disabled": "#37474f",
    "down": "#5d4037",
    "ejected": "#a1887f",
    "absent": "#eeeeee",
}
EVENT_COLORS = {
    "breaker": "#e53935",
    "ejection": "#795548",
    "health": "#5d4037",
    "fault": "#d81b60",
    "fleet": "#1e88e5",
    "action": "#546e7a",
    "limits": "#ffb300",
    "fallback": "#fb8c00",
    "retry_budget": "#6a1b9a",
    "config": "#00897b",
}
BACKEND_COLORS = ["#1e88e5", "#43a047", "#8e24aa", "#f4511e", "#00acc1", "#c0ca33", "#6d4c41"]


@dataclass
class BackendSeries:
    rps: list[float] = field(default_factory=list)
    errors_per_s: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)


@dataclass
class Series:
    """Per-second figures: bin ``i`` covers ``[t[i], t[i] + 1)`` seconds (the last one up to
    the end); rates are per second of the span of the samples that bound the bin."""

    t: list[float] = field(default_factory=list)
    client: dict[str, list[float]] = field(default_factory=dict)
    """Answers per second by outcome class."""
    client_p99_ms: list[float | None] = field(default_factory=list)
    target_rate: list[float] = field(default_factory=list)
    backends: dict[str, BackendSeries] = field(default_factory=dict)


def series(rec: Recording, bin_s: float = 1.0) -> Series:
    out = Series()
    end = rec.end
    if not rec.samples or end <= 0:
        return out
    names: list[str] = []
    for s in rec.samples:
        for n in s.backends:
            if n not in names:
                names.append(n)
    out.client = {c: [] for c in CLIENT_CLASSES}
    out.backends = {n: BackendSeries() for n in names}
    n_bins = max(1, math.ceil(end / bin_s - 1e-9))
    if n_bins > 1 and end - (n_bins - 1) * bin_s < bin_s / 2:
        n_bins -= 1  # a sliver at the end joins the last full bin rather than spike
    for i in range(n_bins):
        a = i * bin_s
        b = end if i == n_bins - 1 else (i + 1) * bin_s
        sa, sb = rec.window(a, b)
        # per second of the samples' own span: a late sample must not dent the rate
        span = max(sb.t - sa.t, 1e-9) if sa is not None and sb is not None else max(b - a, 1e-9)
        out.t.append(round(a, 3))
        # bins that tile (each answer in one bin), so that a 5xx between two bins' samples
        # still shows; the labels give the exact totals (Recording.client_totals)
        counts, tiled_span = rec.client_counts_tiled(a, b)
        for c in CLIENT_CLASSES:
            out.client[c].append(round(counts[c] / tiled_span, 2) if tiled_span else 0.0)
        p99, answered = rec.client_p99_ms(a, b)
        out.client_p99_ms.append(round(p99, 3) if answered else None)
        last = rec.at_or_before(b)
        out.target_rate.append(last.load_rate if last is not None else 0.0)
        for name in names:
            req, err = rec.backend_delta(name, a, b)
            bs = out.backends[name]
            bs.rps.append(round(req / span, 2))
            bs.errors_per_s.append(round(err / span, 2))
            sample = last.backends.get(name) if last is not None else None
            bs.p99_ms.append(round(sample.p99_ms, 3) if sample is not None else 0.0)
    return out


# --- drawing ---------------------------------------------------------------------------------


def _nice_max(x: float) -> float:
    if x <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if x <= m * exp:
            return float(m * exp)
    return float(10 * exp)


def _fmt(x: float) -> str:
    return f"{x:.0f}" if x >= 10 or x == int(x) else f"{x:.1f}"


class _Canvas:
    def __init__(self, t_end: float) -> None:
        self.t_end = max(t_end, 1e-6)
        self.parts: list[str] = []
        self.labels: list[tuple[float, str]] = []
        self.y = 0.0

    def x(self, t: float) -> float:
        return LEFT + PLOT_W * min(max(t, 0.0), self.t_end) / self.t_end

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(
        self,
        x: float,
        y: float,
        s: str,
        *,
        anchor: str = "start",
        size: int = 11,
        cls: str = "",
        fill: str = "#333",
    ) -> None:
        c = f' class="{cls}"' if cls else ""
        self.add(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill}"{c}>{escape(s)}</text>'
        )

    def rect(
        self, x: float, y: float, w: float, h: float, fill: str, title: str = "", opacity: float = 1
    ) -> None:
        op = f' fill-opacity="{opacity:g}"' if opacity != 1 else ""
        body = f"<title>{escape(title)}</title>" if title else ""
        self.add(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{h:.1f}" '
            f'fill="{fill}"{op}>{body}</rect>'
        )

    def frame(self, y: float, h: float, label: str, sub: str = "") -> None:
        self.rect(LEFT, y, PLOT_W, h, "#fafafa")
        self.add(
            f'<rect x="{LEFT}" y="{y:.1f}" width="{PLOT_W}" height="{h:.1f}" fill="none" '
            'stroke="#ccc"/>'
        )
        self.text(LEFT - 8, y + 13, label, anchor="end", size=12, fill="#111")
        if sub:
            self.text(LEFT - 8, y + 27, sub, anchor="end", size=10, fill="#777")

    def y_axis(self, y: float, h: float, top: float, unit: str) -> None:
        """Grid lines now; their labels go on top of whatever the panel draws next."""
        for frac in (0.0, 0.5, 1.0):
            yy = y + h - frac * h
            self.add(
                f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{yy:.1f}" y2="{yy:.1f}" '
                'stroke="#e6e6e6"/>'
            )
            if frac:
                self.labels.append((yy + 10, f"{_fmt(top * frac)} {unit}"))

    def flush_labels(self) -> None:
        for yy, label in self.labels:
            self.add(
                f'<text x="{LEFT + 3}" y="{yy:.1f}" font-size="9" fill="#555" '
                f'stroke="#fff" stroke-width="2.5" paint-order="stroke">{escape(label)}</text>'
            )
        self.labels.clear()

    def polyline(
        self, pts: Sequence[tuple[float, float]], color: str, width: float = 1.5, dash: str = ""
    ) -> None:
        if not pts:
            return
        d = f' stroke-dasharray="{dash}"' if dash else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        self.add(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{width:g}"'
            f' stroke-linejoin="round"{d}/>'
        )

    def area(
        self,
        pts: Sequence[tuple[float, float]],
        base: Sequence[tuple[float, float]],
        color: str,
        title: str,
    ) -> None:
        if not pts:
            return
        ring = list(pts) + list(reversed(base))
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in ring)
        self.add(
            f'<polygon points="{path}" fill="{color}" fill-opacity="0.85" stroke="none">'
            f"<title>{escape(title)}</title></polygon>"
        )


def _steps(
    ts: Sequence[float],
    values: Sequence[float],
    canvas: _Canvas,
    y0: float,
    h: float,
    top: float,
    end: float,
) -> list[tuple[float, float]]:
    """A step line through per-bin values: flat across each bin."""
    pts: list[tuple[float, float]] = []
    for i, v in enumerate(values):
        a = ts[i]
        b = ts[i + 1] if i + 1 < len(ts) else end
        yy = y0 + h - h * min(v / top, 1.0)
        pts.append((canvas.x(a), yy))
        pts.append((canvas.x(b), yy))
    return pts


def _bands(
    canvas: _Canvas,
    samples: Sequence[Sample],
    name: str,
    y: float,
    h: float,
    state_of: Callable[[BackendSample], str],
    colors: dict[str, str],
    what: str,
) -> None:
    """Colour the spans where ``state_of(sample)`` names a coloured state."""
    current: str | None = None
    since = 0.0
    for i, s in enumerate(samples):
        b = s.backends.get(name)
        state = state_of(b) if b is not None else "absent"
        if state != current:
            if current in colors:
                canvas.rect(
                    canvas.x(since),
                    y,
                    canvas.x(s.t) - canvas.x(since),
                    h,
                    colors[current],
                    f"{name} {what} {current.replace('_', ' ')}: {since:.2f}–{s.t:.2f} s",
                )
            current, since = state, s.t
        if i == len(samples) - 1 and current in colors:
            canvas.rect(
                canvas.x(since),
                y,
                canvas.x(s.t) - canvas.x(since),
                h,
                colors[current],
                f"{name} {what} {current.replace('_', ' ')}: from {since:.2f} s",
            )


def _other_state(b: BackendSample) -> str:
    if b.admin == "disabled":
        return "disabled"
    if b.admin == "draining":
        return "draining"
    if b.health == "down":
        return "down"
    if b.ejected:
        return "ejected"
    if b.fault is not None:
        return "fault"
    return "normal"


def _breaker_state(b: BackendSample) -> str:
    return b.breaker or "none"


def _label_rows(actions: Sequence[ActionRecord], canvas: _Canvas) -> list[int]:
    """A row for each action's label so that labels do not overlap (greedy, left to right)."""
    rows_end: list[float] = []
    out: list[int] = []
    for a in actions:
        x = canvas.x(a.at)
        width = 7.0 * (len(a.description) + 4)
        for r, end in enumerate(rows_end):
            if x > end + 6:
                rows_end[r] = x + width
                out.append(r)
                break
        else:
            rows_end.append(x + width)
            out.append(len(rows_end) - 1)
    return out


def render_svg(
    rec: Recording,
    *,
    phase: tuple[float, float] | None = None,
    title: str = "",
    aborted_at: float | None = None,
) -> str:
    """The whole chart as one ``<svg>`` element."""
    data = series(rec)
    end = rec.end
    canvas = _Canvas(end)
    actions = list(rec.actions)
    rows = _label_rows(actions, canvas)
    n_rows = max(rows, default=-1) + 1
    y = 8.0
    if title:
        canvas.text(LEFT, y + 12, title, size=14, fill="#111")
        y += 22
    label_top = y
    y += 16 * n_rows + 6
    plot_top = y

    # clients
    h = 150.0
    canvas.frame(y, h, "clients", "answers/s")
    stacked_max = max(
        [sum(data.client[c][i] for c in CLIENT_CLASSES) for i in range(len(data.t))]
        + data.target_rate
        + [1.0]
    )
    top = _nice_max(stacked_max * 1.1)
    canvas.y_axis(y, h, top, "/s")
    base = [0.0] * len(data.t)
    totals = rec.client_totals()  # the summary's count, not the areas re-integrated
    for cls in CLIENT_CLASSES:
        vals = data.client[cls]
        if not any(vals):
            continue
        upper = [b + v for b, v in zip(base, vals, strict=True)]
        canvas.area(
            _steps(data.t, upper, canvas, y, h, top, end),
            _steps(data.t, base, canvas, y, h, top, end),
            CLIENT_COLORS[cls],
            f"clients {cls}: {totals[cls]} in all",
        )
        base = upper
    canvas.polyline(_steps(data.t, data.target_rate, canvas, y, h, top, end), "#222", 1.2, "5,4")
    canvas.flush_labels()
    y += h + 10

    # client p99
    h = 90.0
    canvas.frame(y, h, "client p99", "ms")
    p99s = [p for p in data.client_p99_ms if p is not None]
    top = _nice_max(max(p99s, default=1.0) * 1.1)
    canvas.y_axis(y, h, top, "ms")
    pts: list[tuple[float, float]] = []
    for i, p in enumerate(data.client_p99_ms):
        if p is None:
            continue
        xm = canvas.x(data.t[i] + 0.5)
        pts.append((xm, y + h - h * min(p / top, 1.0)))
        canvas.add(
            f'<circle cx="{xm:.1f}" cy="{pts[-1][1]:.1f}" r="2" fill="#3949ab">'
            f"<title>{data.t[i]:.0f}–{data.t[i] + 1:.0f} s: p99 {p:.1f} ms</title></circle>"
        )
    canvas.polyline(pts, "#3949ab", 1.5)
    canvas.flush_labels()
    y += h + 10

    # backends
    names = list(data.backends)
    lane_h = 64.0
    for k, name in enumerate(names):
        bs = data.backends[name]
        color = BACKEND_COLORS[k % len(BACKEND_COLORS)]
        canvas.frame(y, lane_h, name, "attempts/s")
        top = _nice_max(max([*bs.rps, 1.0]) * 1.1)
        canvas.y_axis(y, lane_h, top, "/s")
        zero = [0.0] * len(data.t)
        total_req = sum(bs.rps)
        canvas.area(
            _steps(data.t, bs.rps, canvas, y, lane_h, top, end),
            _steps(data.t, zero, canvas, y, lane_h, top, end),
            color,
            f"{name}: attempts per second (about {total_req:.0f} in all)",
        )
        if any(bs.errors_per_s):
            canvas.area(
                _steps(data.t, bs.errors_per_s, canvas, y, lane_h, top, end),
                _steps(data.t, zero, canvas, y, lane_h, top, end),
                "#e53935",
                f"{name}: errors per second (5xx and failed attempts)",
            )
        canvas.flush_labels()
        y += lane_h + 2
        _bands(canvas, rec.samples, name, y, 8, _breaker_state, BREAKER_COLORS, "breaker")
        canvas.text(LEFT - 8, y + 7, "breaker", anchor="end", size=8, fill="#777")
        y += 9
        _bands(canvas, rec.samples, name, y, 8, _other_state, STATE_COLORS, "state")
        canvas.text(LEFT - 8, y + 7, "state", anchor="end", size=8, fill="#777")
        y += 16

    # events
    h = 26.0
    canvas.frame(y, h, "events")
    for ev in rec.events:
        if ev.t < -0.5 or ev.t > end + 1:
            continue
        xe = canvas.x(ev.t)
        color = EVENT_COLORS.get(ev.kind, "#555")
        who = f"{ev.backend}: " if ev.backend else ""
        canvas.add(
            f'<line x1="{xe:.1f}" x2="{xe:.1f}" y1="{y + 3:.1f}" y2="{y + h - 3:.1f}" '
            f'stroke="{color}" stroke-width="2"><title>{ev.t:.2f} s  {escape(ev.kind)}  '
            f"{escape(who + ev.message)}</title></line>"
        )
    y += h + 6
    plot_bottom = y

    # the "during" phase, behind everything else
    if phase is not None and phase[1] > phase[0]:
        x0, x1 = canvas.x(phase[0]), canvas.x(phase[1])
        canvas.parts.insert(
            0,
            f'<rect x="{x0:.1f}" y="{plot_top - 4:.1f}" width="{x1 - x0:.1f}" '
            f'height="{plot_bottom - plot_top:.1f}" fill="#fff8e1"><title>the timeline: '
            f"{phase[0]:.1f}–{phase[1]:.1f} s</title></rect>",
        )

    # actions across every panel
    for a, row in zip(actions, rows, strict=True):
        xa = canvas.x(a.at)
        color = "#263238" if a.ok else "#e53935"
        if a.ends_at is not None:
            canvas.rect(
                xa,
                plot_top - 4,
                canvas.x(a.ends_at) - xa,
                3,
                "#d81b60",
                f"#{a.number} lasts until {a.ends_at:.1f} s",
            )
        canvas.add(
            f'<line x1="{xa:.1f}" x2="{xa:.1f}" y1="{label_top + 16 * row + 4:.1f}" '
            f'y2="{plot_bottom - 6:.1f}" stroke="{color}" stroke-width="1.2" '
            f'stroke-dasharray="4,3"><title>#{a.number} at {a.at:.2f} s: '
            f"{escape(a.description)}{' (failed)' if not a.ok else ''}</title></line>"
        )
        canvas.text(
            xa + 3,
            label_top + 16 * row + 12,
            f"#{a.number} {a.description}",
            size=11,
            fill=color,
        )
    if aborted_at is not None:
        xa = canvas.x(aborted_at)
        canvas.add(
            f'<line x1="{xa:.1f}" x2="{xa:.1f}" y1="{plot_top:.1f}" y2="{plot_bottom:.1f}" '
            'stroke="#b71c1c" stroke-width="2.5"><title>aborted here</title></line>'
        )
        canvas.text(xa - 4, plot_top + 12, "aborted", anchor="end", size=11, fill="#b71c1c")

    # time axis
    step = _nice_max(end / 10) if end > 0 else 1.0
    t = 0.0
    while t <= end + 1e-9:  # bounded: about ten ticks
        xt = canvas.x(t)
        canvas.add(
            f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{plot_bottom - 6:.1f}" '
            f'y2="{plot_bottom - 1:.1f}" stroke="#555"/>'
        )
        canvas.text(xt, plot_bottom + 10, f"{_fmt(t)} s", anchor="middle", size=10, fill="#555")
        t += step
    y = plot_bottom + 22

    # legend
    x = float(LEFT)
    legend = [(f"clients {c}", CLIENT_COLORS[c]) for c in CLIENT_CLASSES]
    legend += [(f"breaker {k.replace('_', ' ')}", v) for k, v in BREAKER_COLORS.items()]
    legend += [(k, v) for k, v in STATE_COLORS.items() if k != "absent"]
    for label, color in legend:
        if x + 8 * len(label) + 24 > WIDTH:
            x = float(LEFT)
            y += 16
        canvas.rect(x, y, 10, 10, color)
        canvas.text(x + 14, y + 9, label, size=10, fill="#444")
        x += 7 * len(label) + 28
    y += 20
    height = y
    return (
        f'<svg width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" font-family="system-ui, sans-serif" '
        f'role="img"><title>{escape(title or "chaos run")}</title>'
        + "".join(canvas.parts)
        + "</svg>"
    )
