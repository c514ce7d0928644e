"""HTTP at the edge as RFC 9112 / 9110 and nginx have it (issue #19, finding 9), raw sockets,
on both listeners."""

from __future__ import annotations

import json

import pytest

from tests.integration.hardening import (
    either_fixture,  # noqa: F401  (the ``either`` fixture)
    exchange,
    header,
    status,
)


def sent(answer: bytes) -> dict[str, object]:
    """What the test backend says it received."""
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    ],
    ids=["missing", "twice", "space", "slash", "empty", "twice-1.0"],
)
async def test_a_bad_host_is_400_and_never_forwarded(backends, either, head):
    (b,) = await backends(1)
    lb = await either([b.url])
    got = await exchange(lb.port, head)
    assert status(got) == 400
    assert b.hits == 0


async def test_http_10_needs_no_host(backends, either):
    (b,) = await backends(1)
    lb = await either([b.url])
    assert status(await exchange(lb.port, b"GET / HTTP/1.0\r\n\r\n")) == 200


async def test_connect_is_405_with_allow_and_never_forwarded(backends, either):
    (b,) = await backends(1)
    lb = await either([b.url])
    got = await exchange(lb.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert status(got) == 405
    assert "GET" in (header(got, "Allow") or "")
    assert b.hits == 0


async def test_absolute_form_takes_its_authority_as_host(backends, either):
    (b,) = await backends(1)
    lb = await either([b.url])
    got = await exchange(
        lb.port,
        b"GET http://example.com:8080/abs?q=1 HTTP/1.1\r\nHost: client.example\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status(got) == 200
    seen = sent(got)
    assert seen["raw_path"] == "/abs?q=1"
    hosts = [v for k, v in seen["headers"] if k.lower() == "host"]  # type: ignore[attr-defined]
    assert hosts == ["example.com:8080"]


async def test_absolute_form_with_userinfo_is_refused(backends, either):
    (b,) = await backends(1)
    lb = await either([b.url])
    got = await exchange(lb.port, b"GET http://u:p@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(got) == 400
    assert b.hits == 0


async def test_routes_match_the_normalised_path_and_forward_the_raw_one(backends, either):
    raw_pool, other = await backends(2)
    lb = await either(
        [raw_pool.url, other.url],
        routes=[{"path_prefix": "/raw", "backends": ["b1"]}, {"backends": ["b2"]}],
    )
    for target in (b"/raw/../x", b"/raw/%2e%2e/x", b"/raw/./../x"):
        got = await exchange(
            lb.port, b"GET " + target + b" HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
        )
        assert status(got) == 200
        seen = sent(got)
        assert seen["backend"] == "b2", target
        assert seen["raw_path"] == target.decode()
    got = await exchange(lb.port, b"GET /raw/./y HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
    assert sent(got)["backend"] == "b1"


@pytest.mark.parametrize("head", [b"GET /\r\n\r\n", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"])
async def test_http_09_and_2_in_an_http1_head_are_refused(backends, either, head):
    (b,) = await backends(1)
    lb = await either([b.url])
    got = await exchange(lb.port, head)
    assert not got.startswith(b"HTTP/0.9")
    assert status(got) in (400, 505, None)
    assert b.hits == 0
