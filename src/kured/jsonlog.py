"""``--log-format=json``: one JSON object per line, with the fields of the text form.

Apart from :mod:`kured.logs` so that python-json-logger is imported only when asked for.
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from kured.logfields import go_level, record_fields, timestamp


class JsonLinesFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(json_ensure_ascii=False)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data.update(
            time=timestamp(record), level=go_level(record.levelno), msg=record.getMessage()
        )
        log_data.update(record_fields(record))
