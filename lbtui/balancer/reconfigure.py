"""Carrying out a reload's changes (``config/diff.py``) on a running balancer.

Each change goes through what already changes that thing at run time, so a reload is the same
as the operator actions it stands for, with the same events: a backend added or removed through
:class:`~lbtui.balancer.operator.Operator` (a removed backend leaves every pool at once and the
requests it has finish on it, as ``DELETE /api/v1/backends/NAME`` does; its kept-alive upstream
connections close as they come back idle), a weight through ``set_weight``, the algorithm
through ``change_algorithm``, limits through ``set_limits``. What has no operator action is
rebuilt in place here: breakers (the new settings start from closed), the ejection settings
(ejections in force stay), health states, the retry policy and budget (retries in flight keep
their count), routes and fallbacks. Nothing here touches a listener or a connection: requests
in flight and kept-alive clients carry on.

The whole list runs in one call on the event loop, between two requests; with several
processes, every worker runs the same list (``operations.Reload`` is replicated like any
operation), so all of them serve the new config from their next request on.
"""

from __future__ import annotations

from lbtui.balancer import operations as ops
from lbtui.balancer.operator import Operator
from lbtui.balancer.pipeline import Pipeline
from lbtui.config import RetriesConfig
from lbtui.config.diff import (
    AlgorithmSwapped,
    BackendAdded,
    BackendRemoved,
    BackendReplaced,
    BackendReweighted,
    Change,
    NeedsRestart,
    TableChanged,
    summary,
)
from lbtui.core.ejection import EjectionConfig as CoreEjectionConfig
from lbtui.core.events import ConfigReloaded
from lbtui.core.retry import RetryPolicy


def apply_reload(operator: Operator, pipeline: Pipeline, op: ops.Reload) -> None:
    """Make the balancer serve ``op.config``, changing what ``op.changes`` lists and nothing
    else; one ``ConfigReloaded`` event says what that was."""
    state = operator.state
    config = op.config
    state.config = config  # backends added below take their breakers from the new tables
    membership = _backends(operator, op.changes)
    tables = {c.table for c in op.changes if isinstance(c, TableChanged)}
    now = operator.clock()
    if "limits" in tables:
        operator.set_limits(config.limits)
    if "breaker" in tables:
        state.configure_failures()
        for backend in state.backends.values():
            state.arm_breaker(backend, now)
    if "ejection" in tables:
        e = config.ejection
        state.outliers.config = CoreEjectionConfig(
            consecutive_failures=e.consecutive_failures,
            base_s=e.base_s,
            max_s=e.max_s,
            max_percent=e.max_percent,
            panic_percent=e.panic_percent,
        )
    if "health" in tables:
        for backend in state.backends.values():
            state.arm_health(backend, now)
    if "retries" in tables:
        _retries(pipeline, config.retries, config.proxy.max_attempts)
    if membership or tables & {"groups", "routes", "fallback", "balancer"}:
        state.configure_routing()
    if "groups" in tables:  # a group's breaker or health table may have changed
        for backend in state.backends.values():
            if "breaker" not in tables:
                state.arm_breaker(backend, now)
            if "health" not in tables:
                state.arm_health(backend, now)
    state.refresh_pools(now)
    _announce(operator, list(op.changes))


def _backends(operator: Operator, changes: tuple[Change, ...]) -> bool:
    """The backends' changes and the algorithm; whether any backend came or went."""
    backends = operator.state.backends
    membership = False
    for change in changes:
        match change:
            case BackendRemoved(name=name):
                if name in backends:  # unless an operator removed it since
                    operator.remove_backend(name)
                membership = True
            case BackendReplaced(config=bc) | BackendAdded(config=bc):
                if bc.name in backends:  # replaced, or an operator added it since
                    operator.remove_backend(bc.name)
                operator.add_backend(bc)
                membership = True
            case BackendReweighted(name=name, new=weight):
                if name in backends:
                    operator.set_weight(name, weight)
            case AlgorithmSwapped(new=algorithm):
                operator.change_algorithm(algorithm)
    return membership


def _retries(pipeline: Pipeline, r: RetriesConfig, max_attempts: int) -> None:
    policy = RetryPolicy(
        attempts=r.attempts,
        per_try_timeout_s=r.per_try_timeout_ms / 1e3 if r.per_try_timeout_ms else None,
        retry_on_status=frozenset(r.retry_on_status),
        retry_buffer_bytes=r.retry_buffer_bytes,
        connect_attempts=max_attempts,
    )
    pipeline.retry_policy = policy
    pipeline.retry_statuses = policy.retry_on_status
    pipeline.retry_budget.reconfigure(r.budget_percent, r.budget_min)
    attempts = pipeline.attempts
    attempts.per_try_timeout_s = policy.per_try_timeout_s
    attempts.read_timeout_s = policy.per_try_timeout_s or pipeline.upstream.read_timeout_s


def _announce(operator: Operator, changes: list[Change]) -> None:
    restart = [c for c in changes if isinstance(c, NeedsRestart)]
    operator.events.emit(
        ConfigReloaded(
            message=f"config reloaded: {summary(changes)}",
            changes=len(changes) - len(restart),
            not_applied=len(restart),
        )
    )
