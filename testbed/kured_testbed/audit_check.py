"""The chaos run's judge: what the API server's audit log and the simulated hosts say
happened during a roll, checked against kured's promises.

It trusts nothing kured says about itself (no logs, no progress records, no lock): cordons
and uncordons come from the audit log (the sandbox logs node writes with their bodies, and
their RequestReceived stage too), reboots from the node simulator's history, and the end
state from the API server. Everything here is a pure function of parsed data, so the rules
are unit-tested with synthetic logs.

The promises, for one roll in which every node got a reboot sentinel:

* never more than ``concurrency`` nodes unavailable for reboot at once, in each lock group
  where the roll has them (cordoned by kured's
  ServiceAccount and not yet uncordoned, or down for a reboot);
* no node reboots while it is schedulable (kured drains first);
* every node with a sentinel rebooted exactly once;
* nothing left cordoned by kured, no lock left held;
* nodes cordoned before kured came are never cordoned or uncordoned by it, and stay cordoned.

A node deleted during the roll (a cloud removing it) counts until its deletion and is
exempt from the end-of-roll promises. A node that never finished is *stuck*, counted apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RECEIVED, COMPLETE = "RequestReceived", "ResponseComplete"
FOREVER = float("inf")


@dataclass(frozen=True)
class NodeWrite:
    """A request that wrote a Node (the spec, or only metadata such as annotations)."""

    node: str
    user: str
    # The value asked for; None: the write did not touch it, or (unanswered) nobody knows.
    unschedulable: bool | None
    received: float  # requestReceivedTimestamp, seconds since the epoch
    done: float | None = None  # when the response was sent; None: the server never answered
    code: int = 0  # the response's HTTP status (0: no response)

    @property
    def applied(self) -> bool:
        return 200 <= self.code < 300

    @property
    def maybe(self) -> bool:
        """The outcome is unknown: no answer (the API server died), or a server error that
        may come after the write reached etcd (etcd died)."""
        return self.done is None or self.code >= 500


@dataclass(frozen=True)
class Reboot:
    """One simulated reboot: the host went down, and came back up."""

    down: float
    up: float


@dataclass(frozen=True)
class FinalNode:
    """A node as the API server showed it once the roll was over."""

    unschedulable: bool
    progress: bool  # kured's progress record is still on the Node


@dataclass(frozen=True)
class Roll:
    """Everything the checker looks at for one roll."""

    nodes: tuple[str, ...]
    kured_user: str  # system:serviceaccount:<namespace>:kured
    concurrency: int
    triggered: Mapping[str, float]  # node → when its sentinel was created
    pre_cordoned: frozenset[str]
    reboots: Mapping[str, Sequence[Reboot]]
    writes: Sequence[NodeWrite]
    deleted: Mapping[str, float]  # node → when its Node object was deleted
    final: Mapping[str, FinalNode]  # the nodes still registered at the end
    lock_holders: Sequence[str]  # what the lock objects still name at the end
    end: float  # when the roll was over
    # node → its --lock-group-label value: each group has its own `concurrency` slots
    # (empty: one group, the whole fleet)
    groups: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    violations: tuple[str, ...]
    stuck: tuple[str, ...]
    most_unavailable: int


Interval = tuple[float, float]


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _unschedulable_asked(event: dict[str, Any]) -> bool | None:
    """The ``spec.unschedulable`` a node write asks for (None: it does not touch it)."""
    body = event.get("requestObject")
    if isinstance(body, list):  # a JSON patch
        for op in body:
            if isinstance(op, dict) and op.get("path") == "/spec/unschedulable":
                return op.get("op") != "remove" and bool(op.get("value"))
        return None
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        return None
    if event.get("verb") == "update":  # a whole object: absent means schedulable
        return bool(spec.get("unschedulable"))
    return bool(spec["unschedulable"]) if "unschedulable" in spec else None


def _is_node(event: dict[str, Any], nodes: frozenset[str]) -> bool:
    ref = event.get("objectRef") or {}
    return ref.get("resource") == "nodes" and "subresource" not in ref and ref.get("name") in nodes


def _write(received: dict[str, Any], answer: dict[str, Any] | None) -> NodeWrite:
    """One node write from its two audit events (the body is only in the answer's)."""
    return NodeWrite(
        node=received["objectRef"]["name"],
        user=received["user"]["username"],
        unschedulable=_unschedulable_asked(answer) if answer else None,
        received=timestamp(received["requestReceivedTimestamp"]),
        done=timestamp(answer["stageTimestamp"]) if answer else None,
        code=int((answer or {}).get("responseStatus", {}).get("code", 0)),
    )


def node_writes(events: Iterable[dict[str, Any]], nodes: Iterable[str]) -> list[NodeWrite]:
    """The writes of these nodes, in the order the server got them.

    A write's RequestReceived and ResponseComplete events share an auditID; the request
    body is only logged with the second.
    """
    names = frozenset(nodes)
    stages: dict[str, dict[str, dict[str, Any]]] = {RECEIVED: {}, COMPLETE: {}}
    for event in events:
        if event.get("verb") in ("patch", "update") and _is_node(event, names):
            stages.get(event.get("stage", ""), {})[event["auditID"]] = event
    received, completed = stages[RECEIVED], stages[COMPLETE]
    writes = [
        _write(event, completed.get(audit_id)) for audit_id, event in (received | completed).items()
    ]
    return sorted(writes, key=lambda w: w.received)


def deletions(events: Iterable[dict[str, Any]], nodes: Iterable[str]) -> dict[str, float]:
    """When each of these nodes' Node object was deleted (successfully)."""
    names = frozenset(nodes)
    gone: dict[str, float] = {}
    for event in events:
        if event.get("verb") == "delete" and event.get("stage") == COMPLETE:
            code = int((event.get("responseStatus") or {}).get("code", 0))
            if _is_node(event, names) and 200 <= code < 300:
                gone.setdefault(event["objectRef"]["name"], timestamp(event["stageTimestamp"]))
    return gone


def kured_cordons(
    writes: Sequence[NodeWrite], final_schedulable: bool, end: float
) -> tuple[list[Interval], list[str]]:
    """When one node was cordoned by kured, from kured's writes on it (in order), and what
    the log cannot explain.

    Counted generously, so that the concurrency check cannot miss an overlap: from the
    moment a cordon reached the server until its uncordon was answered. Writes of unknown
    outcome are resolved by what kured did next: kured only uncordons a node it saw
    cordoned, so an uncordon with no cordon before it means one of the unknown writes since
    the last uncordon was the cordon (the earliest is taken); a node that ends schedulable
    with no uncordon on record was uncordoned by an unknown write, before kured's next
    answered write on it.
    """
    intervals: list[Interval] = []
    unexplained: list[str] = []
    start: float | None = None
    maybes: list[NodeWrite] = []  # unknown outcome, since the last uncordon
    for write in writes:
        if write.maybe:
            maybes.append(write)
        elif not write.applied or write.unschedulable is None:
            continue
        elif write.unschedulable:
            start = write.received if start is None else start
        else:
            assert write.done is not None
            if start is None:
                could = [m.received for m in maybes if m.unschedulable is not False]
                if not could:
                    unexplained.append("uncordoned without a cordon on record")
                start = could[0] if could else writes[0].received
            intervals.append((start, write.done))
            start, maybes = None, []
    if start is not None:
        intervals.append(
            (start, _closed_by_maybe(writes, start, end) if final_schedulable else FOREVER)
        )
    return intervals, unexplained


def _closed_by_maybe(writes: Sequence[NodeWrite], start: float, end: float) -> float:
    """The end of a cordon undone by a write of unknown outcome: the next answered write."""
    after = [w for w in writes if w.received > start]
    last_maybe = max((w.received for w in after if w.maybe), default=start)
    return min((w.received for w in after if w.received > last_maybe and not w.maybe), default=end)


def _clip(intervals: Iterable[Interval], until: float) -> list[Interval]:
    return [(a, min(b, until)) for a, b in intervals if a < until]


def _reboots_since(roll: Roll, node: str) -> list[Reboot]:
    since, until = roll.triggered.get(node, FOREVER), roll.deleted.get(node, FOREVER)
    return [r for r in roll.reboots.get(node, ()) if since <= r.down < until]


def cordoned_by_kured(roll: Roll) -> tuple[dict[str, list[Interval]], list[str]]:
    """Per node, when it was cordoned by kured (until its deletion, if it was deleted); and
    what the audit log cannot explain. Nodes cordoned before are left out: kured has no
    business with their cordon (see :func:`_pre_cordoned`)."""
    result: dict[str, list[Interval]] = {node: [] for node in roll.pre_cordoned}
    unexplained = []
    for node in set(roll.nodes) - roll.pre_cordoned:
        final = roll.final.get(node)
        mine = [w for w in roll.writes if w.node == node and w.user == roll.kured_user]
        schedulable = final is not None and not final.unschedulable
        spans, problems = kured_cordons(mine, schedulable, roll.end)
        result[node] = _clip(spans, roll.deleted.get(node, FOREVER))
        unexplained += [f"{node}: {problem}" for problem in problems]
    return result, unexplained


def unavailable(roll: Roll, cordoned: Mapping[str, list[Interval]]) -> dict[str, list[Interval]]:
    """Per node, when it was unavailable for reboot: cordoned by kured, or down."""
    return {
        node: [*cordoned[node], *((r.down, r.up) for r in _reboots_since(roll, node))]
        for node in roll.nodes
    }


def most_at_once(spans: Mapping[str, Sequence[Interval]]) -> tuple[int, float, list[str]]:
    """The most nodes unavailable at the same moment, when that first happened, and which."""
    edges = sorted(
        (t, opening, node)
        for node, intervals in spans.items()
        for a, b in intervals
        for t, opening in ((a, True), (b, False))
    )
    count: dict[str, int] = {}
    best: tuple[int, float, list[str]] = (0, 0.0, [])
    for moment, opening, node in edges:  # at equal times, ends (False) sort before starts
        count[node] = count.get(node, 0) + (1 if opening else -1)
        down = sorted(n for n, c in count.items() if c > 0)
        if len(down) > best[0]:
            best = (len(down), moment, down)
    return best


def _concurrency(roll: Roll, spans: Mapping[str, Sequence[Interval]]) -> list[str]:
    """At most ``concurrency`` nodes unavailable at once in each lock group."""
    found = []
    groups: list[str | None] = [*sorted(set(roll.groups.values()))] or [None]
    for group in groups:
        members = {n: s for n, s in spans.items() if group is None or roll.groups.get(n) == group}
        most, moment, nodes = most_at_once(members)
        if most <= roll.concurrency:
            continue
        when = datetime.fromtimestamp(moment).isoformat(timespec="milliseconds")
        where = f" in group {group}" if group is not None else ""
        found.append(
            f"{most} nodes unavailable for reboot at once{where} at {when} "
            f"(concurrency {roll.concurrency}): {', '.join(nodes)}"
        )
    return found


def _reboots(roll: Roll, cordoned: Mapping[str, list[Interval]]) -> list[str]:
    """Exactly one reboot per sentinel, and only while the node was cordoned by kured."""
    found = []
    for node in roll.triggered:
        if node in roll.deleted:
            continue
        reboots = _reboots_since(roll, node)
        if len(reboots) > 1:
            found.append(f"{node} rebooted {len(reboots)} times for one sentinel")
        if node in roll.pre_cordoned:
            continue
        for reboot in reboots:
            if not any(a <= reboot.down and reboot.up <= b for a, b in cordoned[node]):
                found.append(f"{node} rebooted while not cordoned by kured")
    return found


def _end_state(roll: Roll) -> list[str]:
    found = []
    for node, final in sorted(roll.final.items()):
        if final.unschedulable and node not in roll.pre_cordoned:
            found.append(f"{node} left cordoned")
    if roll.lock_holders:
        found.append(f"lock still held at the end by {', '.join(roll.lock_holders)}")
    return found


def _pre_cordoned(roll: Roll) -> list[str]:
    found = []
    for node in sorted(roll.pre_cordoned):
        touched = [
            w
            for w in roll.writes
            if w.node == node and w.user == roll.kured_user and w.unschedulable is not None
        ]
        if touched:
            found.append(f"kured changed spec.unschedulable of pre-cordoned {node}")
        final = roll.final.get(node)
        if final is not None and not final.unschedulable:
            found.append(f"pre-cordoned {node} is no longer cordoned")
    return found


def stuck_nodes(roll: Roll) -> list[str]:
    """Nodes still registered that did not finish: never rebooted, or kured still at work."""
    return [
        node
        for node, final in sorted(roll.final.items())
        if (node in roll.triggered and not _reboots_since(roll, node)) or final.progress
    ]


def check(roll: Roll) -> Verdict:
    cordoned, unexplained = cordoned_by_kured(roll)
    spans = unavailable(roll, cordoned)
    violations = [
        *_concurrency(roll, spans),
        *_reboots(roll, cordoned),
        *_end_state(roll),
        *_pre_cordoned(roll),
        *unexplained,
    ]
    return Verdict(tuple(violations), tuple(stuck_nodes(roll)), most_at_once(spans)[0])
