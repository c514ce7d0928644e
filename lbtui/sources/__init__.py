"""Sources: the balancers a console can attach to, each a ``Control``, chosen by URL scheme.

``http://`` / ``https://``: lbtui's own admin API (``HttpControl``); ``unix://`` / ``tcp://``:
HAProxy's Runtime API (``HaproxyControl``); ``prometheus+http://`` / ``prometheus+https://``:
any balancer whose metrics a Prometheus scrapes, read-only (``PrometheusControl`` with a
preset of PromQL queries). One model comes out of all three (``control/model.py``), so the
console, the chaos runner and the contract suite do not know which one they talk to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbtui.errors import UsageError

if TYPE_CHECKING:
    from lbtui.control.interface import Control

SCHEMES = ("http://", "https://", "unix://", "tcp://", "prometheus+http://", "prometheus+https://")


def source_kind(url: str) -> str:
    """``lbtui``, ``haproxy`` or ``prometheus`` for an attach URL; ``UsageError`` otherwise."""
    if url.startswith(("http://", "https://")):
        return "lbtui"
    if url.startswith(("unix://", "tcp://")):
        return "haproxy"
    if url.startswith(("prometheus+http://", "prometheus+https://")):
        return "prometheus"
    raise UsageError(
        f"expected an http(s):// admin API, a unix:// or tcp:// HAProxy Runtime API, or a "
        f"prometheus+http(s):// server, got {url!r}"
    )


def open_control(
    url: str,
    *,
    token: str | None = None,
    read_only: bool = False,
    origin: str | None = None,
    preset: str | None = None,
    queries: str | None = None,
) -> Control:
    """The ``Control`` for ``url`` by its scheme (checked: ``UsageError`` names what is
    wrong). ``preset`` and ``queries`` (a TOML file) go with Prometheus only."""
    kind = source_kind(url)
    if kind != "prometheus" and (preset or queries):
        raise UsageError("--preset and --query go with a prometheus+http:// URL")
    if kind == "lbtui":
        from lbtui.control.client import HttpControl

        return HttpControl(url, token, read_only=read_only, origin=origin)
    if kind == "haproxy":
        from lbtui.sources.haproxy import HaproxyControl

        return HaproxyControl(url, read_only=read_only, origin=origin)
    from lbtui.sources.presets import load_preset
    from lbtui.sources.prometheus import PrometheusControl

    return PrometheusControl(url, load_preset(preset or "lbtui", queries))
