"""The actions on a demo's balancer replicas and their limit store (``lbtui demo --replicas``),
members of :data:`lbtui.control.model.Action` like every other action; carried out by
``replica_actions.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaKill:
    """SIGKILL one of a demo's balancer replicas (``lbtui demo --replicas``)."""

    kind: Literal["replica_kill"] = "replica_kill"
    replica: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaRestart:
    """Start a killed replica again, on the port it had."""

    kind: Literal["replica_restart"] = "replica_restart"
    replica: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStop:
    """Stop the ``redis-server`` a demo's replicas share their limits through."""

    kind: Literal["store_stop"] = "store_stop"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStart:
    """Start the demo's limit store again (empty, as Redis without persistence comes back)."""

    kind: Literal["store_start"] = "store_start"
