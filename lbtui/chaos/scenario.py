"""Scenario files: what an experiment starts, the load it drives, what it breaks and when, and
the hypotheses it checks — validated once, at the edge, like ``lbtui/config``.

A scenario is TOML (unknown keys rejected, every problem reported with the file, the key path
and what was expected)::

    name = "kill-one-backend"
    description = "Kill one backend under load; clients barely notice."

    [system]                      # what the run starts (ignored with --attach)
    fleet = "demo/fleet.toml"     # a fleet file, or inline [[system.backends]] (fleet keys)
    config = "demo/lbtui.toml"    # the balancer's config file (optional)
    standby = ["api-4"]           # fleet members started but kept out of the balancer
    [system.balancer.retries]     # overrides merged over the config file, key by key
    attempts = 1

    [load]                        # open-loop load through the balancer
    rate = 200
    duration = "20s"
    connections = 64
    [[load.mix]]
    method = "POST"
    path = "/orders"
    body = '{"item": 1}'
    weight = 1

    [[timeline]]                  # actions at a time from the start of the load
    at = "5s"
    action = "kill"               # every action and its keys: lbtui/chaos/steps.py
    backend = "api-2"
    id = "kill"                   # optional: checks may name an action by id (or 1-based #)

    [[checks]]                    # hypotheses, each with a name; all must hold to pass
    name = "clients barely notice"
    kind = "error_rate_below"     # every kind and its keys: lbtui/chaos/hypotheses.py
    percent = 1

    [guardrails]                  # abort (exit 3) when the system goes too far
    error_rate_above = 50
    for = "3s"

Durations are strings with a unit (``"30s"``, ``"250ms"``, ``"2m"``): a bare number is refused,
as in the fleet file, because ``3`` could mean seconds or milliseconds.

``--duration-scale F`` shrinks or stretches the experiment's own timeline — the load's
duration, the timeline's times, fault durations and flap shapes, check windows (``from`` /
``to``) and the guardrail's hold time — and never the balancer's reaction times (its health
interval, breaker ``open_s``) nor what checks allow for them: ``within``, ``after``, ``settle``.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from lbtui import config as config_mod
from lbtui.chaos.fields import BackendName, Duration, Percent, PositiveDuration, _Strict
from lbtui.chaos.hypotheses import (
    BreakerOpensWithin,
    Check,
    NoTrafficToKilledAfter,
    TrafficResumesWithin,
    _Windowed,
)
from lbtui.chaos.steps import AddBackendStep, Fault, Step, fault_problems, step_backend
from lbtui.errors import ConfigError
from lbtui.fleet.spec import BackendSpec, is_loopback_host, load_fleet
from lbtui.inputs import loads_toml, read_config_text
from lbtui.loadgen import MAX_CONNECTIONS, MAX_RATE, RequestSpec

SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The source tree: ``demo/fleet.toml`` in a scenario is found here too."""


# --- [system] --------------------------------------------------------------------------------


class InlineBackend(_Strict):
    """A fleet backend written in the scenario (the keys of a fleet file's ``[[backend]]``)."""

    name: BackendName
    character: str = Field("", max_length=40)
    latency: Duration = 0.005
    jitter: Duration = 0.0
    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(500, ge=100, le=599)
    size: int = Field(512, ge=0, le=1 << 30)

    def spec(self) -> BackendSpec:
        return BackendSpec(
            name=self.name,
            latency_ms=self.latency * 1e3,
            jitter_ms=self.jitter * 1e3,
            error_rate=self.error_rate,
            error_status=self.error_status,
            size=self.size,
            character=self.character,
        )


class System(_Strict):
    """What the run starts: real backend processes and a balancer in front of them."""

    fleet: str | None = None
    """A fleet file (``demo/fleet.toml``): relative to the scenario, then to the current
    directory, then to lbtui's source tree."""
    backends: list[InlineBackend] | None = None
    """Inline fleet backends, instead of ``fleet``."""
    standby: list[BackendName] = Field(default_factory=list)
    """Fleet members started but not given to the balancer (for ``add_backend``)."""
    config: str | None = None
    """The balancer's TOML config (found like ``fleet``); its backends are replaced by the
    fleet's."""
    balancer: dict[str, Any] = Field(default_factory=dict)
    """Balancer config keys merged over ``config`` (``[system.balancer.retries] attempts = 0``)."""
    replicas: Annotated[int, Field(ge=1, le=8)] = 1
    """More than 1: that many balancers in front of the fleet, sharing their limits through a
    ``redis-server`` the run starts (``lbtui/demo_replicas.py``); the load, the checks and the
    timeline's actions go through the first (``replica-1``)."""

    @model_validator(mode="after")
    def _one_fleet(self) -> System:
        if self.fleet is not None and self.backends is not None:
            raise ValueError("give either fleet or backends, not both")
        return self


# --- [load] ----------------------------------------------------------------------------------


class MixEntry(_Strict):
    method: Annotated[str, Field(pattern=r"^[A-Za-z]+$")] = "GET"
    path: Annotated[str, Field(pattern=r"^/")] = "/"
    weight: Annotated[float, Field(gt=0)] = 1.0
    body: str | None = None
    """Request body (text), sent with every request of this kind."""


class Load(_Strict):
    rate: Annotated[float, Field(gt=0, le=MAX_RATE)]
    """Requests per second, open-loop."""
    duration: PositiveDuration
    connections: Annotated[int, Field(ge=1, le=MAX_CONNECTIONS)] = 64
    timeout: PositiveDuration = 5.0
    """Per-request timeout."""
    target: str | None = None
    """The balancer's listener URL; needed with ``--attach`` (or ``--target``), else the
    balancer the run starts."""
    mix: list[MixEntry] = Field(default_factory=list)
    """Kinds of request and their weights (default: ``GET /``)."""

    def request_mix(self) -> list[RequestSpec]:
        mix = self.mix or [MixEntry()]
        return [
            RequestSpec(
                m.method.upper(),
                m.path,
                m.weight,
                m.body.encode() if m.body is not None else None,
            )
            for m in mix
        ]


class Guardrails(_Strict):
    """Abort the run (exit 3) when the system goes too far, after rolling back."""

    error_rate_above: Percent | None = None
    """Client error rate (5xx and transport) in percent …"""
    p99_above_ms: Annotated[float, Field(gt=0)] | None = None
    """… or client p99 in ms …"""
    for_: Duration = Field(3.0, alias="for")
    """… above its limit for this long (over a sliding window as long)."""


class Scenario(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=80)] | None = None
    description: str = ""
    system: System = System()
    load: Load
    timeline: list[Step] = Field(default_factory=list)
    checks: Annotated[list[Check], Field(min_length=1)]
    guardrails: Guardrails = Guardrails.model_validate({})

    # -- derived --------------------------------------------------------------------------------

    def step_index(self, ref: int | str) -> int | None:
        """The 0-based index of a timeline action given as 1-based number or id."""
        if isinstance(ref, int):
            return ref - 1 if 1 <= ref <= len(self.timeline) else None
        for i, step in enumerate(self.timeline):
            if step.id == ref:
                return i
        return None

    def scaled(self, factor: float) -> Scenario:
        """The experiment with its own timeline scaled by ``factor`` (see the module doc)."""
        if factor == 1.0:
            return self

        def s(x: float | None) -> float | None:
            return None if x is None else x * factor

        load = self.load.model_copy(update={"duration": self.load.duration * factor})
        steps: list[Step] = []
        for step in self.timeline:
            update: dict[str, Any] = {"at": step.at * factor}
            if isinstance(step, Fault):
                update.update(
                    duration=s(step.duration), ramp=s(step.ramp), on=s(step.on), off=s(step.off)
                )
            steps.append(step.model_copy(update=update))
        checks: list[Check] = []
        for check in self.checks:
            if isinstance(check, _Windowed):
                check = check.model_copy(update={"from_": s(check.from_), "to": s(check.to)})
            checks.append(check)
        guard = self.guardrails.model_copy(update={"for_": self.guardrails.for_ * factor})
        return self.model_copy(
            update={"load": load, "timeline": steps, "checks": checks, "guardrails": guard}
        )


# --- resolved scenario -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioFile:
    """A validated scenario with what it refers to resolved: the fleet to start and the
    balancer config to start it with (``None`` when the scenario starts nothing)."""

    path: Path
    name: str
    scenario: Scenario
    fleet: tuple[BackendSpec, ...]
    fleet_source: str | None
    """Where the fleet came from (a file, or ``inline``)."""
    balancer: dict[str, Any] | None
    """Balancer config data, without backends (the runner adds the fleet's)."""
    config_source: str


def _find(ref: str, base: Path) -> Path | None:
    p = Path(ref)
    if p.is_absolute():
        return p if p.exists() else None
    for root in (base, Path.cwd(), SOURCE_ROOT):
        candidate = root / p
        if candidate.exists():
            return candidate
    return None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "from_":
            out += ".from" if out else "from"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _tags(union: Any, key: str) -> set[str]:
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields[key].annotation)[0] for m in members}


_TAGS = _tags(Step, "action") | _tags(Check, "kind")


def _problems(exc: ValidationError) -> list[str]:
    """Each pydantic error as ``key.path: expectation (got value)``; the tags pydantic puts in
    the path of a tagged union (``kill``, ``error_rate_below``) are left out."""
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # drop the union tag pydantic puts in the path (timeline[0].kill.backend)
        if len(loc) > 2 and loc[0] in ("timeline", "checks") and loc[2] in _TAGS:
            loc = loc[:2] + loc[3:]
        path = _key_path(loc)
        kind = err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            problems.append(f"{path}: unknown key")
        elif kind == "missing":
            problems.append(f"{path}: required key is missing")
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx") or {}
            problems.append(
                f"{path}.{ctx.get('discriminator', 'kind').strip(chr(39))}: expected one of "
                f"{ctx.get('expected_tags', '?')}, got {ctx.get('tag')!r}"
            )
        elif kind == "union_tag_not_found":
            ctx = err.get("ctx") or {}
            problems.append(
                f"{path}.{str(ctx.get('discriminator', 'kind')).strip(chr(39))}: "
                "required key is missing"
            )
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) or "got" in msg else f" (got {got!r})"
            msg = msg.replace("Input should be", "expected")
            problems.append(f"{path}: {msg[:1].lower()}{msg[1:]}{shown}")
    return problems


def _cross_checks(sc: Scenario, members: set[str] | None) -> list[str]:
    """What pydantic cannot see: references between sections."""
    problems: list[str] = []
    ids: dict[str, int] = {}
    for i, step in enumerate(sc.timeline):
        if step.id is not None:
            if step.id in ids:
                problems.append(
                    f"timeline[{i}].id: {step.id!r} is already used by timeline[{ids[step.id]}]"
                )
            ids.setdefault(step.id, i)
        if step.at >= sc.load.duration:
            problems.append(
                f"timeline[{i}].at: expected a time before the end of the load "
                f"({sc.load.duration:g} s), got {step.at:g} s"
            )
        backend = step_backend(step)
        unknown = members is not None and backend is not None and backend not in members
        if unknown and not (isinstance(step, AddBackendStep) and step.url is not None):
            problems.append(
                f"timeline[{i}].backend: no backend named {backend!r} "
                f"(known: {', '.join(sorted(members or ()))})"
            )
        if isinstance(step, Fault):
            problems.extend(fault_problems(i, step))
        if isinstance(step, AddBackendStep) and step.url is not None:
            try:
                config_mod.BackendConfig.model_validate({"name": step.backend, "url": step.url})
            except ValidationError:
                problems.append(
                    f"timeline[{i}].url: expected an http:// URL with a host and a port, "
                    f"got {step.url!r}"
                )
    names = [c.name for c in sc.checks]
    for i, name in enumerate(names):
        if names.index(name) != i:
            problems.append(
                f"checks[{i}].name: {name!r} is already used by checks[{names.index(name)}]"
            )

    def ref(
        i: int, key: str, value: int | str | None, kinds: tuple[str, ...], backend: str
    ) -> None:
        if value is None:
            if not any(s.action in kinds and step_backend(s) == backend for s in sc.timeline):
                problems.append(
                    f"checks[{i}]: no {' or '.join(kinds)} of {backend!r} in the timeline "
                    f"to measure from"
                )
            return
        idx = sc.step_index(value)
        if idx is None:
            what = f"id {value!r}" if isinstance(value, str) else f"number {value}"
            problems.append(
                f"checks[{i}].{key}: no timeline action with {what} "
                f"(the timeline has {len(sc.timeline)})"
            )
        elif kinds and sc.timeline[idx].action not in kinds:
            problems.append(
                f"checks[{i}].{key}: expected a {' or '.join(kinds)} action, "
                f"got {sc.timeline[idx].action!r}"
            )

    for i, check in enumerate(sc.checks):
        if isinstance(check, _Windowed):
            if check.from_ is not None and check.to is not None and check.to <= check.from_:
                problems.append(f"checks[{i}].to: expected a time after from ({check.from_:g} s)")
            if check.phase == "during" and not sc.timeline:
                problems.append(f"checks[{i}].phase: 'during' needs a timeline")
        backend = getattr(check, "backend", None)
        if members is not None and backend is not None and backend not in members:
            added = {s.backend for s in sc.timeline if isinstance(s, AddBackendStep)}
            if backend not in added:
                problems.append(
                    f"checks[{i}].backend: no backend named {backend!r} "
                    f"(known: {', '.join(sorted(members))})"
                )
        if isinstance(check, BreakerOpensWithin):
            ref(i, "after", check.after, (), check.backend)
        elif isinstance(check, NoTrafficToKilledAfter):
            ref(i, "kill", check.kill, ("kill", "disable", "remove_backend"), check.backend)
        elif isinstance(check, TrafficResumesWithin):
            ref(
                i,
                "action",
                check.action,
                ("restart", "enable", "add_backend", "clear_fault"),
                check.backend,
            )
    return problems


def parse_scenario(
    text: str, source: str | Path = "<scenario>", *, attach: bool = False
) -> ScenarioFile:
    """Validate scenario text; every problem is a :class:`ConfigError` naming ``source``.

    With ``attach`` the ``[system]`` section is not resolved (the run starts nothing)."""
    path = Path(source)
    src = str(source)
    raw = loads_toml(text, src)
    try:
        sc = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(src, _problems(exc)) from None
    problems: list[str] = []
    base = path.resolve().parent
    fleet: tuple[BackendSpec, ...] = ()
    fleet_source: str | None = None
    balancer: dict[str, Any] | None = None
    config_source = "defaults"
    system = sc.system
    if not attach:
        if system.backends is not None:
            fleet = tuple(b.spec() for b in system.backends)
            fleet_source = "inline"
            names = [b.name for b in fleet]
            for i, n in enumerate(names):
                if names.index(n) != i:
                    problems.append(f"system.backends[{i}].name: {n!r} is already used")
        elif system.fleet is not None:
            found = _find(system.fleet, base)
            if found is None:
                problems.append(f"system.fleet: file not found: {system.fleet!r}")
            else:
                try:
                    fleet = load_fleet(found).backends
                except ConfigError as exc:
                    problems.append(f"system.fleet: {exc}")
                fleet_source = str(found)
        else:
            problems.append(
                "system: expected fleet = FILE or [[system.backends]] (or run with --attach URL)"
            )
        members = {b.name for b in fleet}
        for i, name in enumerate(system.standby):
            if fleet and name not in members:
                problems.append(f"system.standby[{i}]: no fleet backend named {name!r}")
        if fleet and len(set(system.standby)) >= len(members):
            problems.append("system.standby: at least one fleet backend must be in the balancer")
        data: dict[str, Any] = {}
        if system.config is not None:
            found = _find(system.config, base)
            if found is None:
                problems.append(f"system.config: file not found: {system.config!r}")
            else:
                try:
                    data = config_mod.read_toml(found)
                except ConfigError as exc:
                    problems.append(f"system.config: {exc}")
                data.setdefault("base_dir", str(found.resolve().parent))
                config_source = str(found)
        if "backends" in system.balancer or "routes" in system.balancer:
            problems.append(
                "system.balancer: backends and routes come from the fleet; "
                "list them in the fleet instead"
            )
        else:
            try:
                config_mod.from_dict(dict(system.balancer), "overrides")
            except ConfigError as exc:
                problems.extend(f"system.balancer.{p}" for p in exc.problems)
        merged = _merge(data, system.balancer)
        merged.pop("backends", None)
        merged.pop("routes", None)
        merged.setdefault("listener", {})["address"] = "127.0.0.1:0"
        merged.setdefault("admin", {})["address"] = "127.0.0.1:0"
        if not problems:
            try:
                config_mod.from_dict(merged, config_source)
            except ConfigError as exc:
                problems.extend(f"system.config: {config_source}: {p}" for p in exc.problems)
        balancer = merged
        member_names: set[str] | None = members if fleet else None
    else:
        member_names = None
    if sc.load.target is not None:
        problems.extend(_check_target(sc.load.target, "load.target"))
    problems.extend(_cross_checks(sc, member_names))
    if problems:
        raise ConfigError(src, problems)
    return ScenarioFile(
        path=path,
        name=sc.name or path.stem,
        scenario=sc,
        fleet=fleet,
        fleet_source=fleet_source,
        balancer=balancer,
        config_source=config_source,
    )


def _check_target(url: str, key: str) -> list[str]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return [f"{key}: expected an http:// URL with a host, got {url!r}"]
    if not is_loopback_host(parts.hostname):
        return [f"{key}: expected a loopback host (127.0.0.1, localhost, ::1), got {url!r}"]
    return []


def load_scenario(path: str | Path, *, attach: bool = False) -> ScenarioFile:
    """Read and validate a scenario file (:class:`ConfigError` on any problem)."""
    p = Path(path)
    text = read_config_text(p)  # at most 1 MiB
    return parse_scenario(text, p, attach=attach)
