"""Parsing of the small units people type: durations (``250ms``, ``30s``, ``5m``) and addresses."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h)?\s*$")
_SCALE = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``, or a bare number of seconds."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text}")
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration such as 250ms, 30s or 5m, got {text!r}")
    return float(m.group(1)) * _SCALE[m.group(2)]


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``(host, port)`` from ``"HOST:PORT"``, ``":PORT"``, ``"PORT"`` or ``"[::1]:PORT"``."""
    text = text.strip()
    host, sep, port_s = text.rpartition(":")
    if not sep:
        host, port_s = "", text
    host = host.strip("[]") or default_host
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port from 0 to 65535, got {text!r}")
    return host, int(port_s)


def split_authority(authority: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of ``name``, ``name:port``, ``1.2.3.4:port`` or ``[::1]:port``, the
    host lowercased without brackets; ``None`` when it is not an authority at all."""
    text = authority.strip().lower()
    if not text or any(c in text for c in "/?#@ \t\\") or any(ord(c) < 0x21 for c in text):
        return None
    port: int | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, None
        elif ":" in host:  # a bare IPv6 address without brackets is no Host
            return None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    if not host:
        return None
    return host.rstrip("."), port


def parse_allowed_host(entry: str) -> tuple[str, int | None]:
    """One ``[admin] allowed_hosts`` entry (``name`` or ``name:port``); ``ValueError`` if not."""
    parts = split_authority(entry)
    if parts is None:
        raise ValueError(f"expected a host name, optionally with :PORT, got {entry!r}")
    return parts
