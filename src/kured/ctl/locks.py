"""What the lock annotations and lock Leases say, as an operator wants to see them.

Pure, like :mod:`kured.ctl.model` (which builds the status report from these): the
base annotation (``--lock-annotation``), every ``--lock-group-label`` group's
annotation (``<annotation>-<group>``, :func:`kured.lockformat.group_annotation`), and the
lock Leases (``--lock-backend=lease``), each holder with what kuredctl knows about it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from kured.durations import format_go_duration
from kured.kube import Lease
from kured.lease import GROUP_LABEL, holder_of, lease_entry, lease_name
from kured.lockformat import LockEntry, LockFormatError, parse


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
    group: str = ""  # the --lock-group-label group of ``<annotation>-<group>``; "": base lock

    def state_of(self, name: str) -> str:
        return state_of(self.holders, name)


def state_of(holders: Iterable[Holder], name: str) -> str:
    """``held``, ``expired`` (still holding its slot) or ``""`` for one name."""
    entries = (h for h in holders if h.node_id == name)
    return next(("expired" if h.expired else "held" for h in entries), "")


def summarize_lock(
    annotation: str,
    text: str | None,
    now: datetime,
    node_names: Collection[str] | None,
    group: str = "",
) -> LockSummary:
    """Read the annotation through :func:`kured.lockformat.parse`, keeping what it leaves out.

    :class:`kured.lockformat.LockRecord` deliberately forgets the encoding; kuredctl
    needs it to report the concurrency and to write back the same format.
    ``node_names`` is None when the Nodes could not be listed: then no holder is
    called "not a node".
    """
    form, max_owners = _format_of(text)
    try:
        record = parse(text)
    except LockFormatError as err:
        return LockSummary(annotation, form, max_owners, unreadable=str(err), group=group)
    holders = tuple(_holder(e, now, node_names) for e in record.entries)
    # A multi lock without a usable maxOwners still needs the multi format written back.
    slots = max(max_owners, len(holders), 2) if form is LockFormat.MULTI else max_owners
    return LockSummary(annotation, form, slots, holders, group=group)


def summarize_group_locks(
    annotations: Mapping[str, str],
    base: str,
    now: datetime,
    node_names: Collection[str] | None,
) -> tuple[LockSummary, ...]:
    """Every ``--lock-group-label`` group's lock on the DaemonSet, by group.

    The daemon names them ``<base>-<group>`` (:func:`kured.lockformat.group_annotation`) and
    counts them all for ``--max-unavailable`` by the same prefix; a group's label value
    is not always recoverable from its key (lossy ones carry a hash), so the key's
    suffix names the group.
    """
    prefix = f"{base}-"
    return tuple(
        summarize_lock(key, text, now, node_names, group=key.removeprefix(prefix))
        for key, text in sorted(annotations.items())
        if key.startswith(prefix)
    )


def _holder(
    entry: LockEntry, now: datetime, node_names: Collection[str] | None, lease: Lease | None = None
) -> Holder:
    labels = (lease.metadata.labels if lease and lease.metadata else None) or {}
    return Holder(
        node_id=entry.node_id,
        created=entry.created,
        ttl=entry.ttl,
        # A hand-set entry has no creation time to count its TTL from: the daemon never
        # reclaims it (kured.policy.reclaim_reason), so it has not expired.
        expired=entry.created is not None and entry.expired(now),
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
    names = [_holder_label(h, with_ttl=True) for h in lock.holders]
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


def _holder_label(holder: Holder, *, with_ttl: bool = False) -> str:
    """The name and its notes; ``with_ttl``: an annotation entry's TTL (a Lease's duration
    is its renewal interval, no news)."""
    flags = (
        ("set by hand", holder.hand_set),
        ("not a node", not holder.is_node),
        (f"TTL {format_go_duration(holder.ttl)}", with_ttl and holder.ttl > timedelta(0)),
        ("expired", holder.expired),
    )
    notes = [note for note, on in flags if on]
    return f"{holder.node_id} ({', '.join(notes)})" if notes else holder.node_id
