"""The edge rules both listeners share (``balancer/exchange.py``), as pure functions."""

from __future__ import annotations

import pytest

from lbtui.balancer.exchange import remove_dot_segments, split_absolute, valid_host


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/raw/../x", "/x"),
        ("/a/./b/../c", "/a/c"),
        ("/../../x", "/x"),
        ("/a/..", "/"),
        ("/a/b/.", "/a/b/"),
        ("/a//b/../c", "/a//c"),
    ],
)
def test_dot_segments_are_removed_as_rfc_3986_says(path, expected):
    assert remove_dot_segments(path) == expected


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"example.com", True),
        (b"example.com:8080", True),
        (b"[::1]:9000", True),
        (b"", False),
        (b"a b", False),
        (b"a/b", False),
        (b"a\\b", False),
        (b".example.com", False),
        (b"a@b", False),
    ],
)
def test_host_values(value, ok):
    assert valid_host(value) is ok


def test_absolute_form_gives_its_authority_and_origin_form():
    assert split_absolute("http://h.example:81/p?q=1") == (b"h.example:81", "/p?q=1")
    assert split_absolute("HTTPS://h.example") == (b"h.example", "/")
    assert split_absolute("http://h.example?x") == (b"h.example", "/?x")
    for bad in ("ftp://h/", "http://u:p@h/", "http:///p", "h.example/p"):
        with pytest.raises(ValueError):
            split_absolute(bad)
