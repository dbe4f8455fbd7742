"""The maintenance window: on which days, between which times, in which zone.

Semantics follow Go kured's ``timewindow`` package so schedules behave the same
after a swap:

* A moment is in the window when its weekday *in the window's zone* is one of
  ``days`` and its wall-clock time of day ``t`` satisfies ``start <= t <= end``,
  both ends inclusive to the second: ``end=17:00`` keeps the window open until
  17:00:00.999999, which is why Go's default end is ``23:59:59``.
* ``start > end`` wraps past midnight: ``22:00``-``02:00`` is open from 22:00 to
  midnight and from midnight to 02:00. As in Go, the weekday tested is the one of
  the moment itself, so with ``days=sa`` that window is open early on Saturday
  (00:00-02:00) and late on Saturday (22:00-24:00), not on Sunday morning.
* Times are wall-clock times, which makes daylight-saving changes behave the way
  an operator reads a clock: a wall time skipped by a spring-forward gap never
  happens, so a window starting at 02:30 on the day Berlin jumps from 02:00 to
  03:00 opens at 03:00 (and a window lying wholly inside the skipped hour does
  not open that day); a wall time repeated by a fall-back fold is inside the
  window both times it happens.

Our ``--reboot-window`` (several windows) and ``--blackout-dates`` build a
:class:`Schedule` on top: open when any window is open and no blackout covers the
day. A ``--reboot-window`` names the days its window *starts* on
(``by_start_day``): ``fri 22:00-04:00`` is open into Saturday morning, which is
how people read a night window; the Go flags keep Go's reading above.

Everything here is pure except :func:`load_zone`, which reads the zone database.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

DAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
ALL_DAYS = frozenset(range(7))
_DAY_WORDS = {
    word: number
    for number, words in enumerate(
        (
            ("su", "sun", "sunday"),
            ("mo", "mon", "monday"),
            ("tu", "tue", "tuesday"),
            ("we", "wed", "wednesday"),
            ("th", "thu", "thursday"),
            ("fr", "fri", "friday"),
            ("sa", "sat", "saturday"),
        )
    )
    for word in words
}
DAYS_FORM = "use su,mo,tu,we,th,fr,sa (or sun/sunday…, or 0-6 with 0=Sunday)"
WINDOW_FORM = (
    'use "DAYS START-END [ZONE]" like "mon-fri 22:00-04:00 Europe/Berlin" or '
    '"sat,sun 0:00-23:59:59"; DAYS is a list of days and ranges, or * for every day'
)
BLACKOUT_FORM = (
    "use YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD (both days included), optionally followed "
    "by a time zone"
)
TIME_FORM = "use 15:04, 15:04:05, 03:04pm, 15, 03pm or 3pm"
ZONE_FORM = "use an IANA name like Europe/Berlin, UTC, or Local"
_TIME_OF_DAY = re.compile(r"(\d{1,2})(?::(\d{2})(?::(\d{2}))?)?([ap]m)?", re.IGNORECASE)
# Far enough ahead to step over a week plus a skipped day (Samoa skipped 2011-12-30).
_HORIZON = timedelta(days=15)
_ONE_HOUR = 3600
_ONE_DAY = 86400
_MONDAY_FIRST = (1, 2, 3, 4, 5, 6, 0)


@dataclass(frozen=True)
class Window:
    """Days (0 = Sunday … 6 = Saturday, Go's numbering) × [start, end] in ``tz``.

    ``by_start_day``: a window past midnight belongs to the day it starts on (our
    ``--reboot-window``), instead of Go's test of the moment's own weekday.
    """

    days: frozenset[int]
    start: time
    end: time
    tz: tzinfo
    by_start_day: bool = False

    def __post_init__(self) -> None:
        if not self.days or not self.days <= ALL_DAYS:
            raise ValueError(f"days must be a non-empty subset of 0-6, got {sorted(self.days)}")

    @classmethod
    def always(cls) -> Window:
        """Go kured's default: every day from 0:00 to 23:59:59 UTC."""
        return cls(ALL_DAYS, time(0, 0), time(23, 59, 59), UTC)

    def is_open(self, now: datetime) -> bool:
        """Whether the aware moment ``now`` is inside the window."""
        local = _aware(now).astimezone(self.tz)
        wall = time(local.hour, local.minute, local.second)
        day = local.date()
        if self.by_start_day and self.start > self.end and wall <= self.end:
            day -= timedelta(days=1)  # the small hours of a window that started yesterday
        return _weekday(day) in self.days and self._contains(wall)

    def always_open(self) -> bool:
        """Every second of every day (Go kured's default window is)."""
        gap = (_seconds(self.start) - _seconds(self.end)) % _ONE_DAY
        return self.days == ALL_DAYS and gap == 1

    def next_open(self, now: datetime) -> datetime:
        """``now`` if the window is open, else the first later moment it is.

        The result is in ``now``'s zone: a moment inside a fall-back fold, expressed
        in the window's zone, would compare unequal to the same instant in UTC (PEP 495).

        The window can only open at a wall-clock ``start``, at a midnight (the weekday
        changes) or at a zone transition (the wall clock jumps), so the earliest open
        one of those candidates is the answer.
        """
        if self.is_open(now):
            return now
        after = now.astimezone(UTC)
        openings = (c for c in self._candidates(after) if c > after and self.is_open(c))
        return min(openings).astimezone(now.tzinfo)

    def describe(self) -> str:
        """Go kured's rendering, ``SunMonTueWedThuFriSat between 00:00 and 23:59 UTC``, or
        for a ``--reboot-window`` its own form, ``mon-fri 22:00-04:00 Europe/Berlin``."""
        if self.by_start_day:
            span = f"{_clock(self.start)}-{_clock(self.end)}"
            return f"{_describe_days(self.days)} {span} {self.tz}"
        days = "".join(name if n in self.days else "---" for n, name in enumerate(DAY_NAMES))
        return f"{days} between {self.start:%H:%M} and {self.end:%H:%M} {self.tz}"

    def _contains(self, t: time) -> bool:
        if self.start <= self.end:
            return self.start <= t <= self.end
        return t >= self.start or t <= self.end

    def _candidates(self, after: datetime) -> Iterator[datetime]:
        """UTC moments at which the window may open, from ``after``'s local day on."""
        first_day = after.astimezone(self.tz).date()
        for offset in range(_HORIZON.days):
            day = first_day + timedelta(days=offset)
            for wall in (time(0, 0), self.start):
                for fold in (0, 1):  # both readings of a repeated or skipped wall time
                    local = datetime.combine(day, wall, tzinfo=self.tz).replace(fold=fold)
                    yield local.astimezone(UTC)
        yield from _transitions(self.tz, after, after + _HORIZON)


@dataclass(frozen=True)
class Blackout:
    """Whole days, ``first`` to ``last`` inclusive, in ``tz``, on which nothing reboots."""

    first: date
    last: date
    tz: tzinfo

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"{self.first}..{self.last} ends before it starts; {BLACKOUT_FORM}")

    def contains(self, now: datetime) -> bool:
        return self.first <= _aware(now).astimezone(self.tz).date() <= self.last

    def ends(self) -> datetime:
        """The first moment after the blackout: midnight after ``last``, in UTC."""
        midnight = datetime.combine(self.last + timedelta(days=1), time(0), tzinfo=self.tz)
        return midnight.astimezone(UTC)

    def describe(self) -> str:
        days = str(self.first) if self.first == self.last else f"{self.first}..{self.last}"
        return f"{days} {self.tz}"


@dataclass(frozen=True)
class Schedule:
    """When reboots may happen: inside any of ``windows``, never on a blackout day."""

    windows: tuple[Window, ...] = (Window.always(),)
    blackouts: tuple[Blackout, ...] = ()

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("a schedule needs at least one window")

    @classmethod
    def of(
        cls, window: Window, reboot_windows: Iterable[Window], blackouts: Iterable[Blackout]
    ) -> Schedule:
        """The flags combined: ``--reboot-window`` replaces the Go flags' window when that
        is the whole week (their default), and is an alternative to it otherwise."""
        extra = tuple(reboot_windows)
        windows = extra if extra and window.always_open() else (window, *extra)
        return cls(windows, tuple(blackouts))

    def is_open(self, now: datetime) -> bool:
        if any(blackout.contains(now) for blackout in self.blackouts):
            return False
        return any(window.is_open(now) for window in self.windows)

    def next_open(self, now: datetime) -> datetime:
        """``now`` if open, else the first later moment that is (in ``now``'s zone).

        Each round either finds an open moment outside every blackout or jumps past the
        end of the blackouts in the way, which lie strictly later, so it terminates.
        """
        moment = now
        while True:
            moment = min(window.next_open(moment) for window in self.windows)
            covering = [b for b in self.blackouts if b.contains(moment)]
            if not covering:
                return moment.astimezone(now.tzinfo)
            moment = max(blackout.ends() for blackout in covering)

    def describe(self) -> str:
        """The windows (Go's rendering when only the Go flags are used), then the blackouts."""
        text = "; ".join(window.describe() for window in self.windows)
        if self.blackouts:
            text += " except " + ", ".join(b.describe() for b in self.blackouts)
        return text


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"need an aware datetime, got {moment!r}")
    return moment


def _weekday(day: date) -> int:
    return day.isoweekday() % 7


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def _clock(t: time) -> str:
    return f"{t:%H:%M:%S}" if t.second else f"{t:%H:%M}"


def _describe_days(days: frozenset[int]) -> str:
    """Monday-first runs: ``mon-fri``, ``sat,sun``, ``*`` for the whole week."""
    if days == ALL_DAYS:
        return "*"
    runs: list[list[str]] = []
    previous = -2
    for position, day in enumerate(_MONDAY_FIRST):
        if day in days:
            name = DAY_NAMES[day].lower()
            if position == previous + 1:
                runs[-1].append(name)
            else:
                runs.append([name])
            previous = position
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(run) for run in runs)


def _transitions(tz: tzinfo, start: datetime, stop: datetime) -> Iterator[datetime]:
    """Moments in [start, stop) where ``tz``'s UTC offset changes (found to the second).

    zoneinfo does not expose its transition table, so sample hourly and bisect.
    """
    begin, end = int(start.timestamp()), int(stop.timestamp())
    for lo in range(begin, end, _ONE_HOUR):
        hi = lo + _ONE_HOUR
        if _offset(tz, lo) != _offset(tz, hi):
            yield datetime.fromtimestamp(_bisect_change(tz, lo, hi), UTC)


def _bisect_change(tz: tzinfo, lo: int, hi: int) -> int:
    """First second in (lo, hi] with a different offset than ``lo``."""
    before = _offset(tz, lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(tz, mid) == before:
            lo = mid
        else:
            hi = mid
    return hi


def _offset(tz: tzinfo, timestamp: int) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, tz).utcoffset()


def parse_days(items: Iterable[str]) -> frozenset[int]:
    """Day names (``su``/``sun``/``sunday`` …, any case) or numbers 0-6 (0 = Sunday).

    Empty items are skipped as in Go; an empty result is an error here, because a
    window that never opens is almost always a mistake (stop kured to stop reboots).
    """
    days = frozenset(_parse_day(item.strip()) for item in items if item.strip())
    if not days:
        raise ValueError(f"no day given; {DAYS_FORM}")
    return days


def _parse_day(item: str) -> int:
    if re.fullmatch(r"[+-]?\d+", item):
        if 0 <= int(item) <= 6:
            return int(item)
        raise ValueError(f'"{item}" is out of range; {DAYS_FORM}')
    try:
        return _DAY_WORDS[item.lower()]
    except KeyError:
        raise ValueError(f'"{item}" is not a day; {DAYS_FORM}') from None


def parse_reboot_window(text: str, default_zone: tzinfo) -> Window:
    """``DAYS START-END [ZONE]`` (``--reboot-window``); the zone defaults to ``default_zone``.

    DAYS is ``*`` or a comma list of days and ranges (``mon-fri``, ``fri-mon`` wraps,
    ``sat,sun``); times take every form of ``--start-time``, and as there the end is
    inclusive to the second and an end before the start runs past midnight.
    """
    fields = text.split()
    if len(fields) not in (2, 3):
        raise ValueError(f'"{text}" is not a reboot window; {WINDOW_FORM}')
    start, dash, end = fields[1].partition("-")
    if not dash:
        raise ValueError(f'"{fields[1]}" is not a START-END time range; {WINDOW_FORM}')
    zone = load_zone(fields[2]) if len(fields) == 3 else default_zone
    days = _parse_day_spec(fields[0])
    return Window(days, parse_time_of_day(start), parse_time_of_day(end), zone, by_start_day=True)


def _parse_day_spec(text: str) -> frozenset[int]:
    if text == "*":
        return ALL_DAYS
    days: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.partition("-")
        if not item or (dash and not (first and last)):
            raise ValueError(f'"{text}" is not a list of days; {WINDOW_FORM}')
        low = _parse_day(first)
        high = _parse_day(last) if dash else low
        days.update((low + step) % 7 for step in range((high - low) % 7 + 1))
    return frozenset(days)


def parse_blackout_dates(text: str, default_zone: tzinfo) -> tuple[Blackout, ...]:
    """``--blackout-dates``: ``2026-12-24..2026-12-26`` or one day, comma-separated, each
    optionally followed by a zone (default ``default_zone``): ``2026-12-31 Asia/Tokyo``."""
    return tuple(_parse_blackout(item.strip(), default_zone) for item in text.split(","))


def _parse_blackout(text: str, default_zone: tzinfo) -> Blackout:
    fields = text.split()
    if len(fields) not in (1, 2):
        raise ValueError(f'"{text}" is not a date range; {BLACKOUT_FORM}')
    first, dots, last = fields[0].partition("..")
    zone = load_zone(fields[1]) if len(fields) == 2 else default_zone
    return Blackout(_parse_date(first), _parse_date(last if dots else first), zone)


def _parse_date(text: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f'"{text}" is not a date; {BLACKOUT_FORM}')
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f'"{text}" is not a date of the calendar; {BLACKOUT_FORM}') from None


def parse_time_of_day(text: str) -> time:
    """Every form Go kured accepts (15:04, 15:04:05, 03:04pm, 15, 03pm, 3pm).

    am/pm may be in any case, and a one-digit hour is also accepted before
    minutes (``3:04pm``); both are supersets of Go's forms.
    """
    match = _TIME_OF_DAY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f'"{text}" is not a time of day; {TIME_FORM}')
    hour, minute, second = (int(part or 0) for part in match.groups()[:3])
    meridiem = (match.group(4) or "").lower()
    if meridiem:
        if hour > 12:
            raise ValueError(f'"{text}": hour {hour} is not on a 12-hour clock; {TIME_FORM}')
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f'"{text}" is not a time of day; {TIME_FORM}')
    return time(hour, minute, second)


def load_zone(name: str) -> tzinfo:
    """An IANA zone, ``UTC`` (also for ""), or ``Local`` (the machine's zone, as Go).

    zoneinfo is imported only for a zone other than UTC (Go kured's default): with the
    sysconfig it reads its search path from, it is 1 MiB of every daemon's RSS.
    """
    if name in ("", "UTC"):
        return UTC
    if name == "Local":
        return _local_zone()
    from zoneinfo import ZoneInfo  # noqa: PLC0415  # see above

    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # not found, malformed key, or a directory
        raise ValueError(f'"{name}" is not a time zone; {ZONE_FORM}') from None


def _local_zone() -> tzinfo:
    """Go's rule: $TZ if set ("" = UTC, a leading ":" ignored, a path read as a zone
    file), else /etc/localtime, else UTC; a zone that cannot be loaded means UTC."""
    from zoneinfo import ZoneInfo  # noqa: PLC0415  # as in load_zone

    tz_name = os.environ.get("TZ", ":/etc/localtime").lstrip(":")
    try:
        if tz_name.startswith("/"):
            with open(tz_name, "rb") as zone_file:
                return ZoneInfo.from_file(zone_file, key="Local")
        return ZoneInfo(tz_name) if tz_name not in ("", "UTC") else UTC
    except (KeyError, ValueError, OSError):
        return UTC
