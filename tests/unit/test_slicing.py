"""``Turns``: admin work from several tasks takes one slice per turn of the event loop."""

from __future__ import annotations

import asyncio

from lbtui.control.slicing import Turns


def _longest_run_of_slices(log: list[str]) -> int:
    longest = run = 0
    for x in log:
        run = run + 1 if x == "slice" else 0
        longest = max(longest, run)
    return longest


async def _three_tasks(turns: Turns | None) -> list[str]:
    """Three tasks of five slices each, yielding between slices through ``turns`` (or with a
    bare ``sleep(0)``), beside a ticker that runs once per turn of the loop."""
    log: list[str] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            log.append("tick")
            await asyncio.sleep(0)

    async def work() -> None:
        if turns is not None:
            await turns.take()
        try:
            for _ in range(5):
                log.append("slice")
                await (turns.rest() if turns is not None else asyncio.sleep(0))
        finally:
            if turns is not None:
                turns.give()

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await asyncio.gather(work(), work(), work())
    stop.set()
    await tick
    assert log.count("slice") == 15
    return log


async def test_slices_of_several_tasks_take_one_turn_of_the_loop_each():
    """The ticker stands for the requests that became ready: with ``Turns`` it runs between
    every two turns' slices (so at most two slices, the end of one turn and the start of the
    next, lie between two of its runs); with bare yields, every task's slice ran in each turn."""
    assert _longest_run_of_slices(await _three_tasks(None)) >= 3
    assert _longest_run_of_slices(await _three_tasks(Turns())) <= 2


async def test_waiting_hands_the_turn_on():
    turns = Turns()
    go = asyncio.Event()
    order: list[str] = []

    async def paced() -> None:
        await turns.take()
        try:
            order.append("pass starts")
            await turns.wait(go.wait())
            order.append("pass goes on")
        finally:
            turns.give()

    async def poll() -> None:
        await turns.take()
        try:
            order.append("poll answered")
            go.set()
        finally:
            turns.give()

    await asyncio.gather(paced(), poll())
    assert order == ["pass starts", "poll answered", "pass goes on"]
