"""Log lines that look like Go kured's, so existing greps and dashboards keep working.

Go kured logs through logrus; its text form is
``time="2019-12-23T12:39:25Z" level=info msg="Reboot not required"`` followed by
``key=value`` fields in key order, values quoted Go-style only when they hold a
character outside ``[A-Za-z0-9-._/@^+]``. ``--log-format=json`` prints one JSON
object per line with ``time``, ``level``, ``msg`` and the same fields.

Fields are passed the standard way: ``log.info("Draining node %s", n, extra={"node": n})``.
Every record is one line: an attached exception becomes an ``error`` field, never
a multi-line traceback.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Literal, TextIO

from kured.logfields import go_level, record_fields, timestamp

LogFormat = Literal["text", "json"]
_BARE_VALUE = re.compile(r"[A-Za-z0-9\-._/@^+]*")
_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def setup_logging(fmt: LogFormat, stream: TextIO | None = None) -> None:
    """Send every record (kured's at info and up, libraries' at warning and up) to
    ``stream`` (default: stderr, as logrus) in the chosen format. Calling it again
    replaces the previous set-up."""
    handler = _KuredHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_formatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _KuredHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("kured").setLevel(logging.INFO)


def _formatter(fmt: LogFormat) -> logging.Formatter:
    """python-json-logger loads only for ``--log-format=json``: with text logs it would be
    0.2 MiB of every daemon's RSS for nothing (bench/README.md, rss_mib)."""
    if fmt == "text":
        return _TextFormatter()
    from kured.jsonlog import JsonLinesFormatter  # noqa: PLC0415

    return JsonLinesFormatter()


class _KuredHandler(logging.StreamHandler[TextIO]):
    """Marks the handler :func:`setup_logging` installed, so a second call replaces it."""


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "time": timestamp(record),
            "level": go_level(record.levelno),
            "msg": record.getMessage(),
        }
        fields.update(sorted(record_fields(record).items()))
        return " ".join(f"{key}={_go_value(value)}" for key, value in fields.items())


def _go_value(value: object) -> str:
    """logrus's rendering: bare when safe, otherwise a Go double-quoted string."""
    text = str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    return '"' + "".join(_go_escape(char) for char in text) + '"'


def _go_escape(char: str) -> str:
    if char in _GO_ESCAPES:
        return _GO_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
