"""``python -m bench``'s outputs: the Markdown report (``RESULTS.md``) and an SVG of the charts.

The SVG is written by hand (horizontal bars, one panel a chart), so that the benchmark needs
nothing beyond the project's own dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from suite import Chart, Table

COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2")
LBTUI_COLOR = "#b07aa1"
WIDTH = 820
LABEL_W = 290
BAR_H = 14
GAP = 6


def markdown(env: dict[str, str], command: str, tables: Sequence[Table], svg: str | None) -> str:
    lines = [
        "# lbtui side by side with nginx and HAProxy",
        "",
        f"Produced by `{command}`. Every table was measured in this one run, one system after "
        "another on the same machine and the same backends; on a small shared machine absolute "
        "figures drift from run to run, so compare rows of one table, not across runs.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in env.items()),
        "",
    ]
    if svg:
        lines += [f"![charts]({svg})", ""]
    summary = [(t.title, text, ok) for t in tables for text, ok in t.verdicts]
    if summary:
        lines += ["## Targets", "", "| scenario | figure | verdict |", "|---|---|---|"]
        for title, text, ok in summary:
            mark = "PASS" if ok else "n/a" if ok is None else "MISS"
            lines.append(f"| {title} | {text} | {mark} |")
        lines.append("")
    lines += ["## Tables", ""]
    for t in tables:
        lines += [t.markdown(), ""]
    return "\n".join(lines)


def _nice(x: float) -> str:
    if x >= 10_000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _panel(chart: Chart, y0: float) -> tuple[list[str], float]:
    out: list[str] = []
    values = [v for _, vs in chart.rows for v in vs if v is not None and v > 0]
    top = max(values, default=1.0)
    lo = min(values, default=1.0)
    span_w = WIDTH - LABEL_W - 90

    def x_of(v: float) -> float:
        if chart.log_scale:
            a = math.log10(max(lo / 2, 1e-3))
            b = math.log10(top * 1.1)
            return span_w * (math.log10(max(v, 1e-3)) - a) / (b - a) if b > a else 0.0
        return span_w * v / (top * 1.05)

    y = y0
    out.append(
        f'<text x="10" y="{y + 16:.0f}" font-size="15" font-weight="bold">'
        f"{escape(chart.title)} ({escape(chart.unit)}{', log scale' if chart.log_scale else ''})"
        "</text>"
    )
    y += 26
    if len(chart.series) > 1:
        lx = LABEL_W
        for i, name in enumerate(chart.series):
            color = COLORS[i % len(COLORS)]
            out.append(
                f'<rect x="{lx}" y="{y}" width="12" height="12" fill="{color}"/>'
                f'<text x="{lx + 16}" y="{y + 11}" font-size="12">{escape(name)}</text>'
            )
            lx += 30 + 8 * len(name)
        y += 20
    for system, vs in chart.rows:
        group_h = len(vs) * (BAR_H + 2)
        out.append(
            f'<text x="{LABEL_W - 8}" y="{y + group_h / 2 + 4:.0f}" font-size="12" '
            f'text-anchor="end">{escape(system)}</text>'
        )
        for i, v in enumerate(vs):
            color = COLORS[i % len(COLORS)]
            if len(vs) == 1 and system.startswith("lbtui"):
                color = LBTUI_COLOR
            if v is None:
                continue
            w = max(x_of(v), 1.0)
            out.append(
                f'<rect x="{LABEL_W}" y="{y:.0f}" width="{w:.1f}" height="{BAR_H}" fill="{color}"/>'
                f'<text x="{LABEL_W + w + 4:.1f}" y="{y + BAR_H - 3:.0f}" font-size="11">'
                f"{_nice(v)}</text>"
            )
            y += BAR_H + 2
        y += GAP
    return out, y + 14


def svg(charts: Sequence[Chart], caption: str) -> str:
    parts: list[str] = []
    y = 10.0
    for chart in charts:
        if not chart.rows:
            continue
        body, y = _panel(chart, y)
        parts += body
    parts.append(
        f'<text x="10" y="{y + 4:.0f}" font-size="11" fill="#555">{escape(caption)}</text>'
    )
    height = int(y + 16)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">'
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>'
    )
    return head + "".join(parts) + "</svg>\n"
