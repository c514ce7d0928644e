"""The console's actions on the balancer: each key that changes something (kill, faults,
restore, drain, disable, weight, breaker, algorithm, limits, chaos), its confirmation or form,
and the worker that sends the typed ``Action`` through the ``Control``.

A mixin of :class:`~lbtui.tui.app.LbtuiApp`, split from it so that the app keeps its layout,
feeds and views, and this the operator's flows: each action asks (a dialog screen) then acts
(a worker), and a failure comes back as a toast with the control's message. A read-only
console refuses every one of them here (``_refused``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast, get_args

from textual.app import App

from lbtui.config import Algorithm
from lbtui.control.errors import ControlError
from lbtui.control.interface import Control
from lbtui.control.model import (
    BackendView,
    BreakerMode,
    ClearFault,
    FaultKind,
    FaultSpec,
    Figure,
    FleetKill,
    FleetRestart,
    ForceBreaker,
    SetAdmin,
    SetAlgorithm,
    SetFault,
    SetForward,
    SetLimits,
    SetWeight,
    Snapshot,
)
from lbtui.tui import forms
from lbtui.tui.feed import (
    describe_error,
)
from lbtui.tui.screens.chaos import ChaosScreen, ChaosTarget, scenario_files
from lbtui.tui.screens.choice import ChoiceScreen
from lbtui.tui.screens.confirm import ConfirmScreen
from lbtui.tui.screens.form import FormScreen
from lbtui.tui.view import fault_active, process_dead
from lbtui.tui.widgets.backends import BackendTable

ACTION_TIMEOUT_S = 10.0

KEY_KINDS: dict[str, str] = {
    "slow": "set_fault",
    "errors": "set_fault",
    "hang": "set_fault",
    "breaker": "force_breaker",
    "algorithm": "set_algorithm",
    "limits": "set_limits",
}
"""The action kind behind each key that a balancer may not be able to do: greyed in the key
bar when the snapshot says so (``Snapshot.unavailable``), and answered with why."""

BREAKER_CHOICES = (
    ("auto", "auto — the breaker decides (normal)"),
    ("open", "open — reject every request to it (forced)"),
    ("closed", "closed — admit every request (forced)"),
    ("disabled", "disabled — no breaker at all"),
)


class OperatorActions(App[None]):
    """The actions that change the balancer; the app provides what they read."""

    control: Control
    chaos: ChaosTarget | None
    read_only: bool
    snapshot: Snapshot | None
    table: BackendTable

    def _selected_backend(self) -> BackendView | None:
        name = self.table.selected
        if self.snapshot is None or name is None:
            self.notify("no backend selected", severity="warning")
            return None
        try:
            return self.snapshot.backend(name)
        except KeyError:
            self.notify(f"{name} is gone", severity="warning")
            return None

    def _refused(self) -> bool:
        if self.read_only:
            self.notify(
                "read-only console (--read-only): this action is refused; nothing was changed",
                title="read-only",
                severity="warning",
            )
        return self.read_only

    def _unavailable(self, kind: str) -> bool:
        """Whether the balancer cannot do ``kind`` (HAProxy cannot delay): says why, as a
        toast, instead of opening a form whose answer would be refused."""
        reason = self.snapshot.unavailable.get(kind) if self.snapshot is not None else None
        if reason:
            self.notify(reason, title="not available on this balancer", severity="warning")
        return bool(reason)

    def _act(self, label: str, call: Callable[[], Awaitable[object]]) -> None:
        """Run ``call`` in a worker; its outcome shows in the event log, a failure as a toast."""
        if self._refused():
            return
        self.run_worker(self._run_action(label, call), group="actions", exit_on_error=False)

    async def _run_action(self, label: str, call: Callable[[], Awaitable[object]]) -> None:
        try:
            async with asyncio.timeout(ACTION_TIMEOUT_S):
                await call()
        except ControlError as exc:
            self.notify(exc.message, title=f"{label} failed", severity="error", timeout=8)
        except Exception as exc:
            self.notify(describe_error(exc), title=f"{label} failed", severity="error", timeout=8)
        else:
            self.notify(label, title="✓ done", timeout=2)

    def _confirm(self, question: str, detail: str, then: Callable[[], None]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(ConfirmScreen(question, detail), answered)

    def action_kill(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name
        if b.server is not None:
            self._confirm(
                f"Put {name} in MAINT?",
                "HAProxy cannot kill a server: maintenance takes it out of the rotation "
                "(set server state maint); r makes it ready again.",
                lambda: self._act(
                    f"maint {name}",
                    lambda: self.control.act(SetAdmin(backend=name, state="disabled")),
                ),
            )
            return
        if b.process is not None:
            if not b.process.alive:
                self.notify(f"{name}'s process is already dead; r restarts it")
                return
            self._confirm(
                f"Kill {name}?",
                f"SIGKILL its process (pid {b.process.pid}); r restarts it.",
                lambda: self._act(
                    f"kill {name}", lambda: self.control.act(FleetKill(backend=name))
                ),
            )
        else:
            self._confirm(
                f"Take {name} down?",
                "Not a local process: a proxy-side 'down' fault fails every request to it "
                "without contacting it; r restores.",
                lambda: self._act(
                    f"down {name}",
                    lambda: self.control.act(
                        SetFault(backend=name, fault=FaultSpec(kind=FaultKind.DOWN))
                    ),
                ),
            )

    def _fault_form(
        self,
        title: str,
        form: tuple[forms.FormField, ...],
        build: Callable[[dict[str, Any]], FaultSpec],
    ) -> None:
        if self._refused() or self._unavailable("set_fault"):
            return
        if (b := self._selected_backend()) is None:
            return
        name = b.name

        def done(spec: FaultSpec | None) -> None:
            if spec is not None:
                self._act(
                    f"{spec.kind} fault on {name}",
                    lambda: self.control.act(SetFault(backend=name, fault=spec)),
                )

        note = "replaces its current fault" if fault_active(b) else ""
        self.push_screen(FormScreen(f"{title} {name}", form, note, build), done)

    def action_slow(self) -> None:
        self._fault_form("Slow down", forms.SLOW_FORM, forms.delay_spec)

    def action_errors(self) -> None:
        self._fault_form("Inject errors on", forms.ERRORS_FORM, forms.abort_spec)

    def action_hang(self) -> None:
        self._fault_form("Hang", forms.HANG_FORM, forms.hang_spec)

    def action_restore(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name
        steps: list[Callable[[], Awaitable[object]]] = []
        if b.server is not None and b.admin != "active":
            steps.append(lambda: self.control.act(SetAdmin(backend=name, state="active")))
        if fault_active(b):
            steps.append(lambda: self.control.act(ClearFault(backend=name)))
        if process_dead(b):
            steps.append(lambda: self.control.act(FleetRestart(backend=name)))
        if not steps:
            what = (
                "is ready"
                if b.server is not None
                else "has no fault and its process (if any) is alive"
            )
            self.notify(f"{name} {what}")
            return

        async def restore() -> None:
            for step in steps:
                await step()

        self._act(f"restore {name}", restore)

    def action_drain(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name
        if b.admin == "draining":
            self._act(
                f"undrain {name}", lambda: self.control.act(SetAdmin(backend=name, state="active"))
            )
        else:
            self._act(
                f"drain {name}", lambda: self.control.act(SetAdmin(backend=name, state="draining"))
            )

    def action_toggle_disable(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name
        if b.admin == "disabled":
            self._act(
                f"enable {name}", lambda: self.control.act(SetAdmin(backend=name, state="active"))
            )
            return
        self._confirm(
            f"Disable {name}?",
            "It gets no requests until enabled again (x).",
            lambda: self._act(
                f"disable {name}",
                lambda: self.control.act(SetAdmin(backend=name, state="disabled")),
            ),
        )

    def action_weight(self) -> None:
        if self._refused() or (b := self._selected_backend()) is None:
            return
        name = b.name

        def done(values: dict[str, Any] | None) -> None:
            if values is None:
                return
            weight = float(values["weight"])

            def send() -> None:
                self._act(
                    f"weight {name} = {weight:g}",
                    lambda: self.control.act(SetWeight(backend=name, weight=weight)),
                )

            if weight == 0:
                self._confirm(f"Set {name}'s weight to 0?", "It gets no new requests.", send)
            else:
                send()

        self.push_screen(
            FormScreen(f"Weight of {name}", forms.weight_form(b.weight_configured)), done
        )

    def action_breaker(self) -> None:
        if self._refused() or self._unavailable("force_breaker"):
            return
        if (b := self._selected_backend()) is None:
            return
        name = b.name
        state = b.breaker.state if b.breaker is not None else None
        current = {"forced_open": "open", "disabled": "disabled"}.get(state or "", "auto")

        def chosen(mode: str | None) -> None:
            if mode is None:
                return
            m: BreakerMode = mode  # type: ignore[assignment]

            def send() -> None:
                self._act(
                    f"breaker {name} → {m}",
                    lambda: self.control.act(ForceBreaker(backend=name, mode=m)),
                )

            if m == "open":
                self._confirm(
                    f"Force {name}'s breaker open?", "Every request to it is rejected.", send
                )
            else:
                send()

        self.push_screen(ChoiceScreen(f"Breaker of {name}", BREAKER_CHOICES, current), chosen)

    def action_algorithm(self) -> None:
        if self._refused() or self._unavailable("set_algorithm"):
            return
        current = self.snapshot.algorithm if self.snapshot is not None else None
        choices = [(a, a) for a in get_args(Algorithm)]

        def chosen(algo: str | None) -> None:
            if algo is not None and algo != current:
                self._act(
                    f"algorithm → {algo}",
                    lambda: self.control.act(SetAlgorithm(algorithm=cast(Algorithm, algo))),
                )

        self.push_screen(ChoiceScreen("Balancing algorithm", choices, current), chosen)

    def action_forward(self) -> None:
        """Shift a route's traffic between its groups: choose the route, then its weights."""
        if self._refused() or self._unavailable("set_forward"):
            return
        routes = [r for r in self.snapshot.routes if r.forward] if self.snapshot else []
        if not routes:
            self.notify("no route forwards to groups here", severity="warning")
            return
        by_name = {r.name: r for r in routes}

        def weights_for(name: str | None) -> None:
            if name is None:
                return
            route = by_name[name]

            def done(values: dict[str, Any] | None) -> None:
                if values is None:
                    return
                weights = {g: float(values[f"w{i}"]) for i, g in enumerate(route.forward)}
                text = ", ".join(f"{g}={w:g}" for g, w in weights.items())

                def send() -> None:
                    self._act(
                        f"route {name}: {text}",
                        lambda: self.control.act(SetForward(route=name, weights=weights)),
                    )

                if not any(weights.values()):
                    self._confirm(f"Send nothing through {name}?", "Every weight is 0.", send)
                else:
                    send()

            self.push_screen(
                FormScreen(f"Forward weights of {name}", forms.forward_form(route.forward)), done
            )

        if len(routes) == 1:
            weights_for(routes[0].name)
            return
        choices = [(r.name, f"{r.name}  {r.match}") for r in routes]
        self.push_screen(ChoiceScreen("Route", choices, routes[0].name), weights_for)

    def action_chaos(self) -> None:
        """Run a scenario file against this balancer and watch its progress and verdict."""
        if self._refused():
            return
        if self.chaos is None:
            self.notify(
                "chaos runs need the balancer's listener: lbtui attach URL --target LISTENER_URL",
                severity="warning",
            )
            return
        target = self.chaos
        files = scenario_files(target.scenario_dir)
        if not files:
            self.notify(f"no scenario files in {target.scenario_dir}", severity="warning")
            return
        choices = [(str(f), f.stem) for f in files]

        def chosen(path: str | None) -> None:
            if path is not None:
                self.push_screen(ChaosScreen(target, Path(path)))

        self.push_screen(ChoiceScreen("Run a chaos experiment", choices), chosen)

    def action_limits(self) -> None:
        if self._refused() or self._unavailable("set_limits"):
            return
        config: dict[str, Any] = dict(self.snapshot.limits.config) if self.snapshot else {}

        def done(values: dict[str, Any] | None) -> None:
            if values is None:
                return
            changes = forms.limits_changes(values, config)
            if not changes:
                self.notify("limits unchanged")
                return
            text = ", ".join(f"{k}={v}" for k, v in changes.items())
            self._act(
                f"limits {text}",
                lambda: self.control.act(SetLimits(limits=cast(dict[str, Figure], changes))),
            )

        self.push_screen(FormScreen("Limits", forms.limits_form(config), "empty = no limit"), done)
