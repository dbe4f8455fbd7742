"""What each log line carries besides its message: Go's time stamp and level names, and
the ``extra=`` fields of a record (an attached exception as one ``error`` field).

Shared by the text lines of :mod:`kured.logs` and the JSON lines of :mod:`kured.jsonlog`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
GO_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


def go_level(levelno: int) -> str:
    """logrus's name for a level (``warning``, not ``WARN``; critical → ``fatal``)."""
    return GO_LEVELS.get(levelno) or logging.getLevelName(levelno).lower()


def timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """``extra=`` fields, plus ``error`` for an attached exception."""
    fields = {
        key: value
        for key, value in vars(record).items()
        if key not in STANDARD_ATTRS and not key.startswith("_")
    }
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        fields["error"] = f"{type(error).__name__}: {error}"
    return fields
