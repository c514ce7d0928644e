"""The HTML report's figures agree with its summary: one count of what clients got, read from
the same place by the summary line, the chart's labels and the JSON. A run once read
``3994 2xx, 6 5xx`` above a chart labelled ``2xx: 3997 … 5xx: 4``: the chart re-integrated
per-second rates measured between the samples inside each second, which lose the answers that
arrive between two seconds' samples (and the run's 5xx arrived there)."""

from __future__ import annotations

import dataclasses
import json
import re

from lbtui.chaos.chart import series
from lbtui.chaos.recording import CLIENT_CLASSES, Recording, Sample
from lbtui.chaos.report import render_html, render_json
from lbtui.loadgen import LatencySummary, LoadReport
from tests.chaos.test_checks import backend, result


def irregular_recording() -> Recording:
    """Samples at uneven times (as a loaded machine takes them); the 5xx land between the
    samples that bound each second; 2xx everywhere."""
    rec = Recording()
    times = [0.0, 0.37, 0.81, 1.02, 1.55, 1.97, 2.21, 2.93, 3.04, 3.71, 4.0]
    ok = err = 0
    for i, t in enumerate(times):
        if i:
            ok += 97 + 13 * (i % 3)
            err += 1 if t in (1.02, 2.21, 3.04) else 0
        client = dict.fromkeys(CLIENT_CLASSES, 0)
        client["2xx"], client["5xx"] = ok, err
        rec.add(
            Sample(
                t=t,
                client=client,
                client_latency={},
                balancer_requests=ok + err,
                retries=0,
                fallbacks=0,
                rate_limited=0,
                admitted=ok + err,
                limits_rps=None,
                backends={"a": backend(ok + err, err)},
                load_rate=250.0,
            )
        )
    return rec


def load_report(sent: int) -> LoadReport:
    lat = LatencySummary(0.005, 0.006, 0.007, 0.008, 0.009, sent)
    return LoadReport(
        url="http://127.0.0.1:1/",
        duration_s=4,
        elapsed_s=4,
        offered_rate=250,
        achieved_rate=sent / 4,
        scheduled=sent,
        sent=sent,
        completed=sent,
        unsent=0,
        status_counts={},
        errors={},
        error_examples={},
        late_starts=0,
        ceiling_hits=0,
        max_start_delay_s=0.0,
        bytes_in=0,
        corrected=lat,
        raw=lat,
    )


def test_summary_chart_and_json_count_the_same_answers() -> None:
    rec = irregular_recording()
    totals = {c: n for c, n in rec.samples[-1].client.items() if n}
    assert totals == {"2xx": 1100, "5xx": 3}
    r = dataclasses.replace(
        result("passed"), recording=rec, phases=None, load=load_report(1103), load_duration_s=4
    )
    page = render_html(r)
    summary = re.search(r"1103 sent, ([^;]+);", page)
    assert summary is not None
    assert summary.group(1) == "1100 2xx, 3 5xx"
    chart = {cls: int(n) for cls, n in re.findall(r"clients (\w+): (\d+) in all", page)}
    assert chart == totals
    doc = json.loads(render_json(r))
    assert {c: n for c, n in doc["load"]["client_totals"].items() if n} == totals


def test_every_answer_falls_in_one_chart_bin() -> None:
    rec = irregular_recording()
    data = series(rec)
    assert len(data.t) == 4
    assert all(v > 0 for v in data.client["5xx"][1:]), data.client["5xx"]  # drawn, not lost
