"""``HttpControl``: the ``Control`` of a balancer reached through its admin API (``lbtui attach``,
the chaos runner).

httpx with short timeouts: a console must show "unreachable" quickly rather than hang. The
event stream is Server-Sent Events, parsed here line by line (the WHATWG rules: ``id``,
``data`` (joined across lines), comments ignored, an event dispatched at a blank line); when
the connection drops it reconnects with ``Last-Event-ID`` set to the last id seen, so no event
is lost or repeated across a reconnect, and gives up with ``Unavailable`` after
``reconnect_for_s`` of failed attempts in a row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from lbtui.control.errors import ControlError, NotFound, ReadOnly, Unavailable
from lbtui.control.model import (
    Action,
    ActionResult,
    BackendView,
    ClearFault,
    Event,
    SetFault,
    Snapshot,
    event_from_json,
    events_from_json,
)
from lbtui.fleet.spec import is_loopback_host

API = "/api/v1"


@dataclasses.dataclass(frozen=True, slots=True)
class StateMeta:
    """What ``/api/v1/state`` says beside the snapshot (absent from an older balancer)."""

    version: int | None = None
    epoch: str | None = None
    delta: bool = False
    names: list[str] | None = None
    """Every backend, in order, when the answer carries only the changed ones."""


_STATE_META = TypeAdapter(StateMeta)


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, str]]:
    """``(id, data)`` of each event in an SSE stream given line by line."""
    event_id: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event_id, "\n".join(data)
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


class HttpControl:
    """The admin API at ``base_url`` (``http://127.0.0.1:9901``), with a bearer ``token``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        read_only: bool = False,
        timeout_s: float = 3.0,
        stream_read_timeout_s: float = 40.0,
        reconnect_for_s: float = 10.0,
        origin: str | None = None,
    ) -> None:
        """``origin``: who acts through this client (``chaos NAME``); the balancer puts it on
        the events its actions cause (``X-Lbtui-Origin``)."""
        self.base_url = base_url.rstrip("/")
        self.read_only = read_only
        self.timeout_s = timeout_s
        self.stream_read_timeout_s = stream_read_timeout_s
        """Longer than the server's keep-alive period: silence past it means a dead link."""
        self.reconnect_for_s = reconnect_for_s
        self._faults_set: set[str] = set()
        self._version: int | None = None
        self._epoch: str | None = None
        self._views: dict[str, BackendView] = {}
        self.changed: frozenset[str] | None = None
        """Backends the last snapshot changed, when it came as a delta; ``None``: any."""
        """Backends this client set a fault on: what :meth:`rollback` clears."""
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if origin:
            headers["X-Lbtui-Origin"] = origin
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            trust_env=False,
        )

    def describe_target(self) -> str:
        return self.base_url

    @property
    def remote(self) -> bool:
        """The target is not on this host (a console shows that plainly)."""
        return not is_loopback_host(httpx.URL(self.base_url).host)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- transport ---------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.HTTPError) -> Unavailable:
        if isinstance(exc, httpx.TimeoutException):
            return Unavailable(f"{self.base_url}: no answer within {self.timeout_s:g} s")
        return Unavailable(f"{self.base_url}: unreachable ({type(exc).__name__}: {exc})")

    async def _call(self, method: str, path: str, body: object | None = None) -> Any:
        try:
            resp = await self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return self._result(resp)

    @staticmethod
    def _result(resp: httpx.Response) -> Any:
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            raise ControlError.from_json(resp.status_code, data)
        return data

    async def _act(self, method: str, path: str, body: object | None = None) -> Any:
        if self.read_only:
            raise ReadOnly("this control is read-only: actions are refused")
        return await self._call(method, path, body)

    # --- seeing ------------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """The state; after the first, only what changed since is sent (``?since``), merged
        here into the views kept from earlier answers. A balancer that does not know
        ``since`` answers in full, and that is read as it comes."""
        params = {}
        if self._version is not None and self._epoch is not None:
            params = {"since": str(self._version), "epoch": self._epoch}
        try:
            resp = await self._client.get(f"{API}/state", params=params)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if resp.status_code >= 400:
            self._result(resp)
        snap = Snapshot.from_json(resp.content)
        meta = _STATE_META.validate_json(resp.content)
        if meta.delta and meta.names is not None and meta.epoch == self._epoch:
            known = self._views
            for view in snap.backends:
                known[view.name] = view
            merged = [v for n in meta.names if (v := known.get(n)) is not None]
            complete = len(merged) == len(meta.names)
            self._views = {v.name: v for v in merged}
            self.changed = frozenset(v.name for v in snap.backends)
            snap = dataclasses.replace(snap, backends=merged)
        else:
            complete = True
            self._views = {v.name: v for v in snap.backends}
            self.changed = None
        # an incomplete merge (cannot happen unless answers were lost): ask in full next time
        self._version = meta.version if complete else None
        self._epoch = meta.epoch
        return snap

    async def events(self, since_id: int = 0) -> list[Event]:
        out: list[Event] = []
        while True:
            page = await self._call("GET", f"{API}/events?since={since_id}")
            events = events_from_json(page["events"])
            out.extend(events)
            if not page.get("more") or not events:
                return out
            since_id = events[-1].id

    async def stream_events(self, since_id: int = 0) -> AsyncIterator[Event]:
        last = since_id
        failing_since: float | None = None
        delay = 0.05
        timeout = httpx.Timeout(self.timeout_s, read=self.stream_read_timeout_s)
        while True:
            headers = {"Accept": "text/event-stream"}
            if last:
                headers["Last-Event-ID"] = str(last)
            try:
                async with self._client.stream(
                    "GET", f"{API}/events", headers=headers, timeout=timeout
                ) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        self._result(resp)
                    failing_since, delay = None, 0.05
                    async for _id, data in parse_sse(resp.aiter_lines()):
                        event = event_from_json(data)
                        if event.id <= last:
                            continue
                        last = event.id
                        yield event
            except httpx.HTTPError as exc:
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                elif now - failing_since > self.reconnect_for_s:
                    raise self._unreachable(exc) from exc
            # the stream ended or broke: reconnect after a short, growing pause
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # --- acting ------------------------------------------------------------------------------

    async def act(self, action: Action) -> ActionResult:
        """``POST /api/v1/actions`` with the action's JSON: one endpoint carries every action."""
        data = await self._act("POST", f"{API}/actions", action_json(action))
        if isinstance(action, SetFault):
            self._faults_set.add(action.backend)
        elif isinstance(action, ClearFault):
            self._faults_set.discard(action.backend)
        got = data.get("result") if isinstance(data, dict) else None
        if not isinstance(got, dict):
            return None
        return {str(k): v for k, v in got.items() if isinstance(v, int | float | bool)}

    async def rollback(self) -> list[str]:
        """Clear the faults this client set (the guaranteed undo at the end of a session or
        a run); the backends it cleared. A backend removed meanwhile is skipped."""
        cleared: list[str] = []
        for name in sorted(self._faults_set):
            try:
                await self._call("DELETE", _backend(name, "fault"))
            except NotFound:
                pass
            else:
                cleared.append(name)
        self._faults_set.clear()
        return cleared


def action_json(action: Action) -> dict[str, Any]:
    """An action as the admin API reads it (a fault's unset fields left out)."""
    data = dataclasses.asdict(action)
    fault = data.get("fault")
    if isinstance(fault, dict):
        data["fault"] = {k: v for k, v in fault.items() if v is not None}
    return data


def _backend(name: str, tail: str = "") -> str:
    path = f"{API}/backends/{quote(name, safe='')}"
    return f"{path}/{tail}" if tail else path
