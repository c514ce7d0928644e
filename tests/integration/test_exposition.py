"""``/metrics`` of a 1,000-backend balancer, kept per backend and family: the bytes
``metrics.render`` writes at every scrape while the fleet moves (outcomes, state, backends
coming and going, even during a scrape), and no step of a scrape holding the event loop long."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from lbtui.balancer.pool import AdminState
from lbtui.balancer.proxy import Proxy
from lbtui.config import from_dict
from lbtui.control.exposition import Exposition
from lbtui.control.local import LocalControl
from lbtui.control.metrics import render
from lbtui.control.model import AddBackend, ForceBreaker, RemoveBackend, SetAdmin, SetWeight
from lbtui.core.record import FailureKind


def fleet(n: int, clock: Callable[[], float]) -> Proxy:
    backends = [{"name": f"b{i}", "url": f"http://127.0.0.1:{10000 + i}"} for i in range(n)]
    return Proxy(from_dict({"backends": backends}, "test"), clock=clock)


def outcomes(proxy: Proxy, names: list[str], now: float, rng: random.Random) -> None:
    """One outcome each of every kind a record counts: answers of each class, failures,
    requests left in flight, slow ones (the histogram's upper buckets), big bodies."""
    for name in names:
        b = proxy.backends.get(name)
        if b is None:
            continue
        rec = b.record
        rec.started(now)
        roll = rng.random()
        if roll < 0.1:
            rec.failed(FailureKind.TIMEOUT, 1.5, 0, now)
        elif roll < 0.15:
            continue  # in flight until a later round
        else:
            status = rng.choice((200, 200, 200, 404, 503))
            rec.finished(status, rng.uniform(0.0003, 0.08), 10, rng.randrange(50, 5000), now)


async def test_a_thousand_backends_are_the_bytes_render_writes_at_every_scrape():
    rng = random.Random(20)
    t = [1000.0]
    proxy = fleet(1000, lambda: t[0])
    control = LocalControl(proxy)
    expo = Exposition(proxy, None)
    outcomes(proxy, list(proxy.backends), t[0], rng)
    assert await expo.render() == render(proxy, None)
    rewritten = expo.rewritten
    for step in range(6):
        t[0] += 1.0
        names = list(proxy.backends)
        moved = rng.sample(names, len(names) // 2)
        outcomes(proxy, moved, t[0], rng)
        if step == 0:  # a latency sum past a million seconds: Go writes it with an exponent
            slow = proxy.backends[names[7]].record
            slow.started(t[0])
            slow.finished(200, 1_200_000.0, 0, 10, t[0])
        if step == 1:
            await control.act(SetWeight(backend=names[3], weight=5))
            await control.act(SetAdmin(backend=names[4], state=AdminState.DRAINING))
            await control.act(ForceBreaker(backend=names[5], mode="open"))
        if step == 3:  # one gone, one new: the lines' order is made again
            await control.act(RemoveBackend(backend=names[10]))
            await control.act(AddBackend(name="late", url="http://127.0.0.1:9999"))
            outcomes(proxy, ["late"], t[0], rng)
        text = await expo.render()
        assert text == render(proxy, None), step
    # each scrape wrote again about the half that moved, not the whole fleet
    assert expo.rewritten - rewritten < 6 * 600
    assert b'lbtui_requests_total{backend="late",code_class="2xx"}' in text
    assert b'backend="b10"' not in text
    assert b'lbtui_request_duration_seconds_sum{backend="b7"} 1.2' in text
    assert b"e+06\n" in text


async def test_backends_that_come_and_go_during_a_scrape():
    """A scrape yields to the loop between slices; a backend removed and one added meanwhile
    leave the next scrape the bytes ``render`` writes."""
    rng = random.Random(7)
    t = [1000.0]
    proxy = fleet(300, lambda: t[0])
    control = LocalControl(proxy)
    expo = Exposition(proxy, None, slice_s=0.0)  # yields every other backend
    outcomes(proxy, list(proxy.backends), t[0], rng)
    await expo.render()
    t[0] += 1.0
    outcomes(proxy, list(proxy.backends)[::2], t[0], rng)
    scrape = asyncio.create_task(expo.render())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not scrape.done()
    await control.act(RemoveBackend(backend="b250"))
    await control.act(AddBackend(name="new", url="http://127.0.0.1:9999"))
    during = await scrape
    assert b'backend="b100"' in during
    t[0] += 1.0
    outcomes(proxy, ["new", "b1", "b299"], t[0], rng)
    assert await expo.render() == render(proxy, None)


async def test_no_step_of_a_scrape_holds_the_loop_long():
    """1,000 backends, half of them with new outcomes at each scrape: every step (the
    backends, the groups' sums, the balance figures, each family's join, the answer's) ends
    within a few slices. A step over all of them at once takes tens of milliseconds here
    (uncompiled); the bound is generous, and the best of three scrapes is read."""
    rng = random.Random(3)
    t = [1000.0]
    proxy = fleet(1000, lambda: t[0])
    expo = Exposition(proxy, None, slice_s=0.0005)
    outcomes(proxy, list(proxy.backends), t[0], rng)
    await expo.render()
    names = list(proxy.backends)
    longest, busy = [], []
    for _ in range(3):
        t[0] += 1.0
        outcomes(proxy, rng.sample(names, 500), t[0], rng)
        await expo.render()
        longest.append(expo.longest_s)
        busy.append(expo.busy_s)
    assert min(longest) < 0.010, longest
    assert min(busy) > 4 * min(longest), (busy, longest)  # it was cut in many slices


async def test_a_scrape_takes_its_slices_in_the_admin_planes_turns():
    """The admin API's state and ``/metrics`` share one ``Turns``: a scrape waits while the
    state holds the turn, and each of its slices is taken in its own turn after that."""
    from lbtui.config import AdminConfig
    from lbtui.control.api import AdminServer

    t = [1000.0]
    proxy = fleet(200, lambda: t[0])
    server = AdminServer(AdminConfig(address="127.0.0.1:0"), LocalControl(proxy), environ={})
    expo = server.exposition
    assert expo.turns is server.state.turns
    outcomes(proxy, list(proxy.backends), t[0], random.Random(1))
    await expo.turns.take()  # the state's slice, say
    scrape = asyncio.create_task(expo.render())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not scrape.done()
    expo.turns.give()
    assert await scrape == render(proxy, None)
