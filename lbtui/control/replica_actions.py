"""The chaos actions on a demo's replicas and their limit store, carried out and recorded.

``lbtui demo --replicas`` gives the first replica's ``LocalControl`` the demo's
:class:`~lbtui.fleet.replicas.ReplicaSet`; these actions then reach the other replicas' processes
and the ``redis-server`` they share, and each becomes a :class:`ReplicaChanged` event on that
replica's timeline (a console over every replica sees it once, tagged with that replica).
Without a replica set they are refused with the reason, as fleet actions are without a fleet.
"""

from __future__ import annotations

from lbtui.control.errors import NotFound, Unavailable
from lbtui.control.model import ReplicaKill, ReplicaRestart, StoreStart, StoreStop
from lbtui.core.events import EventRing, ReplicaChanged
from lbtui.fleet.replicas import ReplicaError, ReplicaSet

ReplicaAction = ReplicaKill | ReplicaRestart | StoreStop | StoreStart


async def replica_act(
    replicas: ReplicaSet | None, action: ReplicaAction, events: EventRing
) -> None:
    if replicas is None:
        raise Unavailable("no replicas here: replica and store actions need lbtui demo --replicas")
    try:
        match action:
            case ReplicaKill(replica=name):
                _known(replicas, name)
                pid = await replicas.kill(name)
                event = ReplicaChanged(
                    message=f"replica {name} killed (SIGKILL, pid {pid})",
                    target=name,
                    change="killed",
                    pid=pid,
                )
            case ReplicaRestart(replica=name):
                _known(replicas, name)
                r = await replicas.restart(name)
                started = r.proc.pid if r.proc is not None else None
                event = ReplicaChanged(
                    message=f"replica {name} started again (pid {started}, restart {r.restarts})",
                    target=name,
                    change="restarted",
                    pid=started,
                )
            case StoreStop():
                pid = await replicas.stop_store()
                event = ReplicaChanged(
                    message=f"limit store stopped (redis-server pid {pid})",
                    target="store",
                    change="stopped",
                    pid=pid,
                )
            case StoreStart():
                pid = await replicas.start_store()
                event = ReplicaChanged(
                    message=f"limit store started again, empty (redis-server pid {pid})",
                    target="store",
                    change="started",
                    pid=pid,
                )
    except ReplicaError as exc:
        raise Unavailable(str(exc)) from None
    events.emit(event)


def _known(replicas: ReplicaSet, name: str) -> None:
    if name not in replicas.replicas:
        known = ", ".join(sorted(replicas.replicas)) or "none"
        raise NotFound(f"no replica named {name!r} that this balancer can act on (known: {known})")
