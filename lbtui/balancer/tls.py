"""TLS termination for a listener: one ``SSLContext`` a certificate, SNI choosing among them.

As nginx picks a ``server`` by ``server_name`` and HAProxy a ``crt`` by the names in it, a
listener with several certificates answers each handshake with the certificate whose names
(subjectAltName DNS entries; the subject's CN only when there are none, as browsers no longer
do but old certificates need) match the name the client sent in SNI: an exact name first, then
a ``*.example.com`` wildcard (one label, RFC 6125), then the first certificate, the default.

Each context offers TLS 1.2 and 1.3 only and ALPN ``http/1.1`` (the listener speaks HTTP/1.1;
a client offering only ``h2`` gets no ALPN answer and may still speak HTTP/1.1). The files are
validated by the config (``config/listeners.py``) before anything here loads them.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lbtui.config.listeners import CertificateConfig, resolve


def certificate_names(cert_path: Path) -> list[str]:
    """The DNS names a PEM certificate is for, lowercased (SAN, else the subject's CN).

    ``ssl`` decodes a peer's certificate but has no public call for a file; its test helper
    ``_test_decode_cert`` is that decoder (the same since Python 3.2) and saves a dependency."""
    decode = ssl._ssl._test_decode_cert  # type: ignore[attr-defined]  # noqa: SLF001
    decoded: dict[str, Any] = decode(str(cert_path))
    names = [v.lower() for k, v in decoded.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        for rdn in decoded.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    names.append(str(v).lower())
    return names


def base_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


class ServerTls:
    """The contexts of one HTTPS listener, and the SNI choice among them.

    ``context`` is the one the listener is created with (the default certificate's); its
    ``sni_callback`` swaps in another's for a handshake whose server name matches it."""

    def __init__(self, certificates: Sequence[CertificateConfig], base: Path | None) -> None:
        if not certificates:
            raise ValueError("a TLS listener needs at least one certificate")
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        self.contexts: list[ssl.SSLContext] = []
        self.names: list[list[str]] = []
        for c in certificates:
            cert_path, key_path = resolve(c.cert, base), resolve(c.key, base)
            ctx = base_context()
            ctx.load_cert_chain(cert_path, key_path)
            names = certificate_names(cert_path)
            self.contexts.append(ctx)
            self.names.append(names)
            for name in names:
                if name.startswith("*."):
                    self.wildcard.setdefault(name[2:], ctx)
                else:
                    self.exact.setdefault(name, ctx)
        self.context = self.contexts[0]
        if len(self.contexts) > 1:  # one certificate: nothing to choose, no call a handshake
            for ctx in self.contexts:
                # set on each, so that a context swapped in keeps choosing the same way
                ctx.sni_callback = self._sni

    def choose(self, server_name: str | None) -> ssl.SSLContext:
        """The context for a handshake that asked for ``server_name`` (``None``: no SNI)."""
        if not server_name:
            return self.context
        name = server_name.lower().rstrip(".")
        ctx = self.exact.get(name)
        if ctx is not None:
            return ctx
        _, dot, parent = name.partition(".")
        if dot:
            ctx = self.wildcard.get(parent)
            if ctx is not None:
                return ctx
        return self.context

    def _sni(
        self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        ctx = self.choose(server_name)
        if ctx is not self.context:
            sock.context = ctx
