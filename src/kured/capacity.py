"""How many nodes may be down at once, whoever took them down (``--max-unavailable``).

``--concurrency`` bounds kured's own reboots. It does not know that two other
nodes are NotReady because of a failing disk, or cordoned by an operator. Like
OpenShift's ``maxUnavailable``, ``--max-unavailable`` counts every node that is
NotReady or unschedulable *for any reason*, so kured never adds to an outage.

The count must also hold when two nodes take lock slots at the same moment
(two zones' locks, or two slots of one lock). Each agent therefore checks again
right after recording that it is about to drain, counting the other lock
holders that are already draining or whose name sorts before its own. Of two
nodes racing, the later-named one always counts the earlier, so at most one of
them goes ahead when only one more node may go down.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

_SPEC = re.compile(r"^(\d+)(%?)$")


@dataclass(frozen=True)
class MaxUnavailable:
    """A count (``3``) or a share of all nodes (``25%``, rounded down, at least 1)."""

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> MaxUnavailable:
        match = _SPEC.match(text.strip())
        if not match or (match.group(2) and int(match.group(1)) > 100):
            raise ValueError(f"{text!r} is not a node count or percentage; use e.g. 2 or 25%")
        value = int(match.group(1))
        if value < 1:
            raise ValueError(f"{text!r} would let no node reboot; use 1 or more (or 1%+)")
        return cls(value, bool(match.group(2)))

    def limit(self, total_nodes: int) -> int:
        if not self.percent:
            return self.value
        return max(1, math.floor(total_nodes * self.value / 100))

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class NodeState:
    """What counts about one node for the budget."""

    name: str
    ready: bool
    unschedulable: bool
    draining: bool = False  # its kured recorded a drain or reboot in progress

    @property
    def unavailable(self) -> bool:
        return not self.ready or self.unschedulable or self.draining


def others_down(
    nodes: Iterable[NodeState], me: str, holders: Iterable[str], holding: bool
) -> list[str]:
    """The nodes that count against the budget before ``me`` may go down.

    Unavailable nodes count. Before ``me`` takes a slot, every lock holder counts
    too (it is about to go down). Once ``me`` holds one, only the holders ahead of
    it count: already draining, or named before it — the tie-break between nodes
    that took slots at the same moment.
    """
    states = {n.name: n for n in nodes}
    counted = {name for name, n in states.items() if n.unavailable and name != me}
    ahead = {
        h
        for h in holders
        if h != me and (not holding or h < me or (h in states and states[h].draining))
    }
    return sorted(counted | ahead)


def over_budget(
    budget: MaxUnavailable, nodes: list[NodeState], me: str, holders: list[str], holding: bool
) -> str:
    """Why ``me`` may not go down now ("" = it may)."""
    down = others_down(nodes, me, holders, holding)
    limit = budget.limit(len(nodes))
    if len(down) < limit:
        return ""
    shown = ", ".join(down[:5]) + (" …" if len(down) > 5 else "")
    return f"max-unavailable {budget}: {len(down)} of {len(nodes)} nodes down ({shown})"
