"""Pure functions that turn what the daemon recorded in the cluster into rows.

Nothing here talks to the API server: :mod:`kured.ctl.cluster` fetches the
DaemonSet, its lock Leases, the Nodes and the Events, and these functions decide what they mean
(who holds the lock, which nodes need a reboot, whether kured is paused), so
every rule can be tested without a cluster. The keys read here are the contract
in ``docs/architecture.md`` ("What the daemon records in the cluster").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kured.ctl.locks import (
    Holder,
    LeaseSummary,
    LockSummary,
    state_of,
    summarize_group_locks,
    summarize_leases,
    summarize_lock,
)
from kured.facts import annotations_of
from kured.kube import DaemonSet, Event, Lease, Node
from kured.policy import (
    PAUSED_ANNOTATION,
    PROGRESS_ANNOTATION,
    STATUS_ANNOTATION,
    PauseNote,
    Phase,
    Progress,
)

DEFAULT_AUTHOR = "kuredctl"


def rfc3339(moment: datetime) -> str:
    """Seconds-precision UTC, the form the daemon writes (``2026-11-02T10:00:00Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- kured.dev/status -------------------------------------------------------------------


@dataclass(frozen=True)
class AgentStatus:
    """What a node's agent last saw (``kured.dev/status``)."""

    reboot_required: bool
    reason: str = ""
    window_open: bool = False
    blocked_by: str = ""
    activity: str = ""
    last_reboot: str = ""

    @classmethod
    def parse(cls, text: str | None) -> AgentStatus | None:
        """None when the agent has not reported (yet) or wrote something unreadable.

        Either way the honest answer in a table is "-": kuredctl cannot say what
        the daemon thinks, and guessing "no reboot needed" would be a lie.
        """
        if not text:
            return None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("rebootRequired"), bool):
            return None
        return cls(
            reboot_required=raw["rebootRequired"],
            reason=_text(raw, "reason"),
            window_open=raw.get("windowOpen") is True,
            blocked_by=_text(raw, "blockedBy"),
            activity=_text(raw, "activity"),
            last_reboot=_text(raw, "lastReboot"),
        )


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


# -- kured.dev/paused -------------------------------------------------------------------


def paused_by(obj: Node | DaemonSet) -> PauseNote | None:
    text = annotations_of(obj).get(PAUSED_ANNOTATION)
    return None if text is None else PauseNote.parse(text)


# -- status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRow:
    """One line of ``kuredctl status``: a Node, or a lock holder that is no Node."""

    name: str
    is_node: bool
    status: AgentStatus | None = None
    progress: Phase | None = None  # None: no kured.dev/progress annotation
    lock: str = ""  # "held", "expired" or ""
    cordoned: bool | None = None
    paused: PauseNote | None = None

    @property
    def phase(self) -> str:
        """The agent's activity; else the crash-safe progress phase; else ""."""
        if self.status and self.status.activity:
            return self.status.activity
        return str(self.progress or "")


@dataclass(frozen=True)
class StatusReport:
    namespace: str
    name: str
    lock: LockSummary
    paused: PauseNote | None
    nodes: tuple[NodeRow, ...]
    leases: LeaseSummary | None = None  # None: no lock Lease exists
    group_locks: tuple[LockSummary, ...] = ()  # each --lock-group-label group's annotation


def build_status(
    ds: DaemonSet,
    nodes: Sequence[Node],
    annotation: str,
    now: datetime,
    *,
    leases: Sequence[Lease] = (),
    leases_unreadable: str = "",
) -> StatusReport:
    """Everything ``kuredctl status`` shows, from one read of the DaemonSet, its lock Leases
    (``leases_unreadable``: why they could not be listed) and the Nodes."""
    meta = ds.metadata
    names = {_node_name(node) for node in nodes}
    lock = summarize_lock(annotation, annotations_of(ds).get(annotation), now, names)
    groups = summarize_group_locks(annotations_of(ds), annotation, now, names)
    held = summarize_leases(leases, now, names, leases_unreadable)
    holders = [*lock.holders, *(h for g in groups for h in g.holders)]
    holders += held.holders if held else ()
    rows = [_node_row(node, holders) for node in sorted(nodes, key=_node_name)]
    strangers = sorted({h.node_id for h in holders if not h.is_node})
    rows += [NodeRow(name, is_node=False, lock=state_of(holders, name)) for name in strangers]
    return StatusReport(
        namespace=(meta.namespace if meta else None) or "",
        name=(meta.name if meta else None) or "",
        lock=lock,
        paused=paused_by(ds),
        nodes=tuple(rows),
        leases=held,
        group_locks=groups,
    )


def _node_name(node: Node) -> str:
    return (node.metadata.name if node.metadata else None) or ""


def _node_row(node: Node, holders: Sequence[Holder]) -> NodeRow:
    annotations = annotations_of(node)
    name = _node_name(node)
    progress_text = annotations.get(PROGRESS_ANNOTATION)
    return NodeRow(
        name=name,
        is_node=True,
        status=AgentStatus.parse(annotations.get(STATUS_ANNOTATION)),
        progress=Progress.from_json(progress_text).phase if progress_text else None,
        lock=state_of(holders, name),
        cordoned=bool(node.spec and node.spec.unschedulable),
        paused=paused_by(node),
    )


# -- history --------------------------------------------------------------------------

KURED_EVENTS = {"source": "kured", "involvedObject.kind": "Node"}
"""The field selector for kured's Events (``source`` is ``source.component``)."""


@dataclass(frozen=True)
class HistoryEntry:
    time: datetime | None
    node: str
    reason: str
    message: str
    type: str
    count: int


def history(events: Iterable[Event], limit: int | None) -> list[HistoryEntry]:
    """Oldest first; with a limit, the most recent ``limit`` entries (still oldest first)."""
    dated = sorted(((_time_of(e), e) for e in events), key=_chronological)
    entries = [_entry(when, e) for when, e in dated]
    return entries[-limit:] if limit else entries


def _time_of(event: Event) -> datetime | None:
    """When it (last) happened: core Events carry one of several timestamps."""
    meta = event.metadata
    return (
        event.lastTimestamp
        or event.eventTime
        or event.firstTimestamp
        or (meta.creationTimestamp if meta else None)
    )


def _chronological(dated: tuple[datetime | None, Event]) -> tuple[float, int, str]:
    """Undated events first. Event timestamps have whole seconds and a reboot writes
    several Events in one second, so ties go by resourceVersion: opaque by contract,
    but etcd's write counter in practice, and the only finer order the API offers."""
    when, event = dated
    meta = event.metadata
    version = (meta.resourceVersion if meta else None) or ""
    name = (meta.name if meta else None) or ""
    return (
        when.timestamp() if when else float("-inf"),
        int(version) if version.isdigit() else 0,
        name,
    )


def _entry(when: datetime | None, event: Event) -> HistoryEntry:
    return HistoryEntry(
        time=when,
        node=event.involvedObject.name or "",
        reason=event.reason or "",
        message=event.message or "",
        type=event.type or "",
        count=event.count or 1,
    )
