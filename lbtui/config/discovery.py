"""Where a target group's backends come from besides ``[[backends]]``: a file or DNS.

``discovery = { file = "PATH" }``: a TOML or JSON file of ``[[backends]]`` (``{"backends":
[...]}`` in JSON) with the same keys as the config's, watched and applied within a few seconds
of a change; a file that is broken (unreadable, bad syntax, a bad key) keeps the last good set
and is reported as an event naming the problem. ``discovery = { dns = "NAME:PORT",
interval_s = 5 }``: the name's A and AAAA records, re-resolved every ``interval_s``, each
address a backend on ``PORT`` (as Envoy's STRICT_DNS cluster); ``resolver = "HOST:PORT"``
asks that DNS server instead of the system's. Backends that leave the set drain: requests in
flight on them finish.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator

from lbtui.config.sections import BackendConfig, Section
from lbtui.errors import ConfigError
from lbtui.inputs import MAX_CONFIG_BYTES, loads_toml, read_limited
from lbtui.units import parse_hostport


class DiscoveryConfig(Section):
    """One source of a group's backends: ``file`` or ``dns``."""

    file: str | None = None
    """A TOML or JSON file of ``[[backends]]`` (relative: from the config file's folder)."""
    dns: str | None = None
    """``NAME:PORT``: every A and AAAA record of NAME is a backend on PORT."""
    interval_s: Annotated[float, Field(ge=0.1, le=86400)] = 5.0
    """How often DNS is asked again (a file is looked at every half second)."""
    resolver: str | None = None
    """``HOST:PORT`` of the DNS server to ask (None: the system's resolver)."""

    @field_validator("dns", "resolver")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hostport(v)
        return v

    @model_validator(mode="after")
    def _one(self) -> DiscoveryConfig:
        if (self.file is None) == (self.dns is None):
            raise ValueError("discovery needs exactly one of file or dns")
        if self.resolver is not None and self.dns is None:
            raise ValueError("resolver is for dns discovery")
        return self


def read_backends(path: Path) -> list[BackendConfig]:
    """The backends a discovery file lists; ``ConfigError`` naming the file and every problem
    (the caller keeps its last good set)."""
    source = str(path)
    try:
        text = read_limited(path, MAX_CONFIG_BYTES).decode("utf-8")
    except (OSError, ValueError) as exc:
        raise ConfigError(source, [f"cannot read it: {exc}"]) from None
    data: Any
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(source, [f"invalid JSON: {exc}"]) from None
    else:
        data = loads_toml(text, source)
    items = data.get("backends") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(source, ['expected a list of backends ([[backends]] / "backends")'])
    out: list[BackendConfig] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        try:
            bc = BackendConfig.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                where = ".".join(str(p) for p in err["loc"])
                problems.append(f"backends[{i}].{where}: {err['msg']}".replace(". :", ":"))
            continue
        if bc.name in seen:
            problems.append(f"backends[{i}].name: duplicate backend name {bc.name!r}")
        seen.add(bc.name)
        out.append(bc)
    if problems:
        raise ConfigError(source, problems)
    return out
