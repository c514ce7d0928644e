"""What the data plane can be asked to change, as typed operations: one frozen dataclass each.

An operation is an operator's ``Action`` (``control/model.py``) once the control plane has
validated and resolved it (a ``BackendConfig`` for a new backend, whole ``LimitsConfig`` for
changed limits, the owner of a fault), plus the two changes no operator sends: an active health
check's result and a breaker trip or ejection adopted from another process.
:meth:`Operator.apply <lbtui.balancer.operator.Operator.apply>` carries one out; with several
processes serving, the primary sends the same object to every worker, which applies it too
(``workers.py``) — no method names, no argument tuples.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbtui.balancer.pool import AdminState
from lbtui.config import BackendConfig, Config, LimitsConfig
from lbtui.config.diff import Change
from lbtui.core.faults import FaultSpec


@dataclass(frozen=True, slots=True)
class AddBackend:
    config: BackendConfig
    group: str | None = None
    """The target group it joins (None: the default one)."""


@dataclass(frozen=True, slots=True)
class RemoveBackend:
    backend: str


@dataclass(frozen=True, slots=True)
class SetWeight:
    backend: str
    weight: float


@dataclass(frozen=True, slots=True)
class SetAdmin:
    backend: str
    admin: AdminState


@dataclass(frozen=True, slots=True)
class ForceBreaker:
    backend: str
    mode: str
    """``open``, ``closed``, ``disabled`` or ``auto``."""


@dataclass(frozen=True, slots=True)
class SetFault:
    backend: str
    spec: FaultSpec
    owner: str | None = None
    """Who set it (a console session, a chaos run): ``ClearFaults(owner)`` undoes theirs."""


@dataclass(frozen=True, slots=True)
class ClearFault:
    backend: str


@dataclass(frozen=True, slots=True)
class ClearFaults:
    owner: str | None = None
    """Only this owner's faults; None: every fault."""


@dataclass(frozen=True, slots=True)
class SetAlgorithm:
    algorithm: str


@dataclass(frozen=True, slots=True)
class SetLimits:
    limits: LimitsConfig


@dataclass(frozen=True, slots=True)
class SetForward:
    route: str
    weights: tuple[tuple[str, float], ...]
    """New forward weights by group; groups left out keep theirs."""


@dataclass(frozen=True, slots=True)
class HealthResult:
    """An active check finished (the checks run in the primary process only)."""

    backend: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Reload:
    """The config file read again: ``changes`` (``config/diff.py``) carried out to reach
    ``config``. The primary computes the difference once; every worker applies the same list."""

    config: Config
    changes: tuple[Change, ...]


Operation = (
    AddBackend
    | RemoveBackend
    | SetWeight
    | SetAdmin
    | ForceBreaker
    | SetFault
    | ClearFault
    | ClearFaults
    | SetAlgorithm
    | SetLimits
    | SetForward
    | HealthResult
    | Reload
)
"""Everything the data plane can be asked to change (and sends on to its workers)."""
