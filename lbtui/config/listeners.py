"""``[[listeners]]``: the addresses the balancer accepts clients on, plain or TLS.

Each listener has a ``name`` (what the state, the console, a route's ``listeners`` and
``redirect_https`` call it) and an ``address``. One with ``certificates`` speaks HTTPS: the
first certificate is the default, SNI picks among the others by the names each carries (its
subjectAltName DNS names, ``*.example.com`` wildcards), as nginx's ``server_name`` and
HAProxy's ``crt-list`` do. A plain one with ``redirect_https = "NAME"`` answers every request
with 308 to the same host and path on that HTTPS listener (HAProxy's ``redirect scheme https``).

The single ``[listener]`` table stays: with no ``[[listeners]]`` its address is one listener
named ``default``; its ``engine`` and ``workers`` apply to every listener. The certificate
files are loaded here, at validation (``tls_problems``): a missing or unreadable file, a file
that is not a certificate or a key, or a key that is not the certificate's is reported naming
the file, before anything listens.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from lbtui.config.sections import Section, _check_address

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

DEFAULT_NAME = "default"
"""The name of the listener the ``[listener]`` shorthand makes."""


class CertificateConfig(Section):
    """A certificate chain and its private key, both PEM files."""

    cert: str = Field(min_length=1)
    """The certificate (followed by its intermediates), PEM; relative to the config's folder."""
    key: str = Field(min_length=1)
    """Its private key, PEM, unencrypted."""


class ListenerSpec(Section):
    """One address the balancer accepts clients on."""

    name: str
    address: str
    """``HOST:PORT``; port 0 picks a free port (tests)."""
    certificates: list[CertificateConfig] = Field(default_factory=list)
    """Empty: plain HTTP. Otherwise HTTPS (TLS 1.2 and 1.3, ALPN ``http/1.1``); the first is
    the default, the others are chosen by SNI."""
    redirect_https: str | None = None
    """The name of an HTTPS listener: every request here is answered 308 to it (same host and
    path, that listener's port)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"expected 1 to 64 letters, digits, '_', '.' or '-' (first a letter or digit), "
                f"got {v!r}"
            )
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_address(v)

    @property
    def tls(self) -> bool:
        return bool(self.certificates)


def listener_problems(data: dict[str, Any]) -> list[str]:
    """Checks across listeners, on raw data: unique names and addresses, ``redirect_https``
    naming an HTTPS listener, not both the shorthand's address and the list, TLS only on the
    fast engine, and certificate files that load."""
    listeners = data.get("listeners")
    if not isinstance(listeners, list) or not listeners:
        return route_problems(data, {DEFAULT_NAME})
    specs = [ls if isinstance(ls, dict) else {} for ls in listeners]
    problems: list[str] = []
    shorthand = data.get("listener")
    shorthand = shorthand if isinstance(shorthand, dict) else {}
    if "address" in shorthand and shorthand["address"] != specs[0].get("address"):
        problems.append(
            "listener.address: with [[listeners]] the addresses are theirs; "
            "keep [listener] for engine and workers"
        )
    engine = shorthand.get("engine", "fast")
    names = _names(specs, problems)
    problems += route_problems(data, set(names))
    base_dir = data.get("base_dir")
    base = Path(base_dir) if isinstance(base_dir, str) and base_dir else None
    for i, ls in enumerate(specs):
        problems += _redirect_problems(f"listeners[{i}]", ls, names, engine)
        certs = ls.get("certificates")
        if not isinstance(certs, list) or not certs:
            continue
        if engine != "fast":
            problems.append(
                f"listeners[{i}].certificates: TLS needs the fast listener "
                f'([listener] engine = "fast"), got engine {engine!r}'
            )
        for j, c in enumerate(certs):
            if isinstance(c, dict):
                problems += tls_problems(f"listeners[{i}].certificates[{j}]", c, base)
    return problems


def route_problems(data: dict[str, Any], names: set[str]) -> list[str]:
    """Each route's ``listeners`` must name listeners there are."""
    routes = data.get("routes")
    problems: list[str] = []
    for i, r in enumerate(routes if isinstance(routes, list) else []):
        wanted = r.get("listeners") if isinstance(r, dict) else None
        for j, name in enumerate(wanted if isinstance(wanted, list) else []):
            if isinstance(name, str) and name not in names:
                problems.append(
                    f"routes[{i}].listeners[{j}]: no listener named {name!r} "
                    f"(known: {', '.join(sorted(names))})"
                )
    return problems


def _names(specs: list[dict[str, Any]], problems: list[str]) -> dict[str, bool]:
    """Each listener's name and whether it is HTTPS; duplicate names and addresses reported."""
    names: dict[str, bool] = {}
    addresses: set[str] = set()
    for i, ls in enumerate(specs):
        name = ls.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(f"listeners[{i}].name: duplicate listener name {name!r}")
            names[name] = bool(ls.get("certificates"))
        address = ls.get("address")
        if isinstance(address, str) and not address.endswith(":0"):
            if address in addresses:
                problems.append(f"listeners[{i}].address: {address!r} is another listener's")
            addresses.add(address)
    return names


def _redirect_problems(
    where: str, ls: dict[str, Any], names: dict[str, bool], engine: object
) -> list[str]:
    target = ls.get("redirect_https")
    if not isinstance(target, str):
        return []
    if target not in names:
        return [
            f"{where}.redirect_https: no listener named {target!r} "
            f"(known: {', '.join(sorted(names)) or 'none'})"
        ]
    if not names[target]:
        return [
            f"{where}.redirect_https: listener {target!r} has no certificates "
            "(expected an HTTPS listener)"
        ]
    if ls.get("certificates"):
        return [f"{where}.redirect_https: an HTTPS listener cannot redirect to HTTPS"]
    if engine != "fast":
        return [
            f'{where}.redirect_https: needs the fast listener ([listener] engine = "fast"), '
            f"got engine {engine!r}"
        ]
    return []


def resolve(name: str, base: Path | None) -> Path:
    path = Path(name)
    return base / path if base is not None and not path.is_absolute() else path


def tls_problems(where: str, cert: dict[str, Any], base: Path | None) -> list[str]:
    """What is wrong with one ``{cert, key}`` pair, each problem naming its file."""
    cert_name, key_name = cert.get("cert"), cert.get("key")
    if not isinstance(cert_name, str) or not isinstance(key_name, str):
        return []  # the table's own validation says what is missing
    cert_path, key_path = resolve(cert_name, base), resolve(key_name, base)
    problems: list[str] = []
    for field, path, marker in (
        ("cert", cert_path, "CERTIFICATE-----"),
        ("key", key_path, "PRIVATE KEY-----"),
    ):
        try:
            text = path.read_bytes()[: 1 << 20].decode("latin-1")
        except OSError as exc:
            problems.append(f"{where}.{field}: cannot read {str(path)!r}: {exc.strerror or exc}")
            continue
        if marker not in text:
            problems.append(
                f"{where}.{field}: {str(path)!r} is not a PEM file with a "
                f"{'certificate' if field == 'cert' else 'private key'}"
            )
    if problems:
        return problems
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        if "MISMATCH" in reason.upper():
            problems.append(
                f"{where}.key: {str(key_path)!r} is not the private key of {str(cert_path)!r}"
            )
        else:
            problems.append(
                f"{where}: cannot load {str(cert_path)!r} with {str(key_path)!r}: {reason}"
            )
    except OSError as exc:
        problems.append(f"{where}: cannot load {str(cert_path)!r}: {exc.strerror or exc}")
    return problems
