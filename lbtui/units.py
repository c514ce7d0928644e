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
