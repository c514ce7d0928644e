"""HAProxy's three reads (``show stat``, ``show servers state``, ``show info``) as the console's
``Snapshot``, and the change between two reads as events. Pure: rows and ``now`` come in.

What maps where (hatop shows the same columns; DESIGN.md, "foreign sources"):

- A row is a server, named ``backend/server`` as the Runtime API names it (``set server
  be_app/s1 …``); rows come grouped by HAProxy backend, in the configuration's order, and each
  HAProxy backend is a pool with its own L and M.
- ``admin`` comes from the admin bits of ``show servers state`` (maint → ``disabled``, drain →
  ``draining``), ``health`` from the status and the last check (``L4CON``, its description,
  output and duration) for checked servers; the status word itself, with its since-time, the
  queue and the error rates are in ``BackendView.server``.
- ``weight_configured`` is HAProxy's user weight (what ``set server … weight`` sets),
  ``weight_effective`` its weight when the server takes traffic, else 0.
- In flight is ``scur`` (current sessions); connections are the idle and used connections to
  the server. Rates are lbtui's own over the "now" window, from the totals (``counters``).
- What HAProxy has no figure for stays empty: no percentiles (its ``rtime``/``ttime`` are
  averages over the last 1,024 requests, shown as averages in the detail), no breaker, no
  fault, no cap (M is 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lbtui.control.model import (
    ACTION_KINDS,
    AdminChanged,
    AdminState,
    BackendAdded,
    BackendRemoved,
    BackendView,
    BalancerTotals,
    Event,
    FrontendView,
    HealthChanged,
    HealthView,
    LimitsView,
    PoolView,
    ServerView,
    Snapshot,
    WeightChanged,
)
from lbtui.core.balance import Member, pool_imbalance
from lbtui.sources.counters import CounterRates
from lbtui.sources.runtime_api import Row, integer, number

HAPROXY_ORIGIN = "haproxy"
"""The origin of a change this console saw but did not make (another operator, HAProxy's own
checks)."""

MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
"""``srv_admin_state``: forced, inherited, configured, resolution and hostname maintenance."""
DRAIN_BITS = 0x08 | 0x10
"""``srv_admin_state``: forced and inherited drain."""

SERVER_COUNTERS = ("requests", "econ", "eresp", "5xx", "wretr", "chkfail", "bytes", "answered")
FRONTEND_COUNTERS = ("requests", "connections", "5xx", "denied")
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

UNAVAILABLE: dict[str, str] = {
    "set_fault": "HAProxy cannot inject faults (delay, abort, reset, hang): its Runtime API "
    "sets a server's state and weight only",
    "clear_fault": "HAProxy has no faults to clear",
    "force_breaker": "HAProxy has no circuit breaker (its health checks and observe/on-error "
    "are configured, not forced)",
    "set_algorithm": "HAProxy's balance algorithm is set in its configuration, not at run time",
    "set_limits": "HAProxy's rate limits live in its configuration (stick tables, maxconn)",
    "add_backend": "add servers in HAProxy's configuration (dynamic servers are not mapped)",
    "remove_backend": "remove servers in HAProxy's configuration",
    "fleet_kill": "the servers are not lbtui fleet processes: k puts one in MAINT instead",
    "fleet_restart": "the servers are not lbtui fleet processes",
    "fleet_knobs": "the servers are not lbtui fleet processes",
    "set_forward": "HAProxy's routing (use_backend rules) lives in its configuration",
}
"""Why HAProxy cannot carry out each action the console has but the Runtime API has no verb
for (``Snapshot.unavailable``): the console says so instead of opening a form."""
SUPPORTED = frozenset({"set_admin", "set_weight", "announce"})


def unavailable() -> dict[str, str]:
    """Every action kind but drain/maint/ready, weight and announce, with why (an action
    added to lbtui later reads as having no Runtime API verb until it gets a reason here)."""
    return {
        kind: UNAVAILABLE.get(kind, f"HAProxy's Runtime API has no verb for {kind}")
        for kind in ACTION_KINDS
        if kind not in SUPPORTED
    }


@dataclass(frozen=True, slots=True)
class Seen:
    """What one read said of a server: the figures whose change is an event."""

    status: str
    admin: AdminState
    up: bool
    weight: float
    check: str
    """The last check in words (``L4CON Connection refused``)."""


def admin_state(state_row: Row | None, status: str) -> AdminState:
    if state_row is not None and "srv_admin_state" in state_row:
        try:
            bits = int(state_row["srv_admin_state"])
        except ValueError:
            bits = 0
        if bits & MAINT_BITS:
            return "disabled"
        if bits & DRAIN_BITS:
            return "draining"
        return "active"
    word = status.split(" ")[0]
    return {"MAINT": "disabled", "DRAIN": "draining"}.get(word, "active")  # type: ignore[return-value]


def is_up(row: Row) -> bool:
    """Whether HAProxy counts the server up (``UP``, ``UP 1/3`` going down, ``DRAIN``,
    ``NOLB``), not down or in maintenance."""
    word = row.get("status", "").split(" ")[0]
    return word in ("UP", "DRAIN", "NOLB", "no")  # "no check": never checked, taken as up


def check_words(row: Row) -> str:
    """``L4CON Connection refused``, ``L7STS HTTP status 503``, or ``L4OK``; empty unchecked."""
    code = row.get("check_status", "").lstrip("* ")
    detail = row.get("last_chk", "")
    return f"{code} {detail}".strip()


def server_counters(row: Row) -> dict[str, float]:
    total = number(row, "req_tot", number(row, "stot"))
    answered = sum(number(row, f"hrsp_{c}") for c in (*CODE_CLASSES, "other"))
    return {
        "requests": total,
        "econ": number(row, "econ"),
        "eresp": number(row, "eresp"),
        "5xx": number(row, "hrsp_5xx"),
        "wretr": number(row, "wretr"),
        "chkfail": number(row, "chkfail"),
        "bytes": number(row, "bin") + number(row, "bout"),
        "answered": answered,
    }


def frontend_counters(row: Row) -> dict[str, float]:
    return {
        "requests": number(row, "req_tot", number(row, "stot")),
        "connections": number(row, "conn_tot", number(row, "stot")),
        "5xx": number(row, "hrsp_5xx"),
        "denied": number(row, "dreq") + number(row, "ereq"),
    }


def server_name(row: Row) -> str:
    return f"{row.get('pxname', '')}/{row.get('svname', '')}"


def record(rates: CounterRates, now: float, stat: Sequence[Row]) -> None:
    """Sample every server's and frontend's totals, and the balancer's, at ``now``."""
    total: dict[str, float] = dict.fromkeys(("requests", "5xx", *CODE_CLASSES), 0.0)
    keep = {"*"}
    for row in stat:
        sv = row.get("svname", "")
        if sv == "FRONTEND":
            key = "frontend " + row.get("pxname", "")
            rates.add(now, key, frontend_counters(row))
            keep.add(key)
            total["requests"] += number(row, "req_tot", number(row, "stot"))
            for c in CODE_CLASSES:
                total[c] += number(row, f"hrsp_{c}")
        elif sv != "BACKEND":
            key = server_name(row)
            rates.add(now, key, server_counters(row))
            keep.add(key)
    rates.add(now, "*", total)
    rates.forget(keep)


def _server_view(
    row: Row, state_row: Row | None, rates: CounterRates, now: float
) -> tuple[BackendView, Seen]:
    name = server_name(row)
    status = row.get("status", "")
    admin = admin_state(state_row, status)
    up = is_up(row) and admin != "disabled"
    since = now - number(row, "lastchg", 0.0)
    checked = "check_status" in row or "check_desc" in row
    check = check_words(row)
    detail = ": ".join(x for x in (row.get("check_desc", ""), row.get("last_chk", "")) if x)
    health = None
    if checked:
        code = row.get("check_status", "").lstrip("* ")
        health = HealthView(
            state="up" if up else "down",
            since=since,
            reason=f"{code} {detail}".strip() or status,
            consecutive_successes=0,
            consecutive_failures=0,
            last_check_ok=code.endswith(("OK", "OKC", "OKD")) if code else None,
            last_check_detail=check,
            slow_start_remaining_s=None,
            slow_start_factor=None,
        )
    r = rates.rates(name, SERVER_COUNTERS)
    weight = number(row, "uweight", number(row, "weight"))
    if state_row is not None and "srv_uweight" in state_row:
        weight = number(state_row, "srv_uweight", weight)
    takes = up and admin == "active" and not status.startswith("NOLB")
    effective = number(row, "weight", weight) if takes else 0.0
    ended = r["answered"] + r["econ"] + r["eresp"]
    failed = r["5xx"] + r["econ"] + r["eresp"]
    responses = {c: integer(row, f"hrsp_{c}") for c in CODE_CLASSES}
    averages: dict[str, float] = {
        k: number(row, k) for k in ("qtime", "ctime", "rtime", "ttime") if k in row
    }
    server = ServerView(
        group=row.get("pxname", ""),
        status=status,
        since=since,
        check_status=row.get("check_status", "").lstrip("* ") or None,
        check_detail=detail,
        check_duration_ms=number(row, "check_duration") if "check_duration" in row else None,
        queue=integer(row, "qcur"),
        error_rates={
            "connect": r["econ"],
            "response": r["eresp"],
            "5xx": r["5xx"],
            "retry": r["wretr"],
            "check": r["chkfail"],
        },
        average_ms=averages,
    )
    view = BackendView(
        name=name,
        url=row.get("addr", ""),
        zone=None,
        admin=admin,
        admin_since=since if admin != "active" else 0.0,
        health=health,
        ejected=False,
        ejected_until=None,
        ejection_reason="HAProxy does not eject (its checks mark servers down)",
        times_ejected=0,
        breaker=None,
        weight_configured=weight,
        weight_effective=effective,
        max_rps=None,
        in_flight=integer(row, "scur"),
        open_connections=integer(row, "idle_conn_cur") + integer(row, "used_conn_cur"),
        connections_source="connector",
        rps=r["requests"],
        rps_series=rates.series(name),
        p50_ms=None,
        p90_ms=None,
        p99_ms=None,
        p999_ms=None,
        error_ratio=min(1.0, failed / ended) if ended > 0 else 0.0,
        bytes_per_s=r["bytes"],
        requests_total=integer(row, "req_tot", integer(row, "stot")),
        responses_total=responses,
        failures_total={"connect": integer(row, "econ"), "response": integer(row, "eresp")},
        retries_total=integer(row, "wretr"),
        bytes_in_total=integer(row, "bin"),
        bytes_out_total=integer(row, "bout"),
        fault=None,
        process=None,
        score=None,
        demand_rps=r["requests"],
        eligible=takes and effective > 0,
        server=server,
    )
    return view, Seen(status, admin, up, weight, check)


def _frontend(row: Row, rates: CounterRates) -> FrontendView:
    key = "frontend " + row.get("pxname", "")
    r = rates.rates(key, FRONTEND_COUNTERS)
    bad = r["5xx"] + r["denied"]
    return FrontendView(
        name=row.get("pxname", ""),
        status=row.get("status", ""),
        rps=r["requests"],
        connections=integer(row, "scur"),
        connection_rate=r["connections"],
        error_ratio=min(1.0, bad / r["requests"]) if r["requests"] > 0 else 0.0,
        requests_total=integer(row, "req_tot", integer(row, "stot")),
    )


def build(
    stat: Sequence[Row],
    states: Sequence[Row],
    rates: CounterRates,
    *,
    now: float,
    wall: float,
    last_event_id: int,
) -> tuple[Snapshot, dict[str, Seen]]:
    """The snapshot of one read (call :func:`record` with the same rows first), and what it
    says of each server for :func:`changes`."""
    by_server = {f"{s.get('be_name')}/{s.get('srv_name')}": s for s in states}
    backends: list[BackendView] = []
    seen: dict[str, Seen] = {}
    frontends: list[FrontendView] = []
    algos: dict[str, str] = {}
    retries = 0
    for row in stat:
        sv = row.get("svname", "")
        if sv == "FRONTEND":
            frontends.append(_frontend(row, rates))
        elif sv == "BACKEND":
            algos[row.get("pxname", "")] = row.get("algo", "")
            retries += integer(row, "wretr")
        else:
            view, s = _server_view(row, by_server.get(server_name(row)), rates, now)
            backends.append(view)
            seen[view.name] = s
    pools = _pools(backends)
    t = rates.rates("*", ("requests", "5xx", *CODE_CLASSES))
    answered = sum(t[c] for c in CODE_CLASSES)
    totals = BalancerTotals(
        rps=t["requests"],
        in_flight=sum(f.connections for f in frontends),
        code_rps={c: t[c] for c in CODE_CLASSES},
        rate_limited_rps=0.0,
        fallback_rps=0.0,
        retries_rps=0.0,
        success_ratio=1.0 - t["5xx"] / answered if answered > 0 else 1.0,
        requests_total=sum(f.requests_total for f in frontends),
        responses_total=_sum_codes(stat),
        rate_limited_total={},
        fallback_total={},
        retries_total=retries,
        flags_total={},
        rps_series=rates.series("*"),
    )
    distinct = sorted(set(algos.values()) - {""})
    snap = Snapshot(
        at=now,
        wall=wall,
        algorithm=", ".join(distinct) or "—",
        totals=totals,
        limits=LimitsView({}, None, 0, 0, 0, 0, 0, 0, 0, 0),
        imbalance=sum(p.imbalance for p in pools),
        overload=0,
        panic=False,
        backends=backends,
        last_event_id=last_event_id,
        pools=pools,
        source="haproxy",
        frontends=frontends,
        unavailable=unavailable(),
    )
    return snap, seen


def _sum_codes(stat: Sequence[Row]) -> dict[str, int]:
    out = dict.fromkeys(CODE_CLASSES, 0)
    for row in stat:
        if row.get("svname") == "FRONTEND":
            for c in CODE_CLASSES:
                out[c] += integer(row, f"hrsp_{c}")
    return out


def _pools(backends: Sequence[BackendView]) -> list[PoolView]:
    groups: dict[str, list[BackendView]] = {}
    for b in backends:
        groups.setdefault(b.server.group if b.server else "", []).append(b)
    pools: list[PoolView] = []
    for name, members in groups.items():
        eligible = [b for b in members if b.eligible]
        figures = [Member(b.rps, b.weight_effective, b.eligible, b.demand_rps) for b in members]
        pools.append(
            PoolView(
                name=name,
                route=None,
                backends=[b.name for b in members],
                eligible=[b.name for b in eligible],
                panic=False,
                rps=sum(b.rps for b in eligible),
                imbalance=pool_imbalance(figures),
                overload=0,
            )
        )
    return pools


def changes(before: Mapping[str, Seen], after: Mapping[str, Seen]) -> list[Event]:
    """The events between two reads (unstamped: the ring gives ids and times). A change this
    console made itself was already put on the timeline by ``act``, which updates ``before``
    so that it does not come twice."""
    out: list[Event] = []
    for name, new in after.items():
        old = before.get(name)
        if old is None:
            out.append(
                BackendAdded(backend=name, message=f"{new.status}: new in HAProxy's servers")
            )
            continue
        if old.up != new.up and new.admin != "disabled" and old.admin != "disabled":
            why = new.check or "no check result"
            out.append(
                HealthChanged(
                    backend=name,
                    old="up" if old.up else "down",
                    new="up" if new.up else "down",
                    message=f"{old.status} → {new.status}: {why}",
                    origin=HAPROXY_ORIGIN,
                )
            )
        if old.admin != new.admin:
            out.append(
                AdminChanged(
                    backend=name,
                    old=old.admin,
                    new=new.admin,
                    message=f"{old.status} → {new.status} (set outside this console)",
                    origin=HAPROXY_ORIGIN,
                )
            )
        if old.weight != new.weight:
            out.append(
                WeightChanged(
                    backend=name,
                    old=old.weight,
                    new=new.weight,
                    message=f"weight {old.weight:g} → {new.weight:g} (set outside this console)",
                    origin=HAPROXY_ORIGIN,
                )
            )
    for name in before:
        if name not in after:
            out.append(BackendRemoved(backend=name, message="gone from HAProxy's servers"))
    return out
