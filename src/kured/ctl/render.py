"""Text tables and JSON documents for kuredctl's reports.

Tables are for people (aligned columns, "-" for "unknown"); JSON is for scripts
and keeps one stable shape, documented in ``docs/kuredctl.md``: every key is
always present, unknown values are ``null``, and ``schemaVersion`` changes only
when a key changes meaning or goes away.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kured.ctl.locks import Holder, LeaseSummary, LockSummary, describe_leases, describe_lock
from kured.ctl.model import AgentStatus, HistoryEntry, NodeRow, StatusReport, rfc3339
from kured.lockformat import format_go_time
from kured.policy import PauseNote

SCHEMA_VERSION = 1
COLUMN_GAP = "   "
UNKNOWN = "-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

STATUS_COLUMNS = (
    "NODE",
    "REBOOT",
    "WINDOW",
    "BLOCKED BY",
    "LOCK",
    "PHASE",
    "LAST REBOOT",
    "CORDONED",
    "PAUSED",
)
HISTORY_COLUMNS = ("TIME", "NODE", "REASON", "MESSAGE")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, kubectl style. Cells come from annotations and Events that
    anyone with write access can set, so control characters are flattened to spaces:
    one row stays one line and cannot drive the terminal."""
    cells = [list(headers), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = (
        COLUMN_GAP.join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells
    )
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: str) -> str:
    return _CONTROL.sub(" ", value).strip() or UNKNOWN


def yes_no(value: bool | None) -> str:
    return UNKNOWN if value is None else ("yes" if value else "no")


def to_json(document: dict[str, Any]) -> str:
    return json.dumps({"schemaVersion": SCHEMA_VERSION, **document}, indent=2)


# -- status ---------------------------------------------------------------------------


def status_text(report: StatusReport) -> str:
    paused = f"yes, {report.paused.describe()}" if report.paused else "no"
    leases = [("Leases:", describe_leases(report.leases))] if report.leases else []
    groups = [(f"Lock {lock.group}:", describe_lock(lock)) for lock in report.group_locks]
    header = table(
        ("DaemonSet:", f"{report.namespace}/{report.name}"),
        [("Lock:", describe_lock(report.lock)), *groups, *leases, ("Paused:", paused)],
    )
    return f"{header}\n\n{table(STATUS_COLUMNS, [_status_cells(row) for row in report.nodes])}"


def _status_cells(row: NodeRow) -> tuple[str, ...]:
    status = row.status
    return (
        row.name,
        yes_no(status.reboot_required if status else None),
        _window(status),
        status.blocked_by if status else "",
        row.lock,
        row.phase,
        status.last_reboot if status else "",
        yes_no(row.cordoned),
        yes_no(row.paused is not None) if row.is_node else UNKNOWN,
    )


def _window(status: AgentStatus | None) -> str:
    if status is None:
        return UNKNOWN
    return "open" if status.window_open else "closed"


def status_json(report: StatusReport) -> str:
    return to_json(
        {
            "daemonSet": {"namespace": report.namespace, "name": report.name},
            "paused": _pause_json(report.paused),
            "lock": _lock_json(report.lock),
            "groupLocks": [
                {"group": lock.group, **_lock_json(lock)} for lock in report.group_locks
            ],
            "leases": _leases_json(report.leases),
            "nodes": [_node_json(row) for row in report.nodes],
        }
    )


def _pause_json(note: PauseNote | None) -> dict[str, str] | None:
    return None if note is None else note.to_json()


def _lock_json(lock: LockSummary) -> dict[str, Any]:
    return {
        "annotation": lock.annotation,
        "format": str(lock.format),
        "slots": lock.slots,
        "unreadable": lock.unreadable or None,
        "holders": [_holder_json(h) for h in lock.holders],
    }


def _leases_json(leases: LeaseSummary | None) -> dict[str, Any] | None:
    if leases is None:
        return None
    return {
        "count": leases.count,
        "unreadable": leases.unreadable or None,
        "holders": [
            {"lease": h.lease, "group": h.group, **_holder_json(h, since="renewed")}
            for h in leases.holders
        ],
    }


def _holder_json(holder: Holder, since: str = "created") -> dict[str, Any]:
    """An annotation entry's ``created``, or (``since="renewed"``) a Lease's renewTime."""
    return {
        "nodeID": holder.node_id,
        since: format_go_time(holder.created) if holder.created else None,
        "ttlSeconds": int(holder.ttl.total_seconds()),
        "expired": holder.expired,
        "isNode": holder.is_node,
        "unschedulableBefore": holder.unschedulable_before,
    }


def _node_json(row: NodeRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "isNode": row.is_node,
        "status": _agent_json(row.status),
        "progress": str(row.progress) if row.progress else None,
        "phase": row.phase or None,
        "lock": row.lock or None,
        "cordoned": row.cordoned,
        "paused": _pause_json(row.paused),
    }


def _agent_json(status: AgentStatus | None) -> dict[str, Any] | None:
    """The ``kured.dev/status`` annotation, with the daemon's own key names."""
    if status is None:
        return None
    return {
        "rebootRequired": status.reboot_required,
        "reason": status.reason,
        "windowOpen": status.window_open,
        "blockedBy": status.blocked_by,
        "activity": status.activity,
        "lastReboot": status.last_reboot,
    }


# -- history --------------------------------------------------------------------------


def history_text(entries: Sequence[HistoryEntry]) -> str:
    return table(HISTORY_COLUMNS, [_history_cells(entry) for entry in entries])


def _history_cells(entry: HistoryEntry) -> tuple[str, ...]:
    repeated = f" (x{entry.count})" if entry.count > 1 else ""
    return (_time(entry.time), entry.node, entry.reason, entry.message + repeated)


def history_json(entries: Sequence[HistoryEntry]) -> str:
    return to_json({"events": [_event_json(entry) for entry in entries]})


def _event_json(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "time": _time(entry.time) if entry.time else None,
        "node": entry.node,
        "reason": entry.reason,
        "message": entry.message,
        "type": entry.type,
        "count": entry.count,
    }


def _time(moment: datetime | None) -> str:
    return rfc3339(moment) if moment else UNKNOWN
