"""Pure functions that turn what the daemon recorded in the cluster into rows.

Nothing here talks to the API server: :mod:`kured.ctl.cluster` fetches the
DaemonSet, its lock Leases, the Nodes and the Events, and these functions decide what they mean
(who holds the lock, which nodes need a reboot, whether kured is paused), so
every rule can be tested without a cluster. The keys read here are the contract
in ``docs/architecture.md`` ("What the daemon records in the cluster").
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from kured.facts import annotations_of
from kured.kube import DaemonSet, Event, Lease, Node
from kured.lease import GROUP_LABEL, holder_of, lease_entry, lease_name
from kured.lock import LockEntry, LockFormatError, parse
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


# -- the lock -----------------------------------------------------------------------


class LockFormat(StrEnum):
    """Which of Go kured's two encodings the annotation uses (``none``: no annotation)."""

    NONE = "none"
    SINGLE = "single"
    MULTI = "multi"


@dataclass(frozen=True)
class Holder:
    """One entry of the lock, with what kuredctl knows about the name in it.

    An expired entry still takes its slot until another node reclaims it, so it
    is a holder like any other; the flag only explains why it may soon go.
    """

    node_id: str
    created: datetime | None  # None: set by hand (``kubectl annotate``), never reclaimed
    ttl: timedelta
    expired: bool
    is_node: bool  # False for names such as "manual", or nodes deleted since
    unschedulable_before: bool
    lease: str = ""  # the Lease it holds (``--lock-backend=lease``); "" for annotation entries
    group: str = ""  # that Lease's ``--lock-group-label`` group ("" without groups)

    @property
    def hand_set(self) -> bool:
        return self.created is None


@dataclass(frozen=True)
class LockSummary:
    """The lock annotation as an operator wants to see it."""

    annotation: str
    format: LockFormat
    slots: int  # how many holders the format allows: 1, or maxOwners
    holders: tuple[Holder, ...] = ()
    unreadable: str = ""  # why the annotation is not a kured lock, if it is not

    def state_of(self, name: str) -> str:
        return _state_of(self.holders, name)


def _state_of(holders: Iterable[Holder], name: str) -> str:
    """``held``, ``expired`` (still holding its slot) or ``""`` for one name."""
    entries = (h for h in holders if h.node_id == name)
    return next(("expired" if h.expired else "held" for h in entries), "")


def summarize_lock(
    annotation: str, text: str | None, now: datetime, node_names: Collection[str] | None
) -> LockSummary:
    """Read the annotation through :func:`kured.lock.parse`, keeping what it leaves out.

    :class:`kured.lock.LockRecord` deliberately forgets the encoding; kuredctl
    needs it to report the concurrency and to write back the same format.
    ``node_names`` is None when the Nodes could not be listed: then no holder is
    called "not a node".
    """
    form, max_owners = _format_of(text)
    try:
        record = parse(text)
    except LockFormatError as err:
        return LockSummary(annotation, form, max_owners, unreadable=str(err))
    holders = tuple(_holder(e, now, node_names) for e in record.entries)
    # A multi lock without a usable maxOwners still needs the multi format written back.
    slots = max(max_owners, len(holders), 2) if form is LockFormat.MULTI else max_owners
    return LockSummary(annotation, form, slots, holders)


def _holder(
    entry: LockEntry, now: datetime, node_names: Collection[str] | None, lease: Lease | None = None
) -> Holder:
    labels = (lease.metadata.labels if lease and lease.metadata else None) or {}
    return Holder(
        node_id=entry.node_id,
        created=entry.created,
        ttl=entry.ttl,
        expired=entry.expired(now),
        is_node=node_names is None or entry.node_id in node_names,
        unschedulable_before=entry.unschedulable_before,
        lease=lease_name(lease) if lease else "",
        group=labels.get(GROUP_LABEL, ""),
    )


def _format_of(text: str | None) -> tuple[LockFormat, int]:
    """The encoding and its ``maxOwners`` (1 for the single format, 0 if unknown)."""
    if text is None or not text.strip():
        return LockFormat.NONE, 1
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        return LockFormat.SINGLE, 1
    if isinstance(raw, dict) and ("locks" in raw or "maxOwners" in raw):
        owners = raw.get("maxOwners")
        return LockFormat.MULTI, owners if isinstance(owners, int) and owners > 0 else 0
    return LockFormat.SINGLE, 1


def describe_lock(lock: LockSummary) -> str:
    """One line: who holds it, out of how many slots, in which format."""
    if lock.unreadable:
        return f"unreadable ({lock.unreadable})"
    names = [_holder_label(h) for h in lock.holders]
    held = f"held by {', '.join(names)}" if names else "free"
    if lock.format is LockFormat.MULTI:
        return f"{held} ({len(lock.holders)} of {lock.slots} slots, multi-owner format)"
    if lock.format is LockFormat.SINGLE:
        return f"{held} (single-owner format)"
    return held


@dataclass(frozen=True)
class LeaseSummary:
    """The lock Leases of the DaemonSet (``--lock-backend=lease``), every group's.

    Leases are made one slot at a time, when a node first needs it, so how many exist
    says nothing about ``--concurrency``: only who holds which is known.
    """

    count: int  # Lease objects labelled with the DaemonSet's name, held or free
    holders: tuple[Holder, ...] = ()  # by Lease name
    unreadable: str = ""  # why they could not be listed (RBAC), if they could not


def summarize_leases(
    leases: Sequence[Lease], now: datetime, node_names: Collection[str] | None, unreadable: str = ""
) -> LeaseSummary | None:
    """None when there is no Lease to show (the annotation backend's clusters).

    A Lease holder is the annotation entry's twin (:func:`kured.lease.lease_entry`): its
    renewTime counts as the creation time, so one without a renewTime reads as set by hand.
    """
    if not leases and not unreadable:
        return None
    held = sorted((lease for lease in leases if holder_of(lease)), key=lease_name)
    holders = tuple(_holder(lease_entry(lease), now, node_names, lease) for lease in held)
    return LeaseSummary(len(leases), holders, unreadable)


def describe_leases(leases: LeaseSummary) -> str:
    """One line: who holds the lock Leases, out of how many there are."""
    if leases.unreadable:
        return f"unreadable ({leases.unreadable})"
    names = [_holder_label(h) for h in leases.holders]
    held = f"held by {', '.join(names)}" if names else "free"
    return f"{held} ({len(leases.holders)} of {leases.count} Leases)"


def _holder_label(holder: Holder) -> str:
    flags = (
        ("set by hand", holder.hand_set),
        ("not a node", not holder.is_node),
        ("expired", holder.expired),
    )
    notes = [note for note, on in flags if on]
    return f"{holder.node_id} ({', '.join(notes)})" if notes else holder.node_id


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
    held = summarize_leases(leases, now, names, leases_unreadable)
    holders = [*lock.holders, *(held.holders if held else ())]
    rows = [_node_row(node, holders) for node in sorted(nodes, key=_node_name)]
    strangers = sorted({h.node_id for h in holders if not h.is_node})
    rows += [NodeRow(name, is_node=False, lock=_state_of(holders, name)) for name in strangers]
    return StatusReport(
        namespace=(meta.namespace if meta else None) or "",
        name=(meta.name if meta else None) or "",
        lock=lock,
        paused=paused_by(ds),
        nodes=tuple(rows),
        leases=held,
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
        lock=_state_of(holders, name),
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
