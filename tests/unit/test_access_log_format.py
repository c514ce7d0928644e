"""The access log's lines, formatted from entries without a balancer or a clock."""

from __future__ import annotations

import json

from lbtui.balancer.accesslog import Formatter, RequestIds
from lbtui.balancer.pool import Backend
from lbtui.config import BackendConfig

OFFSET = 1_800_000_000.0 - 100.0
"""Monotonic 100.0 is 2027-01-15T08:00:00 UTC."""
B1 = Backend.from_config(BackendConfig(name="b1", url="http://127.0.0.1:9001"))


def entry(**changes: object) -> tuple[object, ...]:
    fields: dict[str, object] = {
        "end": 100.0123,
        "client": "127.0.0.1",
        "method": "GET",
        "path": "/a?b=1",
        "status": 200,
        "bytes_in": 0,
        "bytes_out": 64,
        "duration": 0.0012345,
        "backend": B1,
        "upstream": 0.001,
        "retries": 0,
        "flag": None,
        "route": None,
        "request_id": "rid-1",
        "listener": "web",
        "referer": None,
        "agent": None,
    }
    fields.update(changes)
    return tuple(fields.values())


def test_a_json_line_holds_every_field_with_its_type() -> None:
    line = Formatter(OFFSET, False).json_line(entry())  # type: ignore[arg-type]
    assert line.endswith("}\n")
    assert json.loads(line) == {
        "time": "2027-01-15T08:00:00.012Z",
        "client": "127.0.0.1",
        "method": "GET",
        "path": "/a?b=1",
        "status": 200,
        "bytes_in": 0,
        "bytes_out": 64,
        "duration_ms": 1.234,
        "upstream": "b1",
        "upstream_addr": "127.0.0.1:9001",
        "upstream_ms": 1.0,
        "retries": 0,
        "flags": None,
        "route": None,
        "listener": "web",
        "request_id": "rid-1",
    }


def test_what_a_client_sends_is_escaped_and_absent_figures_are_null() -> None:
    f = Formatter(OFFSET, False)
    odd = '/x"y\\z\n\x01é'
    line = f.json_line(
        entry(path=odd, request_id='a"b', backend=None, upstream=-1.0, flag="rate_limited")  # type: ignore[arg-type]
    )
    assert line.count("\n") == 1
    got = json.loads(line)
    assert (got["path"], got["request_id"]) == (odd, 'a"b')
    assert (got["upstream"], got["upstream_addr"], got["upstream_ms"]) == (None, None, None)
    assert got["flags"] == "rate_limited"


def test_the_second_is_formatted_again_when_it_changes() -> None:
    f = Formatter(OFFSET, False)
    first = json.loads(f.json_line(entry(end=100.999)))["time"]  # type: ignore[arg-type]
    second = json.loads(f.json_line(entry(end=101.0005)))["time"]  # type: ignore[arg-type]
    assert (first, second) == ("2027-01-15T08:00:00.999Z", "2027-01-15T08:00:01.000Z")


def test_a_combined_line() -> None:
    f = Formatter(OFFSET, True)
    line = f.combined_line(
        entry(referer="http://r/", agent='curl "8"', flag="retried", retries=1, route="/api")  # type: ignore[arg-type]
    )
    assert line == (
        '127.0.0.1 - - [15/Jan/2027:08:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 64 "http://r/" '
        '"curl \\"8\\"" rt=0.001 upstream=b1 upstream_addr=127.0.0.1:9001 upstream_time=0.001 '
        "retries=1 flags=retried route=/api listener=web request_id=rid-1 "
        "bytes_in=0\n"
    )


def test_request_ids_are_unique_and_carry_the_process_prefix() -> None:
    a, b = RequestIds(), RequestIds()
    ids = [a.next() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids[0].startswith(a.prefix)
    assert a.prefix != b.prefix
    assert ids[0] == a.prefix + "1"
    assert ids[-1] == a.prefix + "1000"
