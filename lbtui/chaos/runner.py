"""The chaos runner: start the system (or attach to one), drive open-loop load, play the
timeline, watch everything on one clock, judge the hypotheses, and always undo what it did.

One clock: ``time.monotonic()``, zero when the load starts. The balancer's
snapshots and events carry its own monotonic time; the runner measures the offset between the
two clocks on every snapshot it reads and keeps the estimate with the shortest round trip, so
an event lands on the run's clock to within a few milliseconds (in-process: exactly).

While the load runs, a sampler reads a snapshot and the load generator's counters
``SAMPLE_HZ`` times a second into the :class:`~lbtui.chaos.recording.Recording`, checks the
guardrails on the sliding window they name, and reads each fleet process's own request-id
bookkeeping about once a second (and just before the runner kills or restarts one, so a dead
process's last figures are kept). The timeline runs as a second task on the same clock; the
event stream as a third.

Undo is guaranteed the way chaostoolkit's rollbacks and pumba's bounded chaos intend: every
action notes what it changes before it changes it (``lbtui.chaos.undo``), and
``Experiment.run`` undoes all of it in ``finally`` — after a pass, a failed check, a guardrail
abort, an error, a crash, or a SIGINT/SIGTERM (the command turns those into the ``stop``
event) — each undo step bounded by a timeout and logged. Attached to a remote balancer, every
fault the runner sets also carries a duration that ends it shortly after the run would have,
so even a runner killed with SIGKILL leaves no fault on for good. A fleet the runner started is
stopped (every process by its PID, SIGTERM then SIGKILL); its processes also die with the
runner (``PR_SET_PDEATHSIG``).

What the run starts or attaches to, and what the fleet's processes report, is
:class:`~lbtui.chaos.system.System`; the guardrails are judged by
:func:`lbtui.chaos.guardrails.tripped`. This module keeps the run's clock and its phases.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lbtui.chaos.checks import CheckResult, Phases, evaluate_all
from lbtui.chaos.guardrails import tripped as tripped_by
from lbtui.chaos.progress import ActionFired, CheckLine, Finished, Progress, Started, Tick
from lbtui.chaos.recording import (
    CLIENT_CLASSES,
    ActionRecord,
    BackendSample,
    Recording,
    RunEvent,
    Sample,
    Verdict,
    client_class,
)
from lbtui.chaos.scenario import Scenario, ScenarioFile
from lbtui.chaos.steps import (
    Kill,
    Knobs,
    LoadRate,
    Restart,
    Step,
    describe_step,
    step_action,
    step_backend,
    step_end,
)
from lbtui.chaos.system import Member, SetupError, System
from lbtui.chaos.undo import Changes, roll_back
from lbtui.control.errors import ControlError
from lbtui.control.model import Event, SetFault, Snapshot
from lbtui.errors import LbtuiError
from lbtui.fleet.supervisor import FleetError
from lbtui.loadgen import LoadGenerator, LoadReport

SAMPLE_HZ = 4.0
TALLY_EVERY = 4
"""Read the fleet's bookkeeping every this many samples (about once a second)."""
STEP_TIMEOUT_S = 20.0
"""An action (a fleet restart waits for the process to be ready) takes at most this long."""
SNAPSHOT_TIMEOUT_S = 3.0
LATE_S = 0.25
"""An action carried out this long after its planned time says so (an earlier one ran long,
or the machine is overloaded)."""
LOST_AFTER_S = 10.0
"""The run ends as an error when no snapshot could be read for this long."""
FAULT_GRACE_S = 10.0
"""Attached: a fault the runner sets ends by itself this long after the run would end."""

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_SETUP = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[Verdict, int] = {
    "passed": EXIT_PASSED,
    "failed": EXIT_FAILED,
    "error": EXIT_SETUP,
    "aborted": EXIT_ABORTED,
    "interrupted": EXIT_INTERRUPTED,
}


@dataclass(frozen=True, slots=True)
class RunOptions:
    attach: str | None = None
    """The admin API of a running balancer; ``None``: start the scenario's system."""
    token: str | None = None
    target: str | None = None
    """The balancer's listener URL (attached), overriding ``[load] target``."""
    scale: float = 1.0
    sample_hz: float = SAMPLE_HZ


@dataclass
class RunResult:
    """A finished run: verdict, exit code, the checks, and everything recorded."""

    name: str
    path: str
    description: str
    scale: float
    mode: str
    """``local`` (the run started the system) or ``attach``."""
    target: str
    admin: str | None
    fleet_source: str | None
    config_source: str | None
    members: list[Member]
    started_wall: float
    verdict: Verdict = "error"
    reason: str = ""
    """Why the run ended early or errored; empty for a run that went to the end."""
    checks: list[CheckResult] = field(default_factory=list)
    recording: Recording = field(default_factory=Recording)
    load: LoadReport | None = None
    load_rate: float = 0.0
    load_duration_s: float = 0.0
    phases: Phases | None = None
    algorithm: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def rollback_ok(self) -> bool:
        return all(s.ok for s in self.recording.rollback)


class Experiment:
    """One run of one scenario: ``await Experiment(sf, options, log).run(stop)``."""

    def __init__(
        self,
        sf: ScenarioFile,
        options: RunOptions,
        log: Callable[[str], None] = lambda _m: None,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        """``progress``: told what the run will do, each action as it fires, the checks'
        status about once a second, and the verdict (``lbtui.chaos.progress``)."""
        self.sf = sf
        self.progress = progress
        self.options = options
        self.sc = sf.scenario.scaled(options.scale)
        self.log = log
        self.rec = Recording()
        self.system = System(sf, self.sc, self.rec, log)
        self.gen: LoadGenerator | None = None
        self.t0 = 0.0
        self._offset: float | None = None
        self._offset_rtt = float("inf")
        self._prev_latency: list[int] | None = None
        self._last_snapshot_ok = 0.0
        self._undo: Changes | None = None
        self._samples_taken = 0
        self._events: list[Event] = []

    # --- the run -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> RunResult:
        """Set up, run, roll back, tear down, judge. Raises :class:`SetupError` (after tearing
        down what it started) when the experiment cannot start."""
        result = RunResult(
            name=self.sf.name,
            path=str(self.sf.path),
            description=self.sc.description,
            scale=self.options.scale,
            mode="attach" if self.options.attach else "local",
            target="",
            admin=None,
            fleet_source=self.sf.fleet_source,
            config_source=None if self.options.attach else self.sf.config_source,
            members=[],
            started_wall=time.time(),
            recording=self.rec,
            load_rate=self.sc.load.rate,
            load_duration_s=self.sc.load.duration,
        )
        follower: asyncio.Task[None] | None = None
        try:
            try:
                baseline = await self.system.start(
                    self.options.attach, self.options.token, self.options.target
                )
            except (LbtuiError, OSError) as exc:
                if isinstance(exc, SetupError):
                    raise
                raise SetupError(str(exc)) from exc
            result.target, result.admin = self.system.target, self.system.admin_url
            result.members = self.system.members()
            result.algorithm = baseline.algorithm
            self._undo = Changes(baseline)
            follower = asyncio.create_task(self._follow(baseline.last_event_id))
            await self.system.announce(_started(self.sf.name, self.sc))
            if stop.is_set():
                result.verdict, result.reason = "interrupted", "interrupted before the load began"
            else:
                result.verdict, result.reason = await self._drive(stop, baseline)
        finally:
            if self._undo is not None and self.system.control is not None:
                self.log("chaos: rolling back")
                self.rec.rollback += await roll_back(
                    self._undo,
                    self.system.control,
                    fleet_owned=self.system.fleet is not None,
                    log=self.log,
                )
            if follower is not None:
                await asyncio.sleep(0)  # let the rollback's events arrive
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            self._place_events()
            if self._undo is not None:  # it began: judged, and its end on the balancer's timeline
                result.checks = evaluate_all(self.rec, self.sc)
                if result.verdict == "passed" and not all(c.passed for c in result.checks):
                    result.verdict = "failed"
                ended = f"chaos {self.sf.name} ended: {result.verdict}"
                await self.system.announce(ended + (f" — {result.reason}" * bool(result.reason)))
            await self.system.stop()
        if self.gen is not None:
            result.load = self.gen.report()
        result.phases = Phases.of(self.sc, self.rec.end)
        lines = [
            CheckLine(c.name, "passed" if c.passed else "failed", c.figure) for c in result.checks
        ]
        self._tell(Finished(result.verdict, result.reason, lines))
        return result

    def _tell(self, p: Progress) -> None:
        """Progress to the watcher, if any; a watcher that fails does not stop the run."""
        if self.progress is not None:
            with contextlib.suppress(Exception):
                self.progress(p)

    def _announce(self) -> None:
        """Tell the watcher what the run will do: its length, its actions, its checks."""
        if self.progress is None:
            return
        sc = self.sc
        steps = sorted(sc.timeline, key=lambda st: st.at)
        with contextlib.suppress(Exception):
            checks = [c.name for c in self._live_checks()]
            actions = [f"+{st.at:g}s {describe_step(st)}" for st in steps]
            self._tell(Started(self.sf.name, sc.load.duration, actions, checks))

    def _tick(self) -> None:
        """About once a second: elapsed of total and the checks so far, to the watcher."""
        if self.progress is None:
            return
        with contextlib.suppress(Exception):
            self._tell(Tick(_now() - self.t0, self.sc.load.duration, self._live_checks()))

    def _live_checks(self) -> list[CheckLine]:
        """Each check judged on what is recorded so far (``lbtui.chaos.progress``)."""
        now = self.rec.end
        out = []
        for c in evaluate_all(self.rec, self.sc):
            if c.window is not None and now < c.window[0]:
                out.append(CheckLine(c.name, "waiting", ""))
            else:
                out.append(CheckLine(c.name, "holding" if c.passed else "failing", c.figure))
        return out

    # --- the load, the sampler and the guardrails -----------------------------------------------

    async def _drive(self, stop: asyncio.Event, baseline: Snapshot) -> tuple[Verdict, str]:
        sc = self.sc
        load = sc.load
        gen = LoadGenerator(
            self.system.target + "/",
            load.rate,
            load.duration,
            connections=load.connections,
            mix=load.request_mix(),
            timeout_s=load.timeout,
            spread=self.system.spread,
        )
        self.gen = gen
        self._prev_latency = _latency_counts(gen)
        self.t0 = _now()
        self._add_sample(baseline, self.t0, baseline_sample=True)
        load_task = asyncio.create_task(gen.run(), name="chaos-load")
        timeline_task = asyncio.create_task(self._timeline(), name="chaos-timeline")
        stop_task = asyncio.create_task(stop.wait(), name="chaos-stop")
        self.log(
            f"chaos: load {load.rate:g}/s for {load.duration:g} s"
            + (f" (scale {self.options.scale:g})" if self.options.scale != 1 else "")
        )
        self._announce()
        period = 1.0 / self.options.sample_hz
        hard_end = self.t0 + load.duration + load.timeout + 10.0
        verdict: Verdict = "passed"
        reason = ""
        n = 0
        try:
            while _now() < hard_end:  # bounded: the load ends by itself before
                n += 1
                waiting: set[asyncio.Future[Any]] = {load_task, stop_task}
                if not timeline_task.done():
                    waiting.add(timeline_task)
                await asyncio.wait(
                    waiting,
                    timeout=max(0.0, self.t0 + n * period - _now()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stop_task.done():
                    verdict, reason = "interrupted", "interrupted (SIGINT/SIGTERM)"
                    break
                if timeline_task.done() and not timeline_task.cancelled():
                    exc = timeline_task.exception()
                    if exc is not None:
                        verdict, reason = "error", str(exc)
                        break
                if load_task.done():
                    break
                lost = await self._sample()
                if lost is not None:
                    verdict, reason = "error", lost
                    break
                if n % max(1, round(self.options.sample_hz)) == 0:
                    self._tick()
                tripped = tripped_by(self.rec, self.sc.guardrails)
                if tripped is not None:
                    verdict, reason = "aborted", tripped
                    self.log(f"chaos: guardrail: {tripped}; aborting")
                    break
        finally:
            if not load_task.done():
                gen.stop()
            timeline_task.cancel()
            stop_task.cancel()
            await asyncio.gather(timeline_task, stop_task, return_exceptions=True)
            _done, pending = await asyncio.wait({load_task}, timeout=load.timeout + 2.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(load_task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._sample()
            await self.system.tally_all()
        if verdict == "passed" and load_task.done() and not load_task.cancelled():
            exc = load_task.exception()
            if exc is not None:
                verdict, reason = "error", f"the load generator failed: {exc!r}"
        done = {a.number for a in self.rec.actions}
        missing = [i + 1 for i in range(len(sc.timeline)) if i + 1 not in done]
        if verdict == "passed" and missing:
            verdict = "error"
            reason = (
                "the load ended before timeline "
                + ", ".join(f"#{n}" for n in missing)
                + " could be carried out (earlier actions ran late): the experiment is incomplete"
            )
        return verdict, reason

    async def _sample(self) -> str | None:
        """Read a snapshot and the load's counters; a reason when the target is lost."""
        assert self.system.control is not None
        before = _now()
        try:
            snap = await asyncio.wait_for(self.system.control.snapshot(), SNAPSHOT_TIMEOUT_S)
        except (ControlError, TimeoutError) as exc:
            if _now() - self._last_snapshot_ok > LOST_AFTER_S:
                return f"the balancer stopped answering: {exc}"
            return None
        after = _now()
        if after - before < self._offset_rtt:
            self._offset_rtt = after - before
            self._offset = snap.at - (before + after) / 2
        self._add_sample(snap, after)
        self._samples_taken += 1
        if self._samples_taken % TALLY_EVERY == 0:
            await self.system.tally_all()
        return None

    def _add_sample(self, snap: Snapshot, now: float, *, baseline_sample: bool = False) -> None:
        self._last_snapshot_ok = now
        gen = self.gen
        client = dict.fromkeys(CLIENT_CLASSES, 0)
        latency: dict[int, int] = {}
        if gen is not None and not baseline_sample:
            rep = gen.report()
            for status, n in rep.status_counts.items():
                cls = client_class(status)
                if cls in client:
                    client[cls] += n
            client["transport"] = sum(rep.errors.values())
            counts = _latency_counts(gen)
            if counts is not None:
                prev = self._prev_latency or [0] * len(counts)
                latency = {
                    i: c - p for i, (c, p) in enumerate(zip(counts, prev, strict=False)) if c != p
                }
                self._prev_latency = counts
        backends: dict[str, BackendSample] = {}
        for b in snap.backends:
            failures = sum(b.failures_total.values())
            backends[b.name] = BackendSample(
                requests=b.requests_total,
                errors=b.responses_total.get("5xx", 0) + failures,
                p99_ms=b.p99_ms if b.p99_ms is not None else 0.0,
                in_flight=b.in_flight,
                breaker=b.breaker.state if b.breaker is not None else None,
                admin=b.admin,
                ejected=b.ejected,
                health=b.health.state if b.health is not None else None,
                fault=b.fault.description if b.fault is not None and b.fault.active else None,
                weight=b.weight_effective,
            )
        totals = snap.totals
        rps = snap.limits.config.get("rps")
        self.rec.add(
            Sample(
                t=0.0 if baseline_sample else now - self.t0,
                client=client,
                client_latency=latency,
                balancer_requests=totals.requests_total,
                retries=totals.retries_total,
                fallbacks=sum(totals.fallback_total.values()),
                rate_limited=sum(totals.rate_limited_total.values()),
                admitted=snap.limits.global_allowed_total,
                limits_rps=float(rps) if isinstance(rps, int | float) else None,
                backends=backends,
                load_rate=gen.rate if gen is not None else 0.0,
            )
        )

    # --- the event stream -----------------------------------------------------------------------

    async def _follow(self, since: int) -> None:
        assert self.system.control is not None
        with contextlib.suppress(ControlError):
            async for ev in self.system.control.stream_events(since):
                self._events.append(ev)

    def _place_events(self) -> None:
        """Put every event on the run's clock, with the best clock offset measured."""
        offset = self._offset or 0.0
        self.rec.events = [
            RunEvent(t=ev.at - offset - self.t0, event=ev)
            for ev in sorted(self._events, key=lambda e: (e.at, e.id))
        ]

    # --- the timeline ---------------------------------------------------------------------------

    async def _timeline(self) -> None:
        order = sorted(range(len(self.sc.timeline)), key=lambda i: self.sc.timeline[i].at)
        for i in order:  # bounded: one pass over the steps, each at a time before the end
            step = self.sc.timeline[i]
            delay = self.t0 + step.at - _now()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._step(i, step)

    async def _step(self, i: int, step: Step) -> None:
        assert self.system.control is not None
        assert self._undo is not None
        name = step_backend(step)
        description = describe_step(step)
        if isinstance(step, Kill | Restart) and name is not None:
            await self.system.tally(name)
        knobs_before = await self.system.knobs(name) if isinstance(step, Knobs) and name else None
        self._undo.note(step, knobs_before)
        start = _now()
        detail = ""
        try:
            if isinstance(step, LoadRate):
                assert self.gen is not None
                self.gen.set_rate(step.rate)
            else:
                action = step_action(step, self.system.urls)
                if isinstance(action, SetFault) and self.options.attach:
                    action, detail = self._bounded(action, step.at)
                if action is not None:
                    await asyncio.wait_for(self.system.control.act(action), STEP_TIMEOUT_S)
                if isinstance(step, Restart) and self.system.fleet is not None and name:
                    detail = f"pid {self.system.fleet.member(name).pid}"
                elif isinstance(step, Kill) and self.system.fleet is not None and name:
                    detail = "process reaped"
        except (ControlError, FleetError, ValueError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            self._record(i, step, description, start, False, why)
            self._tell(ActionFired(i + 1, start - self.t0, description, False, why))
            self.log(f"  {start - self.t0:+7.2f}s  #{i + 1} {description}: FAILED: {why}")
            raise SetupError(f"timeline #{i + 1} ({description}) failed: {why}") from None
        late = start - self.t0 - step.at
        if late > LATE_S:
            detail = ", ".join(filter(None, [detail, f"{late:.2f} s late"]))
        self._record(i, step, description, start, True, detail)
        self._tell(ActionFired(i + 1, start - self.t0, description, True, detail))
        took = _now() - start
        self.log(
            f"  {start - self.t0:+7.2f}s  #{i + 1} {description}: ok"
            + (f" ({detail})" if detail else "")
            + (f", took {took:.2f} s" if took >= 0.05 else "")
        )

    def _bounded(self, action: SetFault, at: float) -> tuple[SetFault, str]:
        """Attached: give the fault a duration that ends it after the run would have."""
        cap = max(self.sc.load.duration - at, 0.0) + self.sc.load.timeout + FAULT_GRACE_S
        spec = action.fault
        if spec.duration_s is not None and spec.duration_s <= cap:
            return action, ""
        bounded = dataclasses.replace(spec, duration_s=round(cap, 3))
        return SetFault(backend=action.backend, fault=bounded), f"bounded to {cap:.0f} s"

    def _record(
        self, i: int, step: Step, description: str, start: float, ok: bool, detail: str
    ) -> None:
        end = step_end(step)
        self.rec.actions.append(
            ActionRecord(
                number=i + 1,
                id=step.id,
                action=step.action,
                backend=step_backend(step),
                description=description,
                planned_at=step.at,
                at=start - self.t0,
                took_s=_now() - start,
                ok=ok,
                detail=detail,
                ends_at=(start - self.t0) + (end - step.at) if end > step.at else None,
            )
        )


def _now() -> float:
    """The run's clock: ``time.monotonic()``, read fresh each time (uvloop's ``loop.time()``
    is cached per loop iteration, which would skew actions against the balancer's events by
    however long the iteration has run)."""
    return time.monotonic()


def _latency_counts(gen: LoadGenerator) -> list[int] | None:
    """The load generator's corrected-latency histogram (bucket counts since its start): a
    p99 over an arbitrary window of the run is the difference of two of these."""
    return gen.latency_counts()


def _started(name: str, sc: Scenario) -> str:
    """The line a run puts on the balancer's timeline as it begins."""
    n = len(sc.timeline)
    return (
        f"chaos {name} started: {sc.load.duration:g} s of load at {sc.load.rate:g}/s, "
        f"{n} timeline action{'' if n == 1 else 's'}"
    )
