"""Self-signed certificates made in the test with ``openssl req`` (no test dependency needed)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def table(self) -> dict[str, str]:
        return {"cert": str(self.cert), "key": str(self.key)}


def make_cert(folder: Path, stem: str, *names: str) -> Cert:
    """A self-signed certificate for ``names`` (subjectAltName DNS; CN the first)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / f"{stem}.crt", folder / f"{stem}.key"
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", f"/CN={names[0]}", "-addext",
            f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Cert(cert, key)


def client_context(*trusted: Cert) -> ssl.SSLContext:
    """A client that trusts exactly these certificates and checks the host name."""
    ctx = ssl.create_default_context()
    for c in trusted:
        ctx.load_verify_locations(cafile=str(c.cert))
    return ctx
