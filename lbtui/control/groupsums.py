"""``GroupSums``: the target groups' series of ``/metrics``, summed at the cost of what moved.

``metrics.group_families`` sums every member's record at each scrape: at 1,000 backends in one
group, 1,000 looks at a record and 1,000 rows summed column by column, about 2 ms, most of it
for members with no new outcome. The exposition knows which backends' histograms it wrote
again (it files their cumulative counts in the ``GroupMemo``); here each group keeps its
members' rows and the column sums of their integer parts, and a scrape takes out the old row
and adds the new of only those backends. A group whose members changed (a reload, a new group)
is summed again whole.

The bytes are those of ``group_families``: integer sums are exact whichever order they are
taken in, and the latency sums (floats) are added again in member order, with ``sum`` over the
kept list, as ``group_families`` adds them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from lbtui.balancer.proxy import Proxy
from lbtui.control.metrics import BOUND_CUTS, Family, GroupMemo, group_families, group_memo_entry
from lbtui.core.record import CODE_CLASSES

_Row = tuple[tuple[int, ...], float, int, tuple[int, ...]]


@dataclass(slots=True)
class _Group:
    names: tuple[str, ...]
    """Its members, in the pool's order."""
    rows: list[_Row]
    """Each member's ``GroupMemo`` row, in that order."""
    index: dict[str, int]
    buckets: list[int]
    responses: list[int]
    count: int
    sums: list[float]
    """Each member's latency sum, in that order (``sum`` of it is the group's)."""


class GroupSums:
    """The groups' sums of one balancer, kept between scrapes."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self.resummed = 0
        """Groups summed again whole so far (what the tests read)."""

    def families(self, proxy: Proxy, memo: GroupMemo, moved: Collection[str]) -> list[Family]:
        """``group_families(proxy, memo)``, ``moved`` naming every backend whose ``memo`` row
        was written since the last call (the others' are as they were)."""
        out = group_families(proxy, {}, pools=[])  # the two families, empty: names and help
        requests, duration = out
        kept = self._groups
        seen: set[str] = set()
        for pool in proxy.state.pools:
            name = pool.name
            seen.add(name)
            names = tuple(b.name for b in pool.backends)
            g = kept.get(name)
            if g is None or g.names != names:
                g = kept[name] = self._summed(proxy, memo, names)
            else:
                _replace(g, memo, moved if len(moved) < len(names) else names)
            requests.values += [((name, c), g.responses[i]) for i, c in enumerate(CODE_CLASSES)]
            duration.histograms.append(((name,), list(g.buckets), sum(g.sums), g.count))
        for gone in kept.keys() - seen:
            del kept[gone]
        return out

    def _summed(self, proxy: Proxy, memo: GroupMemo, names: tuple[str, ...]) -> _Group:
        self.resummed += 1
        rows: list[_Row] = []
        for member in names:
            b = proxy.backends[member]
            rec = proxy.merged_backend_record(b)
            lat = rec.latency
            entry = memo.get(member)
            if entry is None or entry[0] != lat.count:
                entry = memo[member] = group_memo_entry(rec, lat.at_cuts(BOUND_CUTS))
            rows.append(entry[1])
        buckets = [sum(c) for c in zip(*(r[0] for r in rows), strict=True)]
        responses = [sum(c) for c in zip(*(r[3] for r in rows), strict=True)]
        return _Group(
            names,
            rows,
            {n: i for i, n in enumerate(names)},
            buckets or [0] * len(BOUND_CUTS),
            responses or [0] * len(CODE_CLASSES),
            sum(r[2] for r in rows),
            [r[1] for r in rows],
        )


def _replace(g: _Group, memo: GroupMemo, moved: Collection[str]) -> None:
    """The old rows of ``g``'s members among ``moved`` out of its sums, their new rows in:
    each column's old and new values summed once (in C, over the moved rows together)."""
    olds: list[_Row] = []
    news: list[_Row] = []
    index, rows, sums = g.index, g.rows, g.sums
    for member in moved:
        i = index.get(member)
        entry = memo.get(member)
        if i is None or entry is None or entry[1] is rows[i]:
            continue
        new = entry[1]
        olds.append(rows[i])
        news.append(new)
        rows[i] = new
        sums[i] = new[1]
    if not news:
        return
    for column, at in ((g.buckets, 0), (g.responses, 3)):
        out = [sum(c) for c in zip(*(r[at] for r in olds), strict=True)]
        into = [sum(c) for c in zip(*(r[at] for r in news), strict=True)]
        column[:] = [s - a + b for s, a, b in zip(column, out, into, strict=True)]
    g.count += sum(r[2] for r in news) - sum(r[2] for r in olds)
