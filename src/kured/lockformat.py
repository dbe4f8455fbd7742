"""The reboot lock's value, in exactly Go kured's format.

The lock is an annotation (``--lock-annotation``, default
``weave.works/kured-node-lock``) on kured's own DaemonSet. Keeping Go kured's
format means a Go kured and this kured can hand the lock to each other during a
rolling image swap, and operators keep their ``kubectl annotate`` habits:

* concurrency 1: ``{"nodeID":"n1","metadata":{"unschedulable":false},
  "created":"<RFC3339Nano>","TTL":<nanoseconds>}``
* concurrency > 1: ``{"maxOwners":N,"locks":[<entries as above>]}``

An entry expires when its TTL is positive and ``now - created >= TTL``. The
``metadata.unschedulable`` field records whether the node was already cordoned
before kured took the lock, so kured leaves such a node cordoned afterwards.

This module is the pure value (parse, render, acquire, release) and the names of
each lock group's annotation; :mod:`kured.lock` reads and writes it on the DaemonSet.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


class LockFormatError(ValueError):
    """The annotation holds something that is not a kured lock."""


@dataclass(frozen=True)
class LockEntry:
    """One holder of the lock."""

    node_id: str
    created: datetime | None = None  # None: Go's zero time (a hand-set lock)
    ttl: timedelta = timedelta(0)  # 0: never expires
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def unschedulable_before(self) -> bool:
        """Whether the node was already cordoned when it took the lock."""
        return bool(self.metadata.get("unschedulable", False))

    def expired(self, now: datetime) -> bool:
        if self.ttl <= timedelta(0):
            return False
        created = self.created or datetime.min.replace(tzinfo=UTC)
        return now - created >= self.ttl


@dataclass(frozen=True)
class LockRecord:
    """The whole annotation value, in either of Go kured's two formats."""

    entries: tuple[LockEntry, ...] = ()

    def live(self, now: datetime) -> tuple[LockEntry, ...]:
        """Entries whose TTL has not run out (what Go kured would count)."""
        return tuple(e for e in self.entries if not e.expired(now))

    def entry_of(self, node_id: str) -> LockEntry | None:
        """This node's entry, expired or not: an expired slot is still ours until reclaimed."""
        return next((e for e in self.entries if e.node_id == node_id), None)

    def holders(self) -> list[str]:
        return [e.node_id for e in self.entries]

    def acquire(
        self, entry: LockEntry, slots: int, reclaim: frozenset[str] = frozenset()
    ) -> LockRecord | None:
        """The record with ``entry`` added, or None when all ``slots`` are taken.

        Entries named in ``reclaim`` (stale holders, see
        :func:`kured.policy.reclaim_reason`) are dropped first; an expired entry
        that is not reclaimed still holds its slot, so a TTL running out during a
        reboot does not let a second node go down. Taking a lock one already
        holds changes nothing, so a restart keeps the original metadata (and with
        it who had cordoned the node).
        """
        if self.entry_of(entry.node_id) is not None:
            return self
        kept = tuple(e for e in self.entries if e.node_id not in reclaim)
        if len(kept) >= slots:
            return None
        return LockRecord((*kept, entry))

    def release(self, node_id: str) -> LockRecord:
        return LockRecord(tuple(e for e in self.entries if e.node_id != node_id))


def parse(text: str | None) -> LockRecord:
    """Read an annotation value in Go kured's single or multi format."""
    if text is None or not text.strip():
        return LockRecord()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise LockFormatError(f"lock annotation is not JSON: {err.msg}") from err
    if not isinstance(value, dict):
        raise LockFormatError("lock annotation is not a JSON object")
    if "locks" in value or "maxOwners" in value:
        locks = value.get("locks") or []
        if not isinstance(locks, list):
            raise LockFormatError("lock annotation field 'locks' is not a list")
        return LockRecord(tuple(_parse_entry(item) for item in locks))
    if not value.get("nodeID"):
        return LockRecord()  # Go kured treats an entry without a holder as free
    return LockRecord((_parse_entry(value),))


def render(record: LockRecord, concurrency: int) -> str | None:
    """The annotation value to write; None means remove the annotation.

    Concurrency 1 writes the single format (removing the annotation when free, as
    Go kured does); above 1 the multi format with ``maxOwners``.
    """
    if concurrency > 1 or len(record.entries) > 1:
        return _dumps(
            {"maxOwners": max(concurrency, 1), "locks": [_entry_json(e) for e in record.entries]}
        )
    if not record.entries:
        return None
    return _dumps(_entry_json(record.entries[0]))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _parse_entry(item: Any) -> LockEntry:
    if not isinstance(item, dict) or not isinstance(item.get("nodeID", ""), str):
        raise LockFormatError("lock entry is not an object with a string 'nodeID'")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, dict):
        metadata = {}
    try:
        ttl_ns = int(item.get("TTL") or 0)
    except (TypeError, ValueError) as err:
        raise LockFormatError("lock entry 'TTL' is not an integer (nanoseconds)") from err
    return LockEntry(
        node_id=item.get("nodeID", ""),
        created=parse_go_time(item.get("created")),
        ttl=timedelta(microseconds=ttl_ns // 1000),
        metadata=metadata,
    )


def _entry_json(entry: LockEntry) -> dict[str, Any]:
    return {
        "nodeID": entry.node_id,
        "metadata": entry.metadata,
        "created": format_go_time(entry.created),
        "TTL": int(entry.ttl / timedelta(microseconds=1)) * 1000,
    }


_FRACTION = re.compile(r"\.(\d+)")
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_go_time(text: Any) -> datetime | None:
    """Go's RFC3339Nano (nanoseconds, ``Z`` or an offset); Go's zero time → None."""
    if not isinstance(text, str) or not text or text == GO_ZERO_TIME:
        return None
    # Python keeps microseconds: trim Go's nanoseconds to six digits.
    normalized = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        parsed = datetime.fromisoformat(normalized.replace("Z", "+00:00"))
    except ValueError as err:
        raise LockFormatError(f"lock entry 'created' is not an RFC3339 time: {text!r}") from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_go_time(moment: datetime | None) -> str:
    """RFC3339Nano in UTC as Go marshals ``time.Time`` (trailing zeros trimmed)."""
    if moment is None:
        return GO_ZERO_TIME
    utc = moment.astimezone(UTC)
    base = utc.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{utc.microsecond:06d}000".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


_NOT_NAME = re.compile(r"[^a-z0-9.-]+")
MAX_NAME = 63  # an annotation key's name part, a label value


def group_slug(group: str) -> str:
    """A lock group's label value made safe for object names, label values and annotation keys.

    A lossy conversion (``Zone_A`` → ``zone-a``) gets a hash of the original appended, so
    two groups never share a lock.
    """
    slug = _NOT_NAME.sub("-", group.lower()).strip("-.")
    if slug != group:
        slug = f"{slug[:40]}-{hashlib.sha256(group.encode()).hexdigest()[:8]}".strip("-")
    return slug


def group_annotation(base: str, group: str) -> str:
    """The lock annotation of one ``--lock-group-label`` group (the base one for no group)."""
    if not group:
        return base
    prefix, slash, name = base.rpartition("/")
    name = f"{name}-{group_slug(group)}"
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return f"{prefix}{slash}{name}"
