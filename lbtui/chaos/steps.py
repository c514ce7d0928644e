"""A scenario's ``[[timeline]]``: what to do, to which backend, and when.

Each step is a tagged table (``action = "kill"``) validated strictly; ``step_action`` turns it
into the control plane's own :data:`~lbtui.control.model.Action` (``lbtui.control.interface.
apply`` then carries it out on any ``Control``), except ``load_rate``, which the runner does on
its load generator. A fault step speaks the scenario's words (``delay = "200ms"``, ``on`` /
``off``) and becomes a :class:`~lbtui.core.faults.FaultSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field

from lbtui.chaos.fields import BackendName, Duration, Percent, PositiveDuration, _Strict
from lbtui.config import Algorithm
from lbtui.control.model import (
    Action,
    AddBackend,
    ClearFault,
    FaultSpec,
    Figure,
    FleetKill,
    FleetKnobs,
    FleetRestart,
    ForceBreaker,
    RemoveBackend,
    ReplicaKill,
    ReplicaRestart,
    SetAdmin,
    SetAlgorithm,
    SetFault,
    SetLimits,
    SetWeight,
    StoreStart,
    StoreStop,
)
from lbtui.loadgen import MAX_RATE


class _Step(_Strict):
    at: Duration
    """When, from the start of the load."""
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    label: str | None = None
    """Shown on the chart instead of the generated description."""


class Kill(_Step):
    """SIGKILL a fleet backend's process."""

    action: Literal["kill"]
    backend: BackendName


class Restart(_Step):
    """Start a fleet backend's process again (on the port it had)."""

    action: Literal["restart"]
    backend: BackendName


FaultKindName = Literal["down", "delay", "abort", "hang", "reset", "bandwidth"]


class Fault(_Step):
    """A proxy-side fault on one backend (``lbtui.core.faults``)."""

    action: Literal["fault"]
    backend: BackendName
    fault: FaultKindName
    percent: Percent = 100.0
    duration: PositiveDuration | None = None
    """It ends by itself after this long (scaled)."""
    delay: Duration | None = None
    """delay: the added latency."""
    jitter: Duration | None = None
    ramp: PositiveDuration | None = None
    """delay: grows from 0 to ``delay`` over this long (scaled)."""
    status: Annotated[int, Field(ge=200, le=599)] | None = None
    after_bytes: Annotated[int, Field(ge=0)] | None = None
    kbps: Annotated[float, Field(gt=0)] | None = None
    on: PositiveDuration | None = None
    """flap: on for this long … (scaled)"""
    off: PositiveDuration | None = None
    """… then off for this long, repeating (scaled)."""
    first_n: Annotated[int, Field(ge=1)] | None = None

    def spec(self) -> FaultSpec:
        """The fault as the balancer takes it (durations in seconds, delays in ms)."""
        return FaultSpec(
            kind=self.fault,  # type: ignore[arg-type]  # FaultSpec converts the name
            percent=self.percent,
            duration_s=self.duration,
            ms=None if self.delay is None else self.delay * 1e3,
            jitter_ms=None if self.jitter is None else self.jitter * 1e3,
            ramp_s=self.ramp,
            status=self.status,
            after_bytes=self.after_bytes,
            kbps=self.kbps,
            on_s=self.on,
            off_s=self.off,
            first_n=self.first_n,
        )


class ClearFaultStep(_Step):
    action: Literal["clear_fault"]
    backend: BackendName


class Drain(_Step):
    """No new requests to the backend; those in flight finish."""

    action: Literal["drain"]
    backend: BackendName


class Disable(_Step):
    action: Literal["disable"]
    backend: BackendName


class Enable(_Step):
    action: Literal["enable"]
    backend: BackendName


class Weight(_Step):
    action: Literal["weight"]
    backend: BackendName
    weight: Annotated[float, Field(ge=0, le=1000)]


class AlgorithmStep(_Step):
    action: Literal["algorithm"]
    algorithm: Algorithm


class Limits(_Step):
    """Change some ``[limits]`` keys (``limits = { rps = 100, burst = 20 }``)."""

    action: Literal["limits"]
    limits: dict[str, Figure]


class AddBackendStep(_Step):
    """Add a backend to the balancer: a standby fleet member, or any ``url``."""

    action: Literal["add_backend"]
    backend: BackendName
    url: str | None = None
    weight: Annotated[float, Field(ge=0, le=1000)] = 1.0


class RemoveBackendStep(_Step):
    action: Literal["remove_backend"]
    backend: BackendName


class Breaker(_Step):
    """Force a backend's breaker ``open``, ``closed``, ``disabled``, or back to ``auto``."""

    action: Literal["breaker"]
    backend: BackendName
    mode: Literal["open", "closed", "disabled", "auto"]


ReplicaName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@\-]+$")]


class ReplicaKillStep(_Step):
    """SIGKILL one of the balancer replicas (``[system] replicas``, ``lbtui demo --replicas``);
    the first replica, which takes these actions, cannot be killed."""

    action: Literal["replica_kill"]
    replica: ReplicaName


class ReplicaRestartStep(_Step):
    """Start a killed replica again, on its port."""

    action: Literal["replica_restart"]
    replica: ReplicaName


class StoreStopStep(_Step):
    """Stop the ``redis-server`` the replicas share their limits through."""

    action: Literal["store_stop"]


class StoreStartStep(_Step):
    """Start the limit store again (empty)."""

    action: Literal["store_start"]


class Knobs(_Step):
    """Change a fleet backend's own behaviour (real slowness, real errors, hang)."""

    action: Literal["knobs"]
    backend: BackendName
    latency: Duration | None = None
    jitter: Duration | None = None
    error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    error_status: Annotated[int, Field(ge=100, le=599)] | None = None
    size: Annotated[int, Field(ge=0)] | None = None
    hang: bool | None = None

    def knobs(self) -> dict[str, float | int | bool]:
        out: dict[str, float | int | bool] = {}
        if self.latency is not None:
            out["latency_ms"] = self.latency * 1e3
        if self.jitter is not None:
            out["jitter_ms"] = self.jitter * 1e3
        for key in ("error_rate", "error_status", "size", "hang"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class LoadRate(_Step):
    """Change the load's arrival rate from now on (a burst, a lull)."""

    action: Literal["load_rate"]
    rate: Annotated[float, Field(ge=0, le=MAX_RATE)]


Step = Annotated[
    Kill
    | Restart
    | Fault
    | ClearFaultStep
    | Drain
    | Disable
    | Enable
    | Weight
    | AlgorithmStep
    | Limits
    | AddBackendStep
    | RemoveBackendStep
    | Breaker
    | Knobs
    | ReplicaKillStep
    | ReplicaRestartStep
    | StoreStopStep
    | StoreStartStep
    | LoadRate,
    Field(discriminator="action"),
]


def step_backend(step: Step) -> str | None:
    return getattr(step, "backend", None)


def describe_step(step: Step) -> str:
    """One short line for people: ``kill api-2``, ``fault abort 503 on 100% → api-4``."""
    if step.label:
        return step.label
    match step:
        case Fault():
            return f"{step.spec().describe()} → {step.backend}"
        case Weight():
            return f"weight {step.backend} = {step.weight:g}"
        case AlgorithmStep():
            return f"algorithm {step.algorithm}"
        case Limits():
            return "limits " + ", ".join(f"{k}={v}" for k, v in step.limits.items())
        case Breaker():
            return f"breaker {step.backend} {step.mode}"
        case Knobs():
            return f"knobs {step.backend} " + ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in step.knobs().items()
            )
        case LoadRate():
            return f"load rate {step.rate:g}/s"
        case ReplicaKillStep() | ReplicaRestartStep():
            return f"{step.action.replace('_', ' ')} {step.replica}"
        case _:
            return f"{step.action.replace('_', ' ')} {step_backend(step) or ''}".strip()


def step_action(step: Step, urls: Mapping[str, str]) -> Action | None:
    """The control-plane action of ``step`` (``None`` for ``load_rate``, which the runner
    carries out on its load generator). ``urls``: fleet members' URLs, for ``add_backend``."""
    match step:
        case Kill():
            return FleetKill(backend=step.backend)
        case Restart():
            return FleetRestart(backend=step.backend)
        case Fault():
            return SetFault(backend=step.backend, fault=step.spec())
        case ClearFaultStep():
            return ClearFault(backend=step.backend)
        case Drain():
            return SetAdmin(backend=step.backend, state="draining")
        case Disable():
            return SetAdmin(backend=step.backend, state="disabled")
        case Enable():
            return SetAdmin(backend=step.backend, state="active")
        case Weight():
            return SetWeight(backend=step.backend, weight=step.weight)
        case AlgorithmStep():
            return SetAlgorithm(algorithm=step.algorithm)
        case Limits():
            return SetLimits(limits=dict(step.limits))
        case AddBackendStep():
            url = step.url or urls.get(step.backend)
            if url is None:
                raise ValueError(f"add_backend {step.backend}: no url and no fleet member")
            return AddBackend(name=step.backend, url=url, weight=step.weight)
        case RemoveBackendStep():
            return RemoveBackend(backend=step.backend)
        case Breaker():
            return ForceBreaker(backend=step.backend, mode=step.mode)
        case Knobs():
            return FleetKnobs(backend=step.backend, knobs=step.knobs())
        case ReplicaKillStep():
            return ReplicaKill(replica=step.replica)
        case ReplicaRestartStep():
            return ReplicaRestart(replica=step.replica)
        case StoreStopStep():
            return StoreStop()
        case StoreStartStep():
            return StoreStart()
        case LoadRate():
            return None
    raise TypeError(f"not a step: {step!r}")  # pragma: no cover - the union is closed


def step_end(step: Step) -> float:
    """When the step's effect ends by itself (a fault's duration), else its time."""
    if isinstance(step, Fault) and step.duration is not None:
        return step.at + step.duration
    return step.at


_FAULT_KEYS = {
    "delay": ("delay", "jitter", "ramp"),
    "abort": ("status",),
    "reset": ("after_bytes",),
    "bandwidth": ("kbps",),
}


def fault_problems(i: int, step: Fault) -> list[str]:
    """A fault's keys in the scenario's own words (``delay``, not FaultSpec's ``ms``)."""
    where = f"timeline[{i}]"
    own = _FAULT_KEYS.get(step.fault, ())
    out = [
        f"{where}.{key}: only for {' or '.join(k for k, v in _FAULT_KEYS.items() if key in v)} "
        f"faults, not {step.fault}"
        for key in ("delay", "jitter", "ramp", "status", "after_bytes", "kbps")
        if getattr(step, key) is not None and key not in own
    ]
    if step.fault == "delay" and not step.delay:
        out.append(f'{where}.delay: a delay fault needs delay = "200ms" (above 0)')
    if step.fault == "bandwidth" and step.kbps is None:
        out.append(f"{where}.kbps: a bandwidth fault needs kbps (kilobytes per second)")
    if (step.on is None) != (step.off is None):
        out.append(f"{where}.{'off' if step.off is None else 'on'}: a flap needs both on and off")
    if not out:
        try:
            step.spec()
        except ValueError as exc:
            out.append(f"{where}: {exc}")
    return out
