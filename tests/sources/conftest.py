"""Fixtures of the source tests: one real HAProxy per test module (``rig.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sources import prom_rig
from tests.sources.prom_rig import LbtuiRig, PrometheusRig
from tests.sources.rig import HAPROXY, SKIP_REASON, HaproxyRig, start_haproxy


@pytest.fixture(scope="module")
def haproxy_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaproxyRig]:
    if HAPROXY is None:
        pytest.skip(SKIP_REASON)
    # a short folder: a Unix socket path is limited to 107 bytes
    folder = Path(tmp_path_factory.mktemp("hx"))
    rig = start_haproxy(folder)
    try:
        yield rig
    finally:
        rig.stop()


@pytest.fixture
def haproxy(haproxy_rig: HaproxyRig) -> Iterator[HaproxyRig]:
    """The module's HAProxy, every server ready at weight 1 before and after the test."""
    haproxy_rig.reset()
    yield haproxy_rig
    haproxy_rig.reset()


@pytest.fixture(scope="module")
def lbtui_serve(haproxy_rig: HaproxyRig) -> Iterator[LbtuiRig]:
    """An lbtui balancer (a process) in front of the same origins as the module's HAProxy."""
    rig = LbtuiRig(haproxy_rig)
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()


@pytest.fixture(scope="module")
def prometheus(
    haproxy_rig: HaproxyRig, lbtui_serve: LbtuiRig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusRig]:
    """A Prometheus scraping the module's HAProxy and lbtui balancer every 500 ms."""
    if prom_rig.PROMETHEUS is None:
        pytest.skip(prom_rig.SKIP_REASON)
    rig = PrometheusRig(Path(tmp_path_factory.mktemp("prom")), haproxy_rig, lbtui_serve)
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()
