"""The admin API's request hygiene as pure functions (``control/guard.py``, ``units.py``)."""

from __future__ import annotations

import pytest

from lbtui.control.guard import HostPolicy, content_type_problem, depth, parse_json_object
from lbtui.units import split_authority


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("LocalHost:9901", ("localhost", 9901)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("[::1]:9901", ("::1", 9901)),
        ("lb.internal.:80", ("lb.internal", 80)),
        ("::1", None),
        ("a b:1", None),
        ("user@host:1", None),
        ("host:0", None),
        ("host:99999", None),
        ("host:x", None),
        ("", None),
        ("[::1", None),
    ],
)
def test_split_authority(text: str, parsed: tuple[str, int | None] | None) -> None:
    assert split_authority(text) == parsed


def test_host_policy_own_names_on_own_port_and_listed_names() -> None:
    p = HostPolicy("0.0.0.0", ["lb.internal", "pinned.internal:8000"])
    assert p.admits("127.0.0.1:9901", 9901)
    assert p.admits("[::1]:9901", 9901)
    assert p.admits("localhost", 9901)
    assert not p.admits("localhost:9902", 9901)
    assert not p.admits("0.0.0.0:9901", 9901)  # the wildcard is no address anyone reaches
    assert p.admits("10.1.2.3:9901", 9901, local_ip="10.1.2.3")  # reached at that address
    assert not p.admits("10.1.2.4:9901", 9901, local_ip="10.1.2.3")
    assert p.admits("LB.internal:1234", 9901)
    assert p.admits("pinned.internal:8000", 9901)
    assert not p.admits("pinned.internal:9901", 9901)
    assert not p.admits("evil.example:9901", 9901)
    assert p.host_problem(None, 9901, None) == "a Host header is required"


def test_origin_policy() -> None:
    p = HostPolicy("127.0.0.1")
    assert p.origin_problem(None, 9901, None) is None
    assert p.origin_problem("http://127.0.0.1:9901", 9901, None) is None
    assert p.origin_problem("http://localhost", 9901, None) is not None  # port 80: another site
    assert p.origin_problem("null", 9901, None) is not None
    assert p.origin_problem("http://evil.example:9901", 9901, None) is not None


def test_content_type() -> None:
    assert content_type_problem("POST", True, "application/json") is None
    assert content_type_problem("POST", False, "application/octet-stream") is None
    assert content_type_problem("GET", True, "text/plain") is None
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        assert content_type_problem("PUT", True, kind) is not None


def test_json_bodies() -> None:
    assert parse_json_object(b'{"weight": 2}') == {"weight": 2}
    assert depth({"a": [1, {"b": []}]}) == 4
    for bad, why in [
        (b"[1]", "expected a JSON object"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "Infinity"),
        (b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper"),
        (b"[" * 100_000, "nested deeper"),
        (b"\xff", "UTF-8"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_json_object(bad)
