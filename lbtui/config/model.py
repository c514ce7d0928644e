"""The whole configuration (``Config``) and the checks no single key can make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from lbtui.config.access_log import AccessLogConfig
from lbtui.config.groups import GroupConfig
from lbtui.config.listeners import DEFAULT_NAME, ListenerSpec, listener_problems
from lbtui.config.rules import RouteConfig
from lbtui.config.sections import (
    AdminConfig,
    BackendConfig,
    BalancerConfig,
    BreakerSettings,
    EjectionConfig,
    FallbackConfig,
    HealthConfig,
    LimitsConfig,
    ListenerConfig,
    ProxyConfig,
    RetriesConfig,
    Section,
)
from lbtui.inputs import (
    MAX_FALLBACK_BYTES,
    read_limited,
)


class Config(Section):
    """Everything ``lbtui serve`` needs."""

    listener: ListenerConfig = ListenerConfig()
    """The shorthand for one listener, and the engine and workers of every listener."""
    listeners: list[ListenerSpec] = Field(default_factory=list)
    """``[[listeners]]``; empty: the one ``[listener]`` describes (see :attr:`all_listeners`)."""
    balancer: BalancerConfig = BalancerConfig()
    proxy: ProxyConfig = ProxyConfig()
    limits: LimitsConfig = LimitsConfig()
    breaker: BreakerSettings = BreakerSettings()
    ejection: EjectionConfig = EjectionConfig()
    health: HealthConfig = HealthConfig()
    retries: RetriesConfig = RetriesConfig()
    fallback: FallbackConfig | None = None
    admin: AdminConfig = AdminConfig()
    backends: list[BackendConfig] = Field(default_factory=list)
    groups: list[GroupConfig] = Field(default_factory=list)
    """Target groups routes forward to; ``default`` (if named) takes unrouted requests, else
    every backend does."""
    routes: list[RouteConfig] = Field(default_factory=list)
    access_log: AccessLogConfig | None = None
    """One line per request (``[access_log]``); None: no access log."""
    base_dir: str | None = None
    """Where relative file names (fallback files) are looked up: the config file's folder."""

    @property
    def has_backends(self) -> bool:
        """Whether it names backends, or a group that discovers some (file, DNS)."""
        return bool(self.backends) or any(g.discovery is not None for g in self.groups)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        data = self.model_dump()
        if "address" not in self.listener.model_fields_set:
            del data["listener"]["address"]  # the default: not the file's word
        problems = cross_problems(data)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def all_listeners(self) -> list[ListenerSpec]:
        """Every listener: ``[[listeners]]``, else the ``[listener]`` shorthand's one."""
        return self.listeners or [ListenerSpec(name=DEFAULT_NAME, address=self.listener.address)]


def resolve_file(name: str, base: Path | None) -> Path:
    """A file a config names: relative names are looked up from ``base``, its folder."""
    path = Path(name)
    return base / path if base is not None and not path.is_absolute() else path


def cross_problems(data: dict[str, Any]) -> list[str]:
    """What no single key can check (names that must match, files that must be readable),
    on raw data so that ``lbtui check`` lists these problems beside every other one."""
    problems: list[str] = []
    seen: set[str] = set()
    backends = data.get("backends")
    for i, b in enumerate(backends if isinstance(backends, list) else []):
        name = b.get("name") if isinstance(b, dict) else None
        if isinstance(name, str):
            if name in seen:
                problems.append(f"backends[{i}].name: duplicate backend name {name!r}")
            seen.add(name)
    problems += _group_problems(data, seen)
    routes = _dicts(data.get("routes"))
    base_dir = data.get("base_dir")
    base = Path(base_dir) if isinstance(base_dir, str) and base_dir else None
    fallbacks = [("fallback", data.get("fallback"))] + [
        (f"routes[{i}].fallback", r.get("fallback")) for i, r in enumerate(routes)
    ]
    for where, fb in fallbacks:
        file = fb.get("file") if isinstance(fb, dict) else None
        if isinstance(file, str):
            path = resolve_file(file, base)
            try:
                read_limited(path, MAX_FALLBACK_BYTES)
            except OSError as exc:
                problems.append(f"{where}.file: cannot read {str(path)!r}: {exc.strerror or exc}")
            except ValueError as exc:
                problems.append(f"{where}.file: {str(path)!r} is {exc}")
    problems += listener_problems(data)
    h = data.get("health")
    timeout, interval = (
        (h.get("timeout_ms"), h.get("interval_ms", 2000)) if isinstance(h, dict) else (None, None)
    )
    if (
        isinstance(timeout, int)
        and isinstance(interval, int)
        and not isinstance(timeout, bool)
        and timeout > interval
    ):
        problems.append(
            f"health.timeout_ms: expected at most health.interval_ms ({interval}), got {timeout}"
        )
    return problems


def _dicts(value: object) -> list[dict[str, Any]]:
    """The tables of an array of tables (anything else as an empty table: reported elsewhere)."""
    return [v if isinstance(v, dict) else {} for v in value] if isinstance(value, list) else []


def _unknown_backends(where: str, names: object, seen: set[str], known: str) -> list[str]:
    return [
        f"{where}.backends[{j}]: no backend named {name!r} (known: {known})"
        for j, name in enumerate(names if isinstance(names, list) else [])
        if isinstance(name, str) and name not in seen
    ]


def _group_problems(data: dict[str, Any], seen: set[str]) -> list[str]:
    """Groups and routes name backends and groups that exist, each name once."""
    problems: list[str] = []
    known = ", ".join(sorted(seen)) or "none"
    groups = _dicts(data.get("groups"))
    group_names: set[str] = set()
    for i, g in enumerate(groups):
        gname = g.get("name")
        if isinstance(gname, str):
            if gname in group_names:
                problems.append(f"groups[{i}].name: duplicate group name {gname!r}")
            group_names.add(gname)
        problems += _unknown_backends(f"groups[{i}]", g.get("backends"), seen, known)
    routes = _dicts(data.get("routes"))
    route_names: set[str] = set()
    for i, r in enumerate(routes):
        problems += _unknown_backends(f"routes[{i}]", r.get("backends"), seen, known)
        rname = r.get("name")
        if isinstance(rname, str):
            if rname in route_names:
                problems.append(f"routes[{i}].name: duplicate route name {rname!r}")
            route_names.add(rname)
        for j, f in enumerate(_dicts(r.get("forward"))):
            gname = f.get("group")
            if isinstance(gname, str) and gname not in group_names:
                problems.append(
                    f"routes[{i}].forward[{j}].group: no group named {gname!r} "
                    f"(known: {', '.join(sorted(group_names)) or 'none'})"
                )
    balancer = data.get("balancer")
    zone = balancer.get("zone") if isinstance(balancer, dict) else None
    for i, g in enumerate(_dicts(data.get("groups"))):
        if g.get("cross_zone") is False and zone is None:
            problems.append(
                f"groups[{i}].cross_zone: false needs [balancer] zone (the zone to stay in)"
            )
    return problems
