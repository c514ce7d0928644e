"""The Runtime API's answers parsed, its addresses checked, and HAProxy's words shown: pure."""

from __future__ import annotations

import pytest

from lbtui.control.model import BackendView
from lbtui.errors import UsageError
from lbtui.sources.counters import CounterRates
from lbtui.sources.haproxy_view import build, changes, record
from lbtui.sources.runtime_api import SocketAddress, parse_info, parse_servers_state, parse_stat
from lbtui.tui.foreign import check_cell, queue_cell, short_age, status_cell

HEADER = (
    "# pxname,svname,qcur,scur,status,weight,lastchg,check_status,check_duration,hrsp_5xx,"
    "req_tot,econ,eresp,last_chk,check_desc,addr,uweight,algo"
)
STAT = (
    HEADER
    + """
fe,FRONTEND,,3,OPEN,,,,,0,40,,,,,,,
be,s1,0,1,UP,2,30,L7OK,1,0,20,0,0,,Layer7 check passed,127.0.0.1:1,2,
be,s2,4,0,DOWN,1,5,L4CON,0,0,20,3,0,Connection refused,Layer4 connection problem,127.0.0.1:2,1,
be,BACKEND,0,1,UP,3,30,,,0,40,0,0,,,,,roundrobin
"""
)
STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight
3 be 1 s1 127.0.0.1 2 8 2 1
3 be 2 s2 127.0.0.1 0 0 1 1
"""


def test_parsers() -> None:
    rows = parse_stat(STAT)
    assert [r["svname"] for r in rows] == ["FRONTEND", "s1", "s2", "BACKEND"]
    assert "qcur" not in rows[0]  # empty fields are left out
    state = parse_servers_state(STATE)
    assert state[0]["srv_admin_state"] == "8"
    assert parse_info("Name: HAProxy\nPid: 42\n")["Pid"] == "42"


def test_snapshot_and_changes_from_two_reads() -> None:
    rates = CounterRates()
    stat, state = parse_stat(STAT), parse_servers_state(STATE)
    record(rates, 100.0, stat)
    snap, seen = build(stat, state, rates, now=100.0, wall=1e9, last_event_id=0)
    s1, s2 = snap.backends
    assert (s1.name, s1.admin, s1.weight_configured, s1.weight_effective) == (
        "be/s1",
        "draining",
        2,
        0,
    )
    assert s1.server is not None
    assert s1.server.since == 70.0
    assert (s2.admin, s2.health.state if s2.health else None) == ("active", "down")
    assert s2.server is not None
    assert s2.server.queue == 4
    assert snap.frontends[0].connections == 3
    assert snap.algorithm == "roundrobin"
    up = stat[2] | {"status": "UP", "check_status": "L7OK", "last_chk": ""}
    record(rates, 101.0, [stat[0], stat[1], up, stat[3]])
    _, after = build(
        [stat[0], stat[1], up, stat[3]], state, rates, now=101, wall=1e9, last_event_id=0
    )
    (event,) = changes(seen, after)
    assert (event.backend, event.data["old"], event.data["new"]) == ("be/s2", "down", "up")


def test_cells_say_haproxys_words() -> None:
    rates = CounterRates()
    stat = parse_stat(STAT)
    record(rates, 100.0, stat)
    snap, _ = build(stat, parse_servers_state(STATE), rates, now=100.0, wall=1e9, last_event_id=0)
    s2: BackendView = snap.backends[1]
    assert "".join(t for t, _ in status_cell(s2, snap.at)) == "DOWN 5s"
    assert "".join(t for t, _ in check_cell(s2)) == "L4CON 0ms"
    assert "".join(t for t, _ in queue_cell(s2)) == "q 4"
    assert [short_age(s) for s in (5, 125, 7300, 90000)] == ["5s", "2m", "2h", "1d"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("unix:///run/haproxy/admin.sock", "unix:///run/haproxy/admin.sock"),
        ("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9999"),
    ],
)
def test_addresses(url: str, expected: str) -> None:
    assert str(SocketAddress.parse(url)) == expected


@pytest.mark.parametrize("url", ["unix://", "tcp://host", "http://x:1", "tcp://h:notaport"])
def test_bad_addresses_say_the_form(url: str) -> None:
    with pytest.raises(UsageError, match="expected"):
        SocketAddress.parse(url)
