"""A backend view's JSON as a template: the bytes that move with outcomes and time, spliced in.

At 1,000 backends under traffic most views change at every poll, but only in a few figures:
the record's counters and windows (an outcome, or 100 ms passing) and the breaker's count of
calls. Building the whole ``BackendView`` again and serialising it costs ~45 µs a backend;
reading those figures and splicing their JSON between the kept bytes of the rest, a few.

Three holes: the breaker's calls (``calls`` … ``slow_call_rate``, when there is a breaker),
the record's figures (``in_flight`` … ``bytes_out_total``) and its tail (``demand_rps`` …
``latency_samples``). The figures are written by pydantic with the view's own field types, so
the bytes are those of ``dump_json`` of the whole view; ``template`` checks that on the view it
cuts (a view it cannot reproduce gets no template and is always rebuilt whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import TypeAdapter

from lbtui.control.model import BackendView
from lbtui.core.breaker import BreakerStats
from lbtui.core.record import BackendFigures


@dataclass(slots=True)
class Figures:
    """The fields of ``BackendView`` read from the record (and the connection count), in its
    order and with its types."""

    in_flight: int
    open_connections: int
    connections_source: Literal["connector", "in_flight"]
    rps: float
    rps_series: list[float]
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    error_ratio: float
    bytes_per_s: float
    requests_total: int
    responses_total: dict[str, int]
    failures_total: dict[str, int]
    retries_total: int
    bytes_in_total: int
    bytes_out_total: int
    demand_rps: float
    refused_at_cap_total: int
    latency_samples: int


@dataclass(slots=True)
class _Calls:
    """The fields of ``BreakerView`` that move with each outcome, in its order."""

    calls: int
    failures: int
    slow_calls: int
    failure_rate: float | None
    slow_call_rate: float | None


_FIGURES = TypeAdapter(Figures)
_CALLS = TypeAdapter(_Calls)
_SPLIT = b',"demand_rps":'

Template = tuple[bytes, ...]
"""The view's bytes around the holes: three parts (no breaker) or four."""


def figures_of(v: BackendView) -> Figures:
    return Figures(
        v.in_flight,
        v.open_connections,
        v.connections_source,
        v.rps,
        v.rps_series,
        v.p50_ms,
        v.p90_ms,
        v.p99_ms,
        v.p999_ms,
        v.error_ratio,
        v.bytes_per_s,
        v.requests_total,
        v.responses_total,
        v.failures_total,
        v.retries_total,
        v.bytes_in_total,
        v.bytes_out_total,
        v.demand_rps,
        v.refused_at_cap_total,
        v.latency_samples,
    )


def read_figures(
    fig: BackendFigures,
    retries_total: int,
    open_connections: int,
    source: Literal["connector", "in_flight"],
) -> Figures:
    """``Figures`` from a record's ``figures(now)``, as ``snapshot.backend_view`` reads them."""
    return Figures(
        fig.in_flight,
        open_connections,
        source,
        fig.rps,
        fig.rps_series,
        fig.p50_ms,
        fig.p90_ms,
        fig.p99_ms,
        fig.p999_ms,
        fig.error_ratio,
        fig.bytes_per_s,
        fig.requests_total,
        fig.responses_total,
        fig.failures_total,
        retries_total,
        fig.bytes_in_total,
        fig.bytes_out_total,
        fig.demand_rps,
        fig.refused_at_cap_total,
        fig.latency_samples,
    )


def calls_json(s: BreakerStats) -> bytes:
    """The breaker's hole, from its ``stats(now)``."""
    return _CALLS.serializer.to_json(
        _Calls(s.calls, s.failures, s.slow_calls, s.failure_rate, s.slow_call_rate)
    )[1:-1]


def template(data: bytes, figures: Figures) -> tuple[Template, bytes] | None:
    """``data`` (a view's JSON) cut around its holes, and its breaker's hole (``b""`` if it has
    no breaker); ``None`` if splicing ``figures`` back does not give ``data`` again."""
    try:
        w = data.index(b',"weight_configured":')
        i = data.index(b',"in_flight":', w) + 1
        j = data.index(b',"fault":', i)
        k = data.rindex(_SPLIT) + 1
        m = data.rindex(b',"eligible":')
        if data.startswith(b'"breaker":null', data.index(b'"breaker":')):
            parts: Template = (data[:i], data[j:k], data[m:])
            calls = b""
        else:
            a = data.index(b'"calls":', data.index(b'"breaker":{'))
            z = data.index(b',"failure_rate_threshold":', a)
            parts = (data[:a], data[z:i], data[j:k], data[m:])
            calls = data[a:z]
    except ValueError:
        return None
    return (parts, calls) if splice(parts, calls, figures) == data else None


def splice(parts: Template, calls: bytes, figures: Figures) -> bytes:
    """The view's JSON with ``figures`` (and the breaker's ``calls``) in its holes."""
    # the serializer itself, as ``dump_json`` calls it with its defaults: half a µs less a
    # splice, 600 splices a poll at 1,000 backends
    fig = _FIGURES.serializer.to_json(figures)
    k = fig.index(_SPLIT)
    if len(parts) == 3:
        return b"".join((parts[0], fig[1:k], parts[1], fig[k + 1 : -1], parts[2]))
    return b"".join((parts[0], calls, parts[1], fig[1:k], parts[2], fig[k + 1 : -1], parts[3]))
