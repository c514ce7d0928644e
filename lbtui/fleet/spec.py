"""What a demo backend is: its spec, its run-time knobs, and the fleet file that lists them.

Pure: no I/O beyond reading the fleet file, no aiohttp. Shared by the backend process (which
validates ``POST /_fleet/control`` with :class:`KnobsUpdate`), the supervisor and the command.

The fleet file (``demo/fleet.toml``) is TOML, validated once at the edge with pydantic
(unknown keys rejected); every problem found is reported at once as a
:class:`~lbtui.errors.ConfigError` naming the key path (``backend[2].error_rate``) and what
was expected::

    host = "127.0.0.1"          # optional; loopback only

    [[backend]]
    name = "api-1"              # letters, digits, '.', '_', '-'
    character = "fast"          # a word for the console; free text
    port = 0                    # 0 = an ephemeral port chosen by the kernel
    latency = "2ms"             # base latency, a duration ("250ms", "1s")
    jitter = "1ms"              # each answer takes latency ± jitter (uniform), never < 0
    error_rate = 0.0            # share of answers that are error_status instead of 200
    error_status = 500
    size = 512                  # body bytes of an answer
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from lbtui.errors import ConfigError
from lbtui.inputs import loads_toml, read_config_text
from lbtui.units import parse_duration

MAX_LATENCY_MS = 600_000.0
"""Ten minutes: longer than any client will wait, short enough to stay bounded."""
MAX_SIZE = 1 << 30
"""Largest default body (1 GiB); a single request may ask for more with ``?size=N``."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


@dataclass(frozen=True)
class BackendSpec:
    """One demo backend as the supervisor starts it (the knobs are its start values)."""

    name: str
    port: int = 0
    """TCP port to listen on; 0 = an ephemeral port, kept across restarts once bound."""
    latency_ms: float = 5.0
    """Base latency of every answer, in milliseconds."""
    jitter_ms: float = 0.0
    """Each answer takes ``latency_ms ± jitter_ms`` (uniform), never less than 0."""
    error_rate: float = 0.0
    """Share (0..1) of answers that carry ``error_status`` instead of 200."""
    error_status: int = 500
    size: int = 512
    """Body bytes of an answer."""
    character: str = ""
    """A word for the console (``fast``, ``flaky``); no effect on behaviour."""

    def describe(self) -> str:
        """Short human summary: ``2 ms ± 1, 512 B, 5 % 500s``."""
        parts = [f"{_num(self.latency_ms)} ms"]
        if self.jitter_ms:
            parts[0] += f" ± {_num(self.jitter_ms)}"
        parts.append(_bytes(self.size))
        if self.error_rate:
            parts.append(f"{_num(self.error_rate * 100)} % {self.error_status}s")
        return ", ".join(parts)


@dataclass(frozen=True)
class FleetSpec:
    """A whole fleet file: the loopback host to bind and the backends, in file order."""

    host: str
    backends: tuple[BackendSpec, ...]


def _num(x: float) -> str:
    return f"{x:g}"


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (the only hosts lbtui sends traffic to)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


# --- run-time knobs (the backend's POST /_fleet/control) -------------------------------------


class Knobs(BaseModel):
    """The full set of a backend's fault knobs, as ``GET /_fleet/control`` returns them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(5.0, ge=0, le=MAX_LATENCY_MS)
    jitter_ms: float = Field(0.0, ge=0, le=MAX_LATENCY_MS)
    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(500, ge=100, le=599)
    size: int = Field(512, ge=0, le=MAX_SIZE)
    hang: bool = False
    """Accept requests and never answer them, until cleared (then held requests answer)."""


class KnobsUpdate(BaseModel):
    """Any subset of :class:`Knobs`; a field left out keeps its value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float | None = Field(None, ge=0, le=MAX_LATENCY_MS)
    jitter_ms: float | None = Field(None, ge=0, le=MAX_LATENCY_MS)
    error_rate: float | None = Field(None, ge=0, le=1)
    error_status: int | None = Field(None, ge=100, le=599)
    size: int | None = Field(None, ge=0, le=MAX_SIZE)
    hang: bool | None = None

    def apply(self, knobs: Knobs) -> Knobs:
        return knobs.model_copy(update=self.model_dump(exclude_none=True))


def knobs_of(spec: BackendSpec) -> Knobs:
    return Knobs(
        latency_ms=spec.latency_ms,
        jitter_ms=spec.jitter_ms,
        error_rate=spec.error_rate,
        error_status=spec.error_status,
        size=spec.size,
    )


def describe_validation_error(exc: ValidationError) -> list[str]:
    """Each pydantic error as ``key.path: expectation (got value)``."""
    problems: list[str] = []
    for err in exc.errors():
        path = _key_path(err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown key")
        elif err["type"] == "missing":
            problems.append(f"{path}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {msg[:1].lower()}{msg[1:]} (got {err['input']!r})")
    return problems


def _key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


# --- the fleet file --------------------------------------------------------------------------


def _duration_ms(value: Any) -> Any:
    """``"40ms"`` → 40.0. Bare numbers are refused: ``latency = 40`` is ambiguous (s or ms?)."""
    if isinstance(value, str):
        try:
            return parse_duration(value) * 1000.0
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError('expected a duration string such as "40ms" or "1.5s"')


DurationMs = Annotated[float, BeforeValidator(_duration_ms), Field(ge=0, le=MAX_LATENCY_MS)]


class _BackendEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    character: str = Field("", max_length=40)
    port: int = Field(0, ge=0, le=65535)
    latency: DurationMs = 5.0
    jitter: DurationMs = 0.0
    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(500, ge=100, le=599)
    size: int = Field(512, ge=0, le=MAX_SIZE)


class _FleetFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    backend: list[_BackendEntry] = Field(min_length=1)


def parse_fleet(text: str, source: str = "<fleet>") -> FleetSpec:
    """Parse fleet-file text; raise :class:`ConfigError` listing every problem found."""
    raw = loads_toml(text, source)
    try:
        model = _FleetFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, describe_validation_error(exc)) from None
    problems: list[str] = []
    if not is_loopback_host(model.host):
        problems.append(f"host: expected a loopback address (127.0.0.1, ::1), got {model.host!r}")
    seen_names: dict[str, int] = {}
    seen_ports: dict[int, int] = {}
    for i, b in enumerate(model.backend):
        if b.name in seen_names:
            problems.append(
                f"backend[{i}].name: {b.name!r} is already used by backend[{seen_names[b.name]}]"
            )
        seen_names.setdefault(b.name, i)
        if b.port:
            if b.port in seen_ports:
                problems.append(
                    f"backend[{i}].port: {b.port} is already used by backend[{seen_ports[b.port]}]"
                )
            seen_ports.setdefault(b.port, i)
    if problems:
        raise ConfigError(source, problems)
    return FleetSpec(
        host=model.host,
        backends=tuple(
            BackendSpec(
                name=b.name,
                port=b.port,
                latency_ms=b.latency,
                jitter_ms=b.jitter,
                error_rate=b.error_rate,
                error_status=b.error_status,
                size=b.size,
                character=b.character,
            )
            for b in model.backend
        ),
    )


def load_fleet(path: str | Path) -> FleetSpec:
    """Read and parse a fleet file; a missing or unreadable file is a :class:`ConfigError`."""
    p = Path(path)
    return parse_fleet(read_config_text(p), str(p))  # at most 1 MiB


def expand(
    specs: Sequence[BackendSpec], count: int | None = None, base_port: int | None = None
) -> list[BackendSpec]:
    """The fleet to start: ``count`` backends (default: as many as specs) named ``api-1..api-N``
    when ``count`` is given, their characters repeating the specs cyclically; with
    ``base_port`` P, ports P..P+N-1 (else each spec's own port, or ephemeral when counted)."""
    if not specs:
        raise ValueError("a fleet needs at least one backend spec")
    if count is not None and not 1 <= count <= 256:
        raise ValueError(f"count must be from 1 to 256, got {count}")
    n = len(specs) if count is None else count
    if base_port is not None and not (base_port >= 1 and base_port + n - 1 <= 65535):
        raise ValueError(f"ports {base_port}..{base_port + n - 1} are not all valid TCP ports")
    out: list[BackendSpec] = []
    for i, spec in zip(range(n), itertools.cycle(specs), strict=False):
        name = spec.name if count is None else f"api-{i + 1}"
        if base_port is not None:
            port = base_port + i
        elif count is None:
            port = spec.port
        else:
            port = 0
        out.append(replace(spec, name=name, port=port))
    return out
