"""What the admin API refuses before any handler runs: a web page's requests.

The admin API listens on loopback without a token by default, so any web page the operator has
open can try to reach it. A browser lets a page send a "simple" cross-origin request (POST with
``text/plain`` or a form body) without asking first, and a DNS-rebinding page gets its own name
resolved to 127.0.0.1 and reads the answers too. Three checks close both, as Jupyter's server
(``allow_origin``, ``local_hostnames``) and Django (``ALLOWED_HOSTS``) do:

- **Host**: the request names the API by one of its own addresses (loopback, the address it
  listens on or was reached at) or a name listed in ``[admin] allowed_hosts``; a rebinding page
  sends its own name and is refused, GETs included.
- **Origin** (state-changing methods): absent (CLI clients, curl, lbtui's own) or one of the
  names above; a page elsewhere is refused.
- **Content-Type** (state-changing methods with a body): ``application/json``, which a browser
  will not send cross-origin without a CORS preflight that this API never grants.

The functions here are pure (strings in, a problem or ``None`` out) and tested without sockets;
``api.py`` applies them in its middleware. JSON bodies are parsed here too, with the limits a
hostile body needs (depth, no NaN/Infinity).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from lbtui.units import parse_allowed_host, split_authority

STATE_CHANGING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_JSON_DEPTH = 32
"""Nesting allowed in an admin body; every real one is 3 levels deep at most."""


class HostPolicy:
    """The names the admin API answers to: loopback and its own address on its port, and the
    ``allowed_hosts`` entries (a name alone: any port)."""

    def __init__(self, listen_host: str, allowed: Iterable[str] = ()) -> None:
        self.own = set(LOOPBACK_NAMES)
        if not _unspecified(listen_host):
            self.own.add(listen_host.lower().strip("[]"))
        self.allowed = [parse_allowed_host(e) for e in allowed]

    def admits(self, authority: str, port: int, local_ip: str | None = None) -> bool:
        """Whether ``authority`` (a Host, or an Origin's host:port) names this API, reached on
        ``port`` at ``local_ip``."""
        parts = split_authority(authority)
        if parts is None:
            return False
        host, given_port = parts
        for name, only_port in self.allowed:
            if host == name and (only_port is None or given_port == only_port):
                return True
        own = host in self.own or (local_ip is not None and host == local_ip.lower())
        return own and (given_port is None or given_port == port)

    def host_problem(self, host: str | None, port: int, local_ip: str | None) -> str | None:
        if not host:
            return "a Host header is required"
        if self.admits(host, port, local_ip):
            return None
        return (
            f"Host {host[:100]!r} is not a name this admin API answers to (loopback, its own "
            "address, or a name in [admin] allowed_hosts); refused as a possible DNS-rebinding "
            "page"
        )

    def origin_problem(self, origin: str | None, port: int, local_ip: str | None) -> str | None:
        """A state-changing request's ``Origin``: absent (not a browser) or this API's own."""
        if origin is None:
            return None
        parts = urlsplit(origin.strip())
        if parts.scheme in ("http", "https") and parts.netloc:
            authority = parts.netloc
            if parts.port is None:  # the scheme's default port, as the browser meant it
                authority += ":443" if parts.scheme == "https" else ":80"
            if self.admits(authority, port, local_ip):
                return None
        return (
            f"Origin {origin[:100]!r} is a foreign web page: state-changing requests are "
            "accepted from non-browser clients (no Origin) or this API's own origin"
        )


def content_type_problem(method: str, has_body: bool, content_type: str) -> str | None:
    """A state-changing request's body must be JSON: a browser sends ``text/plain`` and form
    bodies cross-origin without asking, never ``application/json``."""
    if method not in STATE_CHANGING or not has_body or content_type == "application/json":
        return None
    return f"Content-Type {content_type[:100]!r}: expected application/json"


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def depth(value: object) -> int:
    """How deeply ``value`` nests lists and objects (0 for a scalar), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
        else:
            continue
        deepest = max(deepest, level + 1)
    return deepest


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """An admin body as a JSON object; ``ValueError`` with the reason for anything else (not
    UTF-8, not JSON, NaN/Infinity, nested deeper than :data:`MAX_JSON_DEPTH`, not an object)."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ValueError("expected UTF-8 JSON") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ValueError(f"expected a JSON object ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    if depth(data) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return data
