"""Words that do not contradict (issue 13, item 6): a no-op action is on the timeline as an
action, never as a transition such as ``draining → draining``."""

from __future__ import annotations

from lbtui.control.local import LocalControl
from lbtui.control.model import SetAdmin, SetAlgorithm, SetWeight


async def test_a_no_op_action_is_not_logged_as_a_transition(backends, balancer):
    lb = await balancer(await backends(2))
    control = LocalControl(lb.proxy)
    await control.act(SetAdmin(backend="b1", state="draining"))
    since = lb.proxy.backends["b1"].admin_since
    await control.act(SetAdmin(backend="b1", state="draining"))  # again: nothing changes
    await control.act(SetAdmin(backend="b2", state="active"))  # enabled already
    await control.act(SetWeight(backend="b2", weight=1))  # the same weight
    algorithm = (await control.snapshot()).algorithm
    await control.act(SetAlgorithm(algorithm=algorithm))  # type: ignore[arg-type]
    events = [e for e in await control.events() if e.kind == "action" or e.kind == "config"]
    messages = [e.message for e in events]
    assert any("active → draining" in m for m in messages)  # the real change
    for m in messages:
        old, arrow, new = m.partition(" → ")
        if arrow:
            assert old.split()[-1] != new.split()[0].rstrip(":,"), m
    assert "admin state already draining: no change" in messages
    assert "admin state already active: no change" in messages
    assert "weight already 1: no change" in messages
    assert f"algorithm already {algorithm}: no change" in messages
    assert lb.proxy.backends["b1"].admin_since == since  # the drain's countdown kept its start
