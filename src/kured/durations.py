"""Go-style durations (``1h30m``, ``90s``, ``500ms``, ``0``), parsed and printed.

Users copy flag values from Go kured manifests and Helm values, and grep logs for
Go's rendering (``1h0m0s``), so both directions follow Go's ``time`` package
rules. Arithmetic is done in integer nanoseconds so ``0.1s`` is exact; the
result is rounded to the microsecond, the resolution of :class:`timedelta`.
"""

from __future__ import annotations

import re
from datetime import timedelta

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
# Go stores durations as int64 nanoseconds; larger values are rejected there too.
_MAX_NS = 2**63 - 1
_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?([a-zµμ]+)")
ACCEPTED_FORM = "use Go form like 90s, 1h30m, 500ms"


class DurationError(ValueError):
    """The text is not a Go duration."""


def parse_go_duration(text: str) -> timedelta:
    """Parse a Go duration string; raise :class:`DurationError` if it is not one."""
    sign, body = _split_sign(text)
    if body == "0":
        return timedelta(0)
    if not body:
        raise DurationError(text)
    total_ns = 0
    position = 0
    while position < len(body):
        match = _COMPONENT.match(body, position)
        if match is None:
            raise DurationError(text)
        total_ns += _component_ns(text, *match.groups())
        position = match.end()
    if total_ns > _MAX_NS:
        raise DurationError(text)
    return sign * _ns_to_timedelta(total_ns)


def _split_sign(text: str) -> tuple[int, str]:
    if text.startswith(("+", "-")):
        return (-1 if text[0] == "-" else 1), text[1:]
    return 1, text


def _component_ns(text: str, whole: str, fraction: str | None, unit: str) -> int:
    """Nanoseconds of one ``<number><unit>`` piece, exactly as Go computes them."""
    if unit not in _NS_PER_UNIT or not (whole or fraction):
        raise DurationError(text)
    scale = _NS_PER_UNIT[unit]
    digits = fraction or ""
    denominator: int = 10 ** len(digits)
    return int(whole or "0") * scale + int(digits or "0") * scale // denominator


def _ns_to_timedelta(ns: int) -> timedelta:
    microseconds, remainder = divmod(ns, 1000)
    return timedelta(microseconds=microseconds + (remainder >= 500))


def format_go_duration(value: timedelta) -> str:
    """Render ``value`` as Go's ``Duration.String`` does: ``1h0m0s``, ``1m30s``, ``500ms``."""
    ns = (value // timedelta(microseconds=1)) * 1000
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        return sign + _format_sub_second(ns)
    hours, ns = divmod(ns, _NS_PER_UNIT["h"])
    minutes, ns = divmod(ns, _NS_PER_UNIT["m"])
    seconds = _decimal(ns, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _format_sub_second(ns: int) -> str:
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _decimal(ns, 1_000) + "µs"
    return _decimal(ns, 1_000_000) + "ms"


def _decimal(amount: int, unit: int) -> str:
    """``amount / unit`` without trailing zeros (``1500, 1000`` → ``1.5``)."""
    whole, rest = divmod(amount, unit)
    if not rest:
        return str(whole)
    width = len(str(unit)) - 1
    return f"{whole}.{rest:0{width}d}".rstrip("0")
