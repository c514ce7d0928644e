"""HTTP/1 header lines sorted the same way on both sides of the balancer.

The fast listener sorts a client's request lines (``request_reader.py``, ``fast_request.py``)
and the lean upstream a backend's response lines (``response_reader.py``) with one function,
:func:`sort_line`, each through its own table: hop-by-hop names are dropped (RFC 9110 §7.6.1),
the names a side acts on are handed to it, every other line is rendered straight into the
bytes that go on (nothing decoded and encoded again on the way through).
"""

from __future__ import annotations

from typing import Final

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP_RAW = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
"""Hop-by-hop header names (lower case): never forwarded, either way."""
RESPONSE_DROP_RAW = HOP_BY_HOP_RAW | {b"content-length"}
"""Response headers never passed to the client as they are (the length is set anew)."""
PASS: Final = -1
"""``sort_line``'s verdict for a line that simply passes through (it is rendered already)."""
DROP: Final = 0
"""The action of a hop-by-hop line: never forwarded, either way."""


def sort_table(special: dict[bytes, int]) -> dict[bytes, int]:
    """A side's sorting table: the hop-by-hop names dropped, ``special`` names given to the
    caller (action codes above 0), every other name passing through."""
    return dict.fromkeys(HOP_BY_HOP_RAW, DROP) | special


def sort_line(table: dict[bytes, int], kept: list[bytes], name: bytes, value: bytes) -> int:
    """One HTTP/1 header line sorted by its lower-case name, the same way on both sides (the
    listener's request lines, the upstream's response lines): a line ``table`` does not name
    is rendered into ``kept`` (``Name: value\r\n``; ``Proxy-*`` lines never are) and
    :data:`PASS` returned; otherwise its action, for the caller to act on (rendering it too
    when it keeps the line)."""
    lname = name.lower()
    act = table.get(lname, PASS)
    if act == PASS and not lname.startswith(b"proxy-"):
        kept += (name, b": ", value, b"\r\n")
    return act


_ONE_TOKEN = {b"keep-alive": frozenset({b"keep-alive"}), b"close": frozenset({b"close"})}


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The header names a ``Connection`` header value lists (lower case)."""
    lvalue = value.lower()
    one = _ONE_TOKEN.get(lvalue)
    if one is not None:
        return one
    return frozenset(t for t in (x.strip() for x in lvalue.split(b",")) if t)
