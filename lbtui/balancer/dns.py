"""A minimal DNS client for discovery: the A and AAAA records of one name, over UDP.

RFC 1035 message format, one question a query, recursion desired; only the answers' A and
AAAA records are read (a CNAME chain is followed by the server, which puts the addresses in
the same answer). Written here rather than adding a dependency for two queries every few
seconds; with no resolver configured the system's (``getaddrinfo``) is used instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct

TYPE_A = 1
TYPE_AAAA = 28


class DnsError(Exception):
    """The server did not answer, or answered an error (``NXDOMAIN``, ``SERVFAIL``…)."""


RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def query(name: str, qtype: int, qid: int) -> bytes:
    """A query message for ``name``'s records of ``qtype``."""
    labels = [p for p in name.rstrip(".").split(".") if p]
    qname = b"".join(bytes([len(p)]) + p.encode("idna") for p in labels) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def _skip_name(msg: bytes, i: int) -> int:
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:  # a compression pointer ends the name
            return i + 2
        i += n + 1


def addresses(msg: bytes, qid: int) -> list[str]:
    """The A and AAAA addresses in an answer to query ``qid``; ``DnsError`` for an error."""
    if len(msg) < 12:
        raise DnsError("short answer")
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid:
        raise DnsError("answer to another query")
    rcode = flags & 0xF
    if rcode:
        raise DnsError(RCODES.get(rcode, f"rcode {rcode}"))
    i = 12
    for _ in range(qd):
        i = _skip_name(msg, i) + 4
    out: list[str] = []
    for _ in range(an):
        i = _skip_name(msg, i)
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", msg[i : i + 10])
        i += 10
        data = msg[i : i + length]
        i += length
        if rtype == TYPE_A and length == 4:
            out.append(str(ipaddress.IPv4Address(data)))
        elif rtype == TYPE_AAAA and length == 16:
            out.append(str(ipaddress.IPv6Address(data)))
    return out


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, qid: int) -> None:
        self.qid = qid
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.answer.done() and data[:2] == struct.pack("!H", self.qid):
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def ask(name: str, qtype: int, server: tuple[str, int], timeout_s: float) -> list[str]:
    """One query to ``server``; its addresses (``DnsError`` or ``OSError`` on failure)."""
    qid = int.from_bytes(os.urandom(2), "big")
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Exchange(qid), remote_addr=server
    )
    try:
        transport.sendto(query(name, qtype, qid))
        try:
            async with asyncio.timeout(timeout_s):
                msg = await proto.answer
        except TimeoutError:
            raise DnsError(
                f"no answer from {server[0]}:{server[1]} within {timeout_s:g} s"
            ) from None
        return addresses(msg, qid)
    finally:
        transport.close()


async def resolve(
    name: str, port: int, server: tuple[str, int] | None, timeout_s: float = 2.0
) -> list[str]:
    """Every address of ``name`` (A then AAAA), sorted; from ``server`` or the system."""
    if server is None:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})
    found: list[str] = []
    for qtype in (TYPE_A, TYPE_AAAA):
        found += await ask(name, qtype, server, timeout_s)
    return sorted(set(found))
