"""A run's verdict for each reader: a terminal summary for the person who ran it, a JSON
document for machines, one self-contained HTML file (inline CSS and an inline SVG chart, no
script, no external asset: "PDF is not CI-friendly", grafana/k6-docs PR#1484) for the person who
has to understand what happened, and JUnit XML for CI systems.

Every renderer reads the same :class:`~lbtui.chaos.runner.RunResult`; the figures shown are
the ones the checks decided on.
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from html import escape
from typing import Any

from lbtui import __version__
from lbtui.chaos.chart import render_svg, series
from lbtui.chaos.checks import CheckResult
from lbtui.chaos.recording import CLIENT_CLASSES
from lbtui.chaos.runner import RunResult

SCHEMA = "lbtui.chaos.report/1"

_VERDICT_TEXT = {
    "passed": "PASSED",
    "failed": "FAILED",
    "aborted": "ABORTED by a guardrail",
    "interrupted": "INTERRUPTED",
    "error": "ERROR",
}


def _wall(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def verdict_line(r: RunResult) -> str:
    held = sum(c.passed for c in r.checks)
    text = _VERDICT_TEXT[r.verdict]
    line = f"{text}: {held} of {len(r.checks)} checks held"
    if r.reason:
        line += f" — {r.reason}"
    return f"{line} (exit {r.exit_code})"


def load_line(r: RunResult) -> str:
    rep = r.load
    head = f"{r.load_rate:g}/s for {r.load_duration_s:g} s"
    if rep is None:
        return head + ": not started"
    counts = r.recording.client_totals()  # the chart's labels read the same
    parts = [f"{counts[c]} {c}" for c in CLIENT_CLASSES if counts[c]]
    return (
        f"{head}: {rep.sent} sent, "
        + (", ".join(parts) or "no answer")
        + f"; p50 {_ms(rep.corrected.p50)}, p99 {_ms(rep.corrected.p99)}"
    )


def system_line(r: RunResult) -> str:
    if r.mode == "attach":
        return f"attached to {r.admin}; load to {r.target}"
    fleet = f"fleet of {len(r.members)} ({r.fleet_source})"
    return f"{fleet}; balancer {r.target} ({r.algorithm}, config {r.config_source})"


# --- terminal ----------------------------------------------------------------------------------


def render_text(r: RunResult, *, color: bool = False) -> str:
    def paint(s: str, code: str) -> str:
        return f"\x1b[{code}m{s}\x1b[0m" if color else s

    lines = [
        paint(f"lbtui chaos · {r.name}", "1")
        + f" · {r.path}"
        + (f" · scale {r.scale:g}" if r.scale != 1 else ""),
    ]
    if r.description:
        lines.append(f"  {r.description}")
    lines.append(f"system    {system_line(r)}")
    lines.append(f"load      {load_line(r)}")
    if r.recording.actions:
        for i, a in enumerate(r.recording.actions):
            head = "timeline  " if i == 0 else "          "
            state = "ok" if a.ok else paint("FAILED", "31")
            extra = f" ({a.detail})" if a.detail else ""
            lines.append(f"{head}{a.at:+7.2f}s  #{a.number} {a.description}: {state}{extra}")
    for i, c in enumerate(r.checks):
        head = "checks    " if i == 0 else "          "
        mark = paint("PASS", "32") if c.passed else paint("FAIL", "1;31")
        lines.append(f"{head}{mark}  {c.name}")
        lines.append(f"                {c.figure}")
    undo = "; ".join(
        f"{s.what}" + (f" ({s.detail})" if s.detail else "") + ("" if s.ok else " FAILED")
        for s in r.recording.rollback
    )
    lines.append(f"rollback  {undo or 'nothing to undo'}")
    code = "1;32" if r.verdict == "passed" else "1;31"
    lines.append("verdict   " + paint(verdict_line(r), code))
    return "\n".join(lines)


# --- JSON ------------------------------------------------------------------------------------


def _check_json(c: CheckResult) -> dict[str, Any]:
    return {
        "name": c.name,
        "kind": c.kind,
        "passed": c.passed,
        "figure": c.figure,
        "window_s": list(c.window) if c.window is not None else None,
        "figures": c.figures,
    }


def to_json(r: RunResult) -> dict[str, Any]:
    rec = r.recording
    s = series(rec)
    return {
        "schema": SCHEMA,
        "lbtui": __version__,
        "scenario": {
            "name": r.name,
            "path": r.path,
            "description": r.description,
            "scale": r.scale,
        },
        "verdict": r.verdict,
        "exit_code": r.exit_code,
        "reason": r.reason,
        "started": _wall(r.started_wall),
        "started_unix": r.started_wall,
        "duration_s": round(rec.end, 3),
        "system": {
            "mode": r.mode,
            "target": r.target,
            "admin": r.admin,
            "fleet": r.fleet_source,
            "config": r.config_source,
            "algorithm": r.algorithm,
            "members": [
                {"name": m.name, "url": m.url, "pid": m.pid, "character": m.character}
                for m in r.members
            ],
        },
        "load": {
            "rate": r.load_rate,
            "duration_s": r.load_duration_s,
            "report": r.load.to_dict() if r.load is not None else None,
            "client_totals": rec.client_totals(),
        },
        "phases": (
            {
                "first_action_s": r.phases.first,
                "timeline_end_s": r.phases.last,
                "end_s": r.phases.end,
            }
            if r.phases is not None
            else None
        ),
        "checks": [_check_json(c) for c in r.checks],
        "actions": [
            {
                "number": a.number,
                "id": a.id,
                "action": a.action,
                "backend": a.backend,
                "description": a.description,
                "planned_at_s": round(a.planned_at, 3),
                "at_s": round(a.at, 3),
                "took_s": round(a.took_s, 3),
                "ends_at_s": None if a.ends_at is None else round(a.ends_at, 3),
                "ok": a.ok,
                "detail": a.detail,
            }
            for a in rec.actions
        ],
        "events": [
            {
                "t_s": round(e.t, 3),
                "id": e.id,
                "kind": e.kind,
                "backend": e.backend,
                "message": e.message,
                "data": dict(e.data),
            }
            for e in rec.events
        ],
        "rollback": [{"what": s.what, "ok": s.ok, "detail": s.detail} for s in rec.rollback],
        "rollback_ok": r.rollback_ok,
        "fleet_processes": [
            {
                "backend": p.backend,
                "pid": p.pid,
                "requests": p.requests,
                "by_method": dict(p.by_method),
                "request_ids_repeated": p.request_ids_repeated,
            }
            for p in rec.processes.values()
        ],
        "series": {
            "bin_s": 1.0,
            "t_s": s.t,
            "target_rate": s.target_rate,
            "client_per_s": s.client,
            "client_p99_ms": s.client_p99_ms,
            "backends": {
                name: {"rps": b.rps, "errors_per_s": b.errors_per_s, "p99_ms": b.p99_ms}
                for name, b in s.backends.items()
            },
        },
        "samples": [
            {
                "t_s": round(x.t, 3),
                "client": dict(x.client),
                "balancer_requests": x.balancer_requests,
                "retries": x.retries,
                "fallbacks": x.fallbacks,
                "rate_limited": x.rate_limited,
                "admitted": x.admitted,
                "backends": {
                    n: {
                        "requests": b.requests,
                        "errors": b.errors,
                        "p99_ms": round(b.p99_ms, 3),
                        "in_flight": b.in_flight,
                        "breaker": b.breaker,
                        "admin": b.admin,
                        "ejected": b.ejected,
                        "health": b.health,
                        "fault": b.fault,
                        "weight": b.weight,
                    }
                    for n, b in x.backends.items()
                },
            }
            for x in rec.samples
        ],
    }


def render_json(r: RunResult) -> str:
    return json.dumps(to_json(r), indent=2, ensure_ascii=False) + "\n"


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 24px auto; max-width: 1140px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin: 0 0 12px; }
.verdict { display: inline-block; padding: 6px 12px; border-radius: 4px; font-weight: 600;
           color: #fff; }
.passed { background: #2e7d32; } .failed, .error { background: #c62828; }
.aborted { background: #6a1b9a; } .interrupted { background: #546e7a; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pass { color: #2e7d32; font-weight: 600; } .fail { color: #c62828; font-weight: 600; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dt { color: #666; } dd { margin: 0; }
.chart { overflow-x: auto; border: 1px solid #eee; padding: 4px; }
code { font-size: 12px; }
"""


def render_html(r: RunResult) -> str:
    rec = r.recording
    e = escape
    checks_rows = "".join(
        f'<tr><td class="{"pass" if c.passed else "fail"}">{"PASS" if c.passed else "FAIL"}</td>'
        f"<td>{e(c.name)}<br><code>{e(c.kind)}</code></td><td>{e(c.figure)}</td>"
        f'<td class="num">{"" if c.window is None else f"{c.window[0]:.1f}–{c.window[1]:.1f} s"}'
        "</td></tr>"
        for c in r.checks
    )
    action_rows = "".join(
        f'<tr><td class="num">#{a.number}</td><td class="num">{a.at:.2f} s</td>'
        f"<td>{e(a.description)}</td>"
        f'<td class="{"pass" if a.ok else "fail"}">{"ok" if a.ok else "FAILED"}</td>'
        f"<td>{e(a.detail)}</td></tr>"
        for a in rec.actions
    )
    event_rows = "".join(
        f'<tr><td class="num">{ev.t:.2f} s</td><td>{e(ev.kind)}</td>'
        f"<td>{e(ev.backend or '')}</td><td>{e(ev.message)}</td></tr>"
        for ev in rec.events
    )
    undo_rows = "".join(
        f'<tr><td class="{"pass" if s.ok else "fail"}">{"ok" if s.ok else "FAILED"}</td>'
        f"<td>{e(s.what)}</td><td>{e(s.detail)}</td></tr>"
        for s in rec.rollback
    )
    member_rows = "".join(
        f"<tr><td>{e(m.name)}</td><td>{e(m.url.split('//', 1)[-1])}</td>"
        f'<td class="num">{m.pid or ""}</td><td>{e(m.character)}</td></tr>'
        for m in r.members
    )
    phase = (r.phases.first, r.phases.last) if r.phases is not None else None
    aborted_at = rec.end if r.verdict in ("aborted", "interrupted", "error") else None
    scale = f" (duration scale {r.scale:g})" if r.scale != 1 else ""
    svg = render_svg(rec, phase=phase, title=f"{r.name}: what happened when", aborted_at=aborted_at)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lbtui chaos · {e(r.name)} · {e(r.verdict)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{e(r.name)}</h1>
<p class="sub">{e(r.description)}</p>
<p><span class="verdict {e(r.verdict)}">{e(verdict_line(r))}</span></p>
<dl>
<dt>scenario</dt><dd><code>{e(r.path)}</code>{scale}</dd>
<dt>started</dt><dd>{e(_wall(r.started_wall))}, ran {rec.end:.1f} s</dd>
<dt>system</dt><dd>{e(system_line(r))}</dd>
<dt>load</dt><dd>{e(load_line(r))}</dd>
<dt>lbtui</dt><dd>{e(__version__)}</dd>
</dl>
<h2>Checks</h2>
<table><tr><th></th><th>hypothesis</th><th>deciding figure</th><th>window</th></tr>
{checks_rows}</table>
<h2>Timeline</h2>
<p class="sub">Actions are dashed lines; the shaded span is the timeline (from the first action
to the end of the last one's effect). Hover over any mark for its figures.</p>
<div class="chart">{svg}</div>
<h2>Actions</h2>
<table><tr><th>#</th><th>at</th><th>action</th><th></th><th>detail</th></tr>
{action_rows or '<tr><td colspan="5">none</td></tr>'}</table>
<h2>Events</h2>
<p class="sub">Every event of the balancer's stream during the run, on the run's clock.</p>
<table><tr><th>at</th><th>kind</th><th>backend</th><th>what and why</th></tr>
{event_rows or '<tr><td colspan="4">none</td></tr>'}</table>
<h2>Rollback</h2>
<table><tr><th></th><th>undo</th><th>detail</th></tr>
{undo_rows or '<tr><td colspan="3">nothing to undo</td></tr>'}</table>
<h2>Backends</h2>
<table><tr><th>name</th><th>address</th><th>pid at start</th><th>character</th></tr>
{member_rows}</table>
</body>
</html>
"""


# --- JUnit -----------------------------------------------------------------------------------


def render_junit(r: RunResult) -> str:
    failures = sum(not c.passed for c in r.checks)
    errors = 1 if r.verdict in ("aborted", "interrupted", "error") else 0
    suites = ET.Element(
        "testsuites",
        name="lbtui chaos",
        tests=str(len(r.checks) + errors),
        failures=str(failures),
        errors=str(errors),
        time=f"{r.recording.end:.3f}",
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=r.name,
        tests=str(len(r.checks) + errors),
        failures=str(failures),
        errors=str(errors),
        time=f"{r.recording.end:.3f}",
        timestamp=dt.datetime.fromtimestamp(r.started_wall, dt.UTC).isoformat(),
    )
    for c in r.checks:
        case = ET.SubElement(suite, "testcase", classname=f"chaos.{r.name}", name=c.name, time="0")
        if not c.passed:
            fail = ET.SubElement(case, "failure", message=c.figure, type=c.kind)
            fail.text = c.figure
    if errors:
        case = ET.SubElement(suite, "testcase", classname=f"chaos.{r.name}", name="run", time="0")
        err = ET.SubElement(case, "error", message=r.reason or r.verdict, type=r.verdict)
        err.text = r.reason or r.verdict
    out = ET.SubElement(suite, "system-out")
    out.text = render_text(r)
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )
