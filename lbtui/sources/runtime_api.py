"""HAProxy's Runtime API (the stats socket): send one command, read the answer, parse it.

The socket is spoken in its non-interactive mode, as ``socat`` and hatop's one-shot reads do:
one connection per command, the command and a newline out, everything until HAProxy closes in.
That costs a connect per command (microseconds on a Unix socket) and never leaves a session
half-read when a console goes away. The three reads a console needs are asked concurrently.

Parsers are pure and take the text: ``show stat`` is CSV whose first line names the columns
(``# pxname,svname,…``), ``show servers state`` is a version line then space-separated rows
under a ``#`` header, ``show info`` is ``Key: value`` lines. A column HAProxy leaves empty is
absent from the row dict, so a reader says what it does when a figure is missing.

``RuntimeApi`` takes ``unix:///path/to/socket`` or ``tcp://host:port`` (HAProxy's
``stats socket ipv4@127.0.0.1:9999``). Failures to reach it become ``Unavailable`` naming the
address; an answer that is an error message (``No such server.``) is returned to the caller,
which knows what it asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from dataclasses import dataclass
from urllib.parse import urlsplit

from lbtui.control.errors import Unavailable
from lbtui.errors import UsageError

COMMAND_TIMEOUT_S = 3.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""``show stat`` of 10,000 servers is about 10 MB: the bound only stops a runaway peer."""

Row = dict[str, str]


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """Where the Runtime API listens: a Unix socket path, or a TCP host and port."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.path is not None else f"tcp://{self.host}:{self.port}"

    @staticmethod
    def parse(url: str) -> SocketAddress:
        """``unix:///run/haproxy/admin.sock`` or ``tcp://127.0.0.1:9999``; ``UsageError``
        saying the expected form otherwise."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            path = (parts.netloc + parts.path) if parts.netloc else parts.path
            if not path:
                raise UsageError(f"expected unix:///PATH/TO/SOCKET, got {url!r}")
            return SocketAddress(path=path)
        if parts.scheme == "tcp":
            try:
                port = parts.port
            except ValueError:
                port = None
            if not parts.hostname or port is None:
                raise UsageError(f"expected tcp://HOST:PORT, got {url!r}")
            return SocketAddress(host=parts.hostname, port=port)
        raise UsageError(f"expected a unix:// or tcp:// Runtime API address, got {url!r}")


class RuntimeApi:
    """One HAProxy's Runtime API."""

    def __init__(self, address: SocketAddress, *, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self.address = address
        self.timeout_s = timeout_s

    async def command(self, line: str) -> str:
        """HAProxy's whole answer to ``line`` (one command, no newline in it)."""
        if "\n" in line or ";" in line:
            raise ValueError(f"one command at a time, got {line!r}")
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._exchange(line)
        except TimeoutError:
            raise Unavailable(
                f"HAProxy at {self.address} did not answer {line.split()[0]!r} "
                f"within {self.timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise Unavailable(
                f"HAProxy at {self.address} unreachable: {exc.strerror or exc}"
            ) from None

    async def _exchange(self, line: str) -> str:
        a = self.address
        if a.path is not None:
            reader, writer = await asyncio.open_unix_connection(a.path)
        else:
            reader, writer = await asyncio.open_connection(a.host, a.port)
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            chunks: list[bytes] = []
            size = 0
            while chunk := await reader.read(256 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise Unavailable(f"HAProxy at {a}: answer to {line!r} over 64 MB")
            return b"".join(chunks).decode("utf-8", "replace")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def parse_stat(text: str) -> list[Row]:
    """``show stat``: one dict per proxy row (frontends, servers, backends), in HAProxy's
    order, empty fields left out."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise Unavailable(f"not a 'show stat' answer: {text[:80]!r}")
    header = lines[0][2:].split(",")
    rows: list[Row] = []
    for values in csv.reader(io.StringIO("\n".join(lines[1:]))):
        if not values:
            continue
        rows.append({k: v for k, v in zip(header, values, strict=False) if k and v != ""})
    return rows


def parse_servers_state(text: str) -> list[Row]:
    """``show servers state``: one dict per server (``be_name``, ``srv_name``,
    ``srv_admin_state``, ``srv_uweight``, ``srv_iweight``…)."""
    header: list[str] = []
    rows: list[Row] = []
    for line in text.splitlines():
        if line.startswith("# "):
            header = line[2:].split()
        elif header and line.strip():
            rows.append(dict(zip(header, line.split(), strict=False)))
    return rows


def parse_info(text: str) -> dict[str, str]:
    """``show info``: ``Key: value`` lines as a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def number(row: Row, key: str, default: float = 0.0) -> float:
    """A numeric field, ``default`` when HAProxy left it empty (or wrote something else)."""
    value = row.get(key)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        return default


def integer(row: Row, key: str, default: int = 0) -> int:
    return int(number(row, key, float(default)))
