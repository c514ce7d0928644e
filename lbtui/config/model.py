"""The whole configuration (``Config``) and the checks no single key can make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

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
    RouteConfig,
    Section,
)
from lbtui.inputs import (
    MAX_FALLBACK_BYTES,
    read_limited,
)


class Config(Section):
    """Everything ``lbtui serve`` needs."""

    listener: ListenerConfig = ListenerConfig()
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
    routes: list[RouteConfig] = Field(default_factory=list)
    base_dir: str | None = None
    """Where relative file names (fallback files) are looked up: the config file's folder."""

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems = cross_problems(self.model_dump())
        if problems:
            raise ValueError("\n".join(problems))
        return self


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
    routes = data.get("routes")
    routes = [r if isinstance(r, dict) else {} for r in routes] if isinstance(routes, list) else []
    for i, r in enumerate(routes):
        names = r.get("backends")
        for j, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in seen:
                problems.append(
                    f"routes[{i}].backends[{j}]: no backend named {name!r} "
                    f"(known: {', '.join(sorted(seen)) or 'none'})"
                )
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
