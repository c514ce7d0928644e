"""Reading what an operator hands lbtui, however hostile: files with a size cap, backend URLs.

A file a config names is read up to a cap, so that ``/dev/zero`` or a runaway log given by
mistake ends with one clear line instead of filling memory (``-c /dev/zero``,
``fallback.file = "/dev/zero"``). A backend URL is refused when lbtui could not use it as
written: credentials it would not send (and would show in the state), whitespace or control
characters that would reach the backend's request line, port 0.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from lbtui.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
"""A config, fleet or scenario file larger than 1 MiB is refused (every real one is a few KiB)."""
MAX_FALLBACK_BYTES = 1 << 20
"""A fallback body file is read into memory once and served from there: 1 MiB at most."""


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, reading at most ``limit`` + 1 of them (``/dev/zero`` ends);
    ``OSError`` if unreadable, ``ValueError`` if larger than ``limit``."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {_size(limit)} (the most lbtui reads)")
    return data


def read_config_text(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> str:
    """A config, fleet or scenario file as text; every failure a ``ConfigError`` naming it."""
    p = Path(path)
    try:
        return read_limited(p, limit).decode("utf-8")
    except IsADirectoryError:
        raise ConfigError(str(p), ["expected a file, got a directory"]) from None
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), ["expected UTF-8 text"]) from None
    except ValueError as exc:
        raise ConfigError(str(p), [f"file {exc}"]) from None


def loads_toml(text: str, source: str) -> dict[str, Any]:
    """Parsed TOML; a ``ConfigError`` naming ``source`` for bad TOML, nesting included (the
    parser recurses: a deep enough array would end in ``RecursionError``)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"invalid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError(source, ["invalid TOML: arrays or tables nested too deeply"]) from None


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n} bytes"


def check_backend_url(v: str) -> str:
    """A backend's URL as lbtui can use it: ``http://HOST:PORT[/prefix]``, else ``ValueError``
    saying why. Refused: credentials (lbtui would not send them, and they would show in the
    state and events), whitespace or control characters (they would reach the backend's
    request line), port 0, a query or a fragment."""
    shown = repr(_redact(v))
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        raise ValueError(f"a backend URL takes no spaces or control characters, got {shown}")
    parts = urlsplit(v)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"a backend URL takes no user or password (lbtui sends no credentials), got {shown}"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ValueError(f"expected an http:// URL with a host and a port, got {shown}")
    if port == 0:
        raise ValueError(f"expected a port from 1 to 65535, got {shown}")
    if parts.query or parts.fragment or v.endswith(("?", "#")):
        raise ValueError(f"a backend URL takes no query or fragment, got {shown}")
    return v.rstrip("/")


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()
    except ValueError:
        return url
