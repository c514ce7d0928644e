"""PromQL presets: for each balancer whose metrics a Prometheus scrapes, the few queries that
build the console's rows. A preset is a small table, not code: the labels that name a row,
the window its rates are over, and one instant query per figure.

Figures (every query optional; a figure without one reads ``—`` or 0):

- ``rps``: requests per second per row; ``error_rps``: failed ones (5xx, connect errors);
  the error share is ``error_rps / rps``.
- ``p50_ms``, ``p99_ms``: percentiles from a histogram (``histogram_quantile``), in ms. HAProxy's
  exporter has no histograms (only averages), so its preset leaves them out.
- ``up``: 1 when the row takes traffic, 0 when not; a flip is an event.
- ``status``: a series per row whose ``state`` label is its status word (HAProxy's
  ``haproxy_server_status == 1``): ``MAINT`` and ``DRAIN`` read as the admin state.
- ``in_flight``, ``weight``, ``requests_total``: gauges and the running total.
- ``frontend_rps``, ``frontend_connections``: the frontends panel, rows named by
  ``frontend_labels``.

``$window`` in a query is the preset's rate window (``30s`` by default: Prometheus needs a few
scrapes in a ``rate``). A ``--query FILE.toml`` sets any of these keys over the preset's, plus
``labels``, ``frontend_labels`` and ``window``; an unknown key is an error naming the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from lbtui.errors import UsageError
from lbtui.units import parse_duration

FIGURES = (
    "rps",
    "error_rps",
    "p50_ms",
    "p99_ms",
    "up",
    "status",
    "in_flight",
    "weight",
    "requests_total",
    "frontend_rps",
    "frontend_connections",
)


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    labels: tuple[str, ...]
    """Labels whose values, joined by ``/``, name a row (``proxy``, ``server``)."""
    queries: dict[str, str]
    frontend_labels: tuple[str, ...] = ()
    window: str = "30s"
    window_s: float = field(default=30.0)

    def query(self, figure: str) -> str | None:
        q = self.queries.get(figure)
        return None if q is None else q.replace("$window", self.window)


def _by(labels: str, expr: str) -> str:
    return f"sum by ({labels}) ({expr})"


HAPROXY = Preset(
    "haproxy",
    ("proxy", "server"),
    {
        "rps": _by("proxy, server", "rate(haproxy_server_http_responses_total[$window])"),
        "error_rps": _by(
            "proxy, server", 'rate(haproxy_server_http_responses_total{code="5xx"}[$window])'
        )
        + " + "
        + _by("proxy, server", "rate(haproxy_server_connection_errors_total[$window])"),
        "up": 'max by (proxy, server) (haproxy_server_status{state=~"UP|DRAIN|NOLB"})',
        "status": "max by (proxy, server, state) (haproxy_server_status) == 1",
        "in_flight": _by("proxy, server", "haproxy_server_current_sessions"),
        "weight": _by("proxy, server", "haproxy_server_weight"),
        "requests_total": _by("proxy, server", "haproxy_server_http_responses_total"),
        "frontend_rps": _by("proxy", "rate(haproxy_frontend_http_requests_total[$window])"),
        "frontend_connections": _by("proxy", "haproxy_frontend_current_sessions"),
    },
    frontend_labels=("proxy",),
)

ENVOY = Preset(
    "envoy",
    ("envoy_cluster_name",),
    {
        "rps": _by("envoy_cluster_name", "rate(envoy_cluster_upstream_rq_total[$window])"),
        "error_rps": _by(
            "envoy_cluster_name",
            'rate(envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}[$window])',
        ),
        "p50_ms": "histogram_quantile(0.5, "
        + _by("envoy_cluster_name, le", "rate(envoy_cluster_upstream_rq_time_bucket[$window])")
        + ")",
        "p99_ms": "histogram_quantile(0.99, "
        + _by("envoy_cluster_name, le", "rate(envoy_cluster_upstream_rq_time_bucket[$window])")
        + ")",
        "up": "clamp_max(" + _by("envoy_cluster_name", "envoy_cluster_membership_healthy") + ", 1)",
        "in_flight": _by("envoy_cluster_name", "envoy_cluster_upstream_rq_active"),
        "requests_total": _by("envoy_cluster_name", "envoy_cluster_upstream_rq_total"),
        "frontend_rps": _by(
            "envoy_http_conn_manager_prefix", "rate(envoy_http_downstream_rq_total[$window])"
        ),
        "frontend_connections": _by(
            "envoy_http_conn_manager_prefix", "envoy_http_downstream_cx_active"
        ),
    },
    frontend_labels=("envoy_http_conn_manager_prefix",),
)

TRAEFIK = Preset(
    "traefik",
    ("service",),
    {
        "rps": _by("service", "rate(traefik_service_requests_total[$window])"),
        "error_rps": _by("service", 'rate(traefik_service_requests_total{code=~"5.."}[$window])'),
        "p50_ms": "1000 * histogram_quantile(0.5, "
        + _by("service, le", "rate(traefik_service_request_duration_seconds_bucket[$window])")
        + ")",
        "p99_ms": "1000 * histogram_quantile(0.99, "
        + _by("service, le", "rate(traefik_service_request_duration_seconds_bucket[$window])")
        + ")",
        "up": "max by (service) (traefik_service_server_up)",
        "in_flight": _by("service", "traefik_service_open_connections"),
        "requests_total": _by("service", "traefik_service_requests_total"),
        "frontend_rps": _by("entrypoint", "rate(traefik_entrypoint_requests_total[$window])"),
        "frontend_connections": _by("entrypoint", "traefik_entrypoint_open_connections"),
    },
    frontend_labels=("entrypoint",),
)

LBTUI = Preset(
    "lbtui",
    ("backend",),
    {
        "rps": _by("backend", "rate(lbtui_requests_total[$window])"),
        "error_rps": _by("backend", 'rate(lbtui_requests_total{code_class="5xx"}[$window])'),
        "p50_ms": "1000 * histogram_quantile(0.5, "
        + _by("backend, le", "rate(lbtui_request_duration_seconds_bucket[$window])")
        + ")",
        "p99_ms": "1000 * histogram_quantile(0.99, "
        + _by("backend, le", "rate(lbtui_request_duration_seconds_bucket[$window])")
        + ")",
        "up": "max by (backend) (lbtui_backend_up)",
        "in_flight": _by("backend", "lbtui_backend_in_flight"),
        "weight": _by("backend", "lbtui_backend_weight"),
        "requests_total": _by("backend", "lbtui_requests_total"),
    },
)

PRESETS: dict[str, Preset] = {p.name: p for p in (HAPROXY, ENVOY, TRAEFIK, LBTUI)}


def load_preset(name: str, query_file: str | Path | None = None) -> Preset:
    """The named preset, with a ``--query`` file's keys over it (``UsageError`` naming the
    file and key when one is wrong)."""
    preset = PRESETS.get(name)
    if preset is None:
        raise UsageError(f"--preset: expected one of {', '.join(PRESETS)}, got {name!r}")
    if query_file is None:
        return preset
    path = Path(query_file)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--query {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--query {path}: not TOML: {exc}") from None
    queries = dict(preset.queries)
    changes: dict[str, object] = {}
    for key, value in data.items():
        if key in FIGURES:
            if not isinstance(value, str) or not value.strip():
                raise UsageError(f"{path}: {key}: expected a PromQL query string")
            queries[key] = value
        elif key in ("labels", "frontend_labels"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UsageError(f"{path}: {key}: expected a list of label names")
            changes[key] = tuple(value)
        elif key == "window":
            try:
                seconds = parse_duration(str(value))
            except ValueError as exc:
                raise UsageError(f"{path}: window: {exc}") from None
            changes.update(window=str(value), window_s=seconds)
        else:
            raise UsageError(
                f"{path}: {key}: unknown key; expected one of {', '.join(FIGURES)}, "
                "labels, frontend_labels, window"
            )
    return replace(preset, queries=queries, **changes)  # type: ignore[arg-type]
