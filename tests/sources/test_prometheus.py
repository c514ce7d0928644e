"""``PrometheusControl`` against a real Prometheus scraping a real HAProxy's exporter and a
real lbtui's ``/metrics``: the same rows from PromQL, events from what flips, and no action."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import pytest

from lbtui.control.errors import ReadOnly, Unavailable
from lbtui.control.model import HealthChanged, SetAdmin, Snapshot
from lbtui.errors import UsageError
from lbtui.sources.presets import PRESETS, Preset, load_preset
from lbtui.sources.prometheus import PrometheusControl
from tests.sources.prom_rig import PrometheusRig
from tests.sources.rig import HaproxyRig


def fast(name: str) -> Preset:
    """The preset over a 3 s window: enough 500 ms scrapes for a rate, quick to follow."""
    return dataclasses.replace(PRESETS[name], window="3s", window_s=3.0)


async def eventually(cond: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.2)


async def test_haproxy_preset_builds_rows_from_promql(
    prometheus: PrometheusRig, haproxy: HaproxyRig
) -> None:
    control = PrometheusControl(prometheus.url, fast("haproxy"))
    try:
        await asyncio.to_thread(lambda: [haproxy.get() for _ in range(60)])

        async def rates() -> bool:
            snap = await control.snapshot()
            return len(snap.backends) == 3 and all(
                b.rps > 0 and b.requests_total >= 20 for b in snap.backends
            )

        await eventually(rates)
        snap = await control.snapshot()
        assert snap.source == "prometheus:haproxy"
        assert [b.name for b in snap.backends] == ["be_app/s1", "be_app/s2", "be_app/s3"]
        assert snap.windows.rate_s == 3.0
        for b in snap.backends:
            assert b.health is not None
            assert b.health.state == "up"
            assert b.requests_total >= 20
            assert b.error_ratio == 0
            assert b.p99_ms is None  # HAProxy exports averages, no histogram
        assert "fe_main" in [f.name for f in snap.frontends]
        assert Snapshot.from_json(snap.to_json()) == snap
        with pytest.raises(ReadOnly, match="only watches"):
            await control.act(SetAdmin(backend="be_app/s1", state="draining"))

        haproxy.command("set server be_app/s2 state maint")

        async def maint() -> bool:
            await control.snapshot()
            return any(isinstance(e, HealthChanged) for e in await control.events())

        await eventually(maint)
        event = next(e for e in await control.events() if isinstance(e, HealthChanged))
        assert (event.backend, event.old, event.new) == ("be_app/s2", "up", "down")

        # each figure is its own query: the one read after the event may still be a scrape behind
        async def disabled() -> bool:
            return (await control.snapshot()).backend("be_app/s2").admin == "disabled"

        await eventually(disabled)
    finally:
        haproxy.reset()
        await control.aclose()


async def test_lbtui_preset_has_percentiles(prometheus: PrometheusRig) -> None:
    control = PrometheusControl(prometheus.url, fast("lbtui"))
    try:
        await asyncio.to_thread(lambda: [prometheus.lbtui.get() for _ in range(60)])

        async def filled() -> bool:
            snap = await control.snapshot()
            return len(snap.backends) == 3 and all(b.p99_ms is not None for b in snap.backends)

        await eventually(filled)
        snap = await control.snapshot()
        assert [b.name for b in snap.backends] == ["s1", "s2", "s3"]
        for b in snap.backends:
            assert b.rps > 0
            assert b.p50_ms is not None
            assert b.p99_ms is not None
            assert 0 < b.p50_ms <= b.p99_ms
            assert b.weight_configured == 1
    finally:
        await control.aclose()


async def test_a_bad_query_file_and_a_bad_query(prometheus: PrometheusRig, tmp_path) -> None:
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text('p95_ms = "x"\n')
    with pytest.raises(UsageError, match="p95_ms: unknown key"):
        load_preset("haproxy", bad_key)
    typo = tmp_path / "typo.toml"
    typo.write_text(
        'rps = "sum by (proxy, server) (rate(haproxy_server_http_responses_total[3s]"\n'
    )
    control = PrometheusControl(prometheus.url, load_preset("haproxy", typo))
    try:
        with pytest.raises(Unavailable, match="refused the 'rps' query"):
            await control.snapshot()
    finally:
        await control.aclose()


def test_chaos_refuses_a_timeline_on_a_watching_source(
    prometheus: PrometheusRig, haproxy: HaproxyRig, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    from lbtui.cli import main

    scenario = Path(__file__).resolve().parents[2] / "demo/scenarios/haproxy/drain-and-weight.toml"
    argv = ["chaos", "run", str(scenario), "--attach", prometheus.url]
    code = main([*argv, "--target", haproxy.frontend, "-q"])
    assert code == 2
    assert "only watches" in capsys.readouterr().err
    assert haproxy.server_status("s1") == "UP"
