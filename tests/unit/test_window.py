"""The maintenance window: Go kured's semantics, DST behaviour, and its properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kured.window import (
    ALL_DAYS,
    Blackout,
    Schedule,
    Window,
    load_zone,
    parse_blackout_dates,
    parse_days,
    parse_reboot_window,
    parse_time_of_day,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")
SUNDAY = frozenset({0})
SATURDAY_2024_06_01 = datetime(2024, 6, 1, tzinfo=UTC)


def utc(  # noqa: PLR0917 - mirrors datetime()
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def window(
    start: str, end: str, tz: ZoneInfo = UTC_ZONE, days: frozenset[int] = ALL_DAYS
) -> Window:
    return Window(days, parse_time_of_day(start), parse_time_of_day(end), tz)


# --- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["su", "mo", "tu", "we", "th", "fr", "sa"], ALL_DAYS),
        (["Sun", "MONDAY", "tue"], {0, 1, 2}),
        (["0", "6", "3"], {0, 3, 6}),
        ([" fr ", "", "sat"], {5, 6}),
        (["wednesday", "we", "3"], {3}),
    ],
)
def test_parse_days(items: list[str], expected: set[int]) -> None:
    assert parse_days(items) == expected


@pytest.mark.parametrize(
    ("items", "needle"),
    [
        (["funday"], "not a day"),
        (["7"], "out of range"),
        (["-1"], "out of range"),
        ([""], "no day given"),
        ([], "no day given"),
    ],
)
def test_parse_days_rejects(items: list[str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as error:
        parse_days(items)
    assert "0=Sunday" in str(error.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15:04", time(15, 4)),
        ("15:04:05", time(15, 4, 5)),
        ("03:04pm", time(15, 4)),
        ("15", time(15)),
        ("03pm", time(15)),
        ("3pm", time(15)),
        ("3PM", time(15)),
        ("11Am", time(11)),
        ("12am", time(0)),
        ("12pm", time(12)),
        ("0:00", time(0)),
        ("23:59:59", time(23, 59, 59)),
        ("7", time(7)),
        ("3:04pm", time(15, 4)),
    ],
)
def test_parse_time_of_day_accepts_go_forms(text: str, expected: time) -> None:
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize(
    "text",
    ["25:00", "24:00", "12:60", "12:00:60", "13pm", "noon", "", "1:2", "3 pm", "15:04:05:00", "-1"],
)
def test_parse_time_of_day_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="15:04, 15:04:05, 03:04pm, 15, 03pm or 3pm"):
        parse_time_of_day(text)


def test_load_zone_names() -> None:
    assert load_zone("Europe/Berlin") == BERLIN
    assert str(load_zone("UTC")) == str(load_zone("")) == "UTC"


@pytest.mark.parametrize("name", ["Mars/Olympus", "Europe", "../etc/passwd", "/etc/passwd", "utc "])
def test_load_zone_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="is not a time zone; use an IANA name"):
        load_zone(name)


def test_local_zone_follows_tz_like_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")
    assert str(load_zone("Local")) == "Europe/Paris"
    monkeypatch.setenv("TZ", "")
    assert str(load_zone("Local")) == "UTC"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert str(load_zone("Local")) == "UTC"


def test_local_zone_without_tz_reads_etc_localtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TZ", raising=False)
    zone = load_zone("Local")
    assert str(zone) in ("Local", "UTC")  # UTC only when /etc/localtime is missing
    assert datetime(2024, 1, 1, tzinfo=zone).utcoffset() is not None


# --- Go kured's semantics -------------------------------------------------------------


def test_default_is_always_open_and_described_as_go_does() -> None:
    always = Window.always()
    assert always.describe() == "SunMonTueWedThuFriSat between 00:00 and 23:59 UTC"
    for moment in (utc(2024, 1, 1), utc(2024, 6, 1, 23, 59, 59, 999999), utc(2030, 2, 3, 12)):
        assert always.is_open(moment)


def test_describe_marks_missing_days_and_shows_zone() -> None:
    w = window("3pm", "1:30", BERLIN, frozenset({1, 2, 5}))
    assert w.describe() == "---MonTue------Fri--- between 15:00 and 01:30 Europe/Berlin"


def test_both_ends_inclusive_to_the_second() -> None:
    w = window("09:00", "17:00")
    assert not w.is_open(utc(2024, 6, 3, 8, 59, 59, 999999))
    assert w.is_open(utc(2024, 6, 3, 9))
    assert w.is_open(utc(2024, 6, 3, 17, 0, 0, 999999))
    assert not w.is_open(utc(2024, 6, 3, 17, 0, 1))


def test_start_equal_end_is_a_one_second_window() -> None:
    w = window("12:00", "12:00")
    assert w.is_open(utc(2024, 6, 3, 12, 0, 0, 500000))
    assert not w.is_open(utc(2024, 6, 3, 12, 0, 1))


def test_start_after_end_wraps_past_midnight() -> None:
    w = window("22:00", "02:00")
    assert w.is_open(utc(2024, 6, 3, 23))
    assert w.is_open(utc(2024, 6, 4, 1, 59))
    assert not w.is_open(utc(2024, 6, 4, 2, 0, 1))
    assert not w.is_open(utc(2024, 6, 4, 12))
    assert w.next_open(utc(2024, 6, 4, 12)) == utc(2024, 6, 4, 22)


def test_wrapped_window_checks_the_moments_own_weekday_as_go_does() -> None:
    saturday = SATURDAY_2024_06_01
    assert saturday.isoweekday() == 6
    w = window("22:00", "02:00", days=frozenset({6}))
    assert w.is_open(saturday.replace(hour=1))
    assert w.is_open(saturday.replace(hour=23))
    assert not w.is_open(saturday.replace(hour=1) + timedelta(days=1))
    assert w.next_open(saturday.replace(hour=3)) == saturday.replace(hour=22)


def test_days_are_read_in_the_windows_zone() -> None:
    # 23:30 UTC on Saturday is already Sunday in Berlin.
    w = window("0:00", "23:59:59", BERLIN, SUNDAY)
    assert w.is_open(SATURDAY_2024_06_01.replace(hour=23, minute=30))


def test_next_open_is_now_when_open() -> None:
    now = utc(2024, 6, 3, 10)
    assert window("09:00", "17:00").next_open(now) is now


def test_next_open_skips_to_the_next_allowed_day() -> None:
    w = window("02:00", "04:00", BERLIN, SUNDAY)
    # Monday 2024-06-03 noon → Sunday 2024-06-09 02:00 CEST.
    assert w.next_open(utc(2024, 6, 3, 12)) == datetime(2024, 6, 9, 2, tzinfo=BERLIN)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        Window.always().is_open(datetime(2024, 1, 1))


def test_days_must_be_a_non_empty_subset_of_the_week() -> None:
    for days in (frozenset(), frozenset({7})):
        with pytest.raises(ValueError, match="days"):
            Window(days, time(0), time(1), BERLIN)


# --- daylight saving: wall-clock semantics ----------------------------------------------
# Berlin 2024: 02:00 CET → 03:00 CEST on 31 March (01:00 UTC); 03:00 CEST → 02:00 CET on
# 27 October (01:00 UTC). New York 2024: 02:00 EST → 03:00 EDT on 10 March (07:00 UTC);
# 02:00 EDT → 01:00 EST on 3 November (06:00 UTC).


def test_berlin_spring_forward_window_starting_in_the_gap_opens_at_the_jump() -> None:
    w = window("02:30", "04:00", BERLIN, SUNDAY)
    assert not w.is_open(utc(2024, 3, 31, 0, 59, 59))  # 01:59:59 CET
    assert w.next_open(utc(2024, 3, 31, 0, 30)) == utc(2024, 3, 31, 1)  # 03:00 CEST
    assert w.next_open(utc(2024, 3, 31, 0, 30).astimezone(BERLIN)).utcoffset() == timedelta(hours=2)
    assert w.is_open(utc(2024, 3, 31, 2))  # 04:00 CEST
    assert not w.is_open(utc(2024, 3, 31, 2, 0, 1))


def test_berlin_spring_forward_wrapped_window_loses_the_skipped_hour() -> None:
    w = window("23:00", "02:30", BERLIN)
    assert w.is_open(utc(2024, 3, 31, 0, 59, 59))  # 01:59:59 CET
    assert not w.is_open(utc(2024, 3, 31, 1))  # 03:00 CEST
    assert w.next_open(utc(2024, 3, 31, 1)) == utc(2024, 3, 31, 21)  # 23:00 CEST


def test_berlin_fall_back_repeated_wall_time_is_open_both_times() -> None:
    w = window("02:00", "02:30", BERLIN, SUNDAY)
    assert w.is_open(utc(2024, 10, 27, 0, 15))  # 02:15 CEST
    assert not w.is_open(utc(2024, 10, 27, 0, 45))  # 02:45 CEST
    assert w.next_open(utc(2024, 10, 27, 0, 45)) == utc(2024, 10, 27, 1)  # 02:00 CET
    assert w.is_open(utc(2024, 10, 27, 1, 30))  # 02:30 CET
    assert not w.is_open(utc(2024, 10, 27, 1, 30, 1))


def test_new_york_spring_forward_window_inside_the_gap_waits_a_week() -> None:
    w = window("02:00", "02:59", NEW_YORK, SUNDAY)
    nxt = w.next_open(utc(2024, 3, 10, 6))  # 01:00 EST
    assert nxt == datetime(2024, 3, 17, 2, tzinfo=NEW_YORK)


def test_new_york_fall_back_window_lasts_two_real_hours() -> None:
    w = window("01:00", "01:59:59", NEW_YORK, SUNDAY)
    assert w.is_open(utc(2024, 11, 3, 5, 30))  # 01:30 EDT
    assert w.is_open(utc(2024, 11, 3, 6, 30))  # 01:30 EST
    assert not w.is_open(utc(2024, 11, 3, 7))  # 02:00 EST


def test_new_york_overnight_window_across_fall_back_stays_open() -> None:
    w = window("22:00", "06:00", NEW_YORK)
    start, end = utc(2024, 11, 3, 2), utc(2024, 11, 3, 11)  # 22:00 EDT → 06:00 EST
    moment = start
    while moment <= end:
        assert w.is_open(moment), moment.astimezone(NEW_YORK)
        moment += timedelta(minutes=10)
    assert not w.is_open(end + timedelta(seconds=1))
    assert not w.is_open(start - timedelta(seconds=1))


# --- properties -------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "Pacific/Apia",
]

windows = st.builds(
    Window,
    days=st.frozensets(st.integers(0, 6), min_size=1),
    start=st.times().map(lambda t: t.replace(microsecond=0)),
    end=st.times().map(lambda t: t.replace(microsecond=0)),
    tz=st.sampled_from(ZONES).map(ZoneInfo),
)
moments = st.datetimes(
    min_value=datetime(2005, 1, 1), max_value=datetime(2037, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(windows, moments)
def test_next_open_is_the_first_open_moment(w: Window, now: datetime) -> None:
    assert_first_open(w, now)


def assert_first_open(w: Window, now: datetime) -> None:
    nxt = w.next_open(now)
    assert nxt >= now
    assert w.is_open(nxt)
    assert nxt - now <= timedelta(days=15)
    if nxt == now:
        return
    just_before = nxt - timedelta(microseconds=1)
    assert just_before <= now or not w.is_open(just_before)
    for k in range(1, 40):
        # timedelta arithmetic rounds to whole microseconds: a probe of a gap of a few
        # microseconds can land on nxt itself, which is open.
        assert not w.is_open(min(now + (nxt - now) * k / 40, just_before))


@given(windows, moments)
def test_open_moments_are_their_own_next_open(w: Window, now: datetime) -> None:
    if w.is_open(now):
        assert w.next_open(now) == now


# --- --reboot-window, --blackout-dates and the schedule ----------------------------------


@pytest.mark.parametrize(
    ("text", "days", "start", "end", "zone"),
    [
        ("mon-fri 22:00-04:00 Europe/Berlin", {1, 2, 3, 4, 5}, time(22), time(4), BERLIN),
        ("sat,sun 00:00-23:59", {0, 6}, time(0), time(23, 59), UTC_ZONE),
        ("* 1am-3:30am", ALL_DAYS, time(1), time(3, 30), UTC_ZONE),
        ("fri-mon 10pm-2am America/New_York", {5, 6, 0, 1}, time(22), time(2), NEW_YORK),
        ("Monday,WED-th 0:00:30-23", {1, 3, 4}, time(0, 0, 30), time(23), UTC_ZONE),
        ("1-5 15-16", {1, 2, 3, 4, 5}, time(15), time(16), UTC_ZONE),
    ],
)
def test_parse_reboot_window(
    text: str, days: set[int], start: time, end: time, zone: ZoneInfo
) -> None:
    assert parse_reboot_window(text, UTC_ZONE) == Window(
        frozenset(days), start, end, zone, by_start_day=True
    )


def test_reboot_window_zone_defaults_to_the_given_one() -> None:
    assert parse_reboot_window("* 1-2", BERLIN).tz == BERLIN


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("mon", "is not a reboot window"),
        ("mon 1-2 UTC extra", "is not a reboot window"),
        ("mon 22:00", "is not a START-END time range"),
        ("funday 1-2", '"funday" is not a day'),
        ("mon- 1-2", "is not a list of days"),
        ("mon,,tue 1-2", "is not a list of days"),
        ("mon 25:00-2", "is not a time of day"),
        ("mon 1-2 Mars/Olympus", "is not a time zone"),
    ],
)
def test_parse_reboot_window_rejects_with_the_form(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_reboot_window(text, UTC_ZONE)


def test_reboot_window_days_are_the_days_it_starts_on() -> None:
    friday_night = parse_reboot_window("fri 22:00-04:00", UTC_ZONE)
    assert friday_night.is_open(utc(2024, 6, 1, 3))  # Saturday 03:00
    assert not friday_night.is_open(utc(2024, 5, 31, 3))  # Friday 03:00: Thursday's night
    assert friday_night.is_open(utc(2024, 5, 31, 23))
    assert friday_night.next_open(utc(2024, 6, 1, 5)) == utc(2024, 6, 7, 22)


def test_reboot_window_describes_itself_in_its_own_form() -> None:
    assert parse_reboot_window("mon-fri 22:00-04:00 Europe/Berlin", UTC_ZONE).describe() == (
        "mon-fri 22:00-04:00 Europe/Berlin"
    )
    assert parse_reboot_window("sun,sat,tue 1:00:30-2", UTC_ZONE).describe() == (
        "tue,sat,sun 01:00:30-02:00 UTC"
    )
    assert parse_reboot_window("* 0-23:59:59", UTC_ZONE).describe() == "* 00:00-23:59:59 UTC"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-24..2026-12-26", [(date(2026, 12, 24), date(2026, 12, 26), UTC_ZONE)]),
        (
            "2026-12-31 Asia/Tokyo",
            [(date(2026, 12, 31), date(2026, 12, 31), ZoneInfo("Asia/Tokyo"))],
        ),
        (
            "2026-12-24, 2027-01-01..2027-01-02 Europe/Berlin",
            [
                (date(2026, 12, 24), date(2026, 12, 24), UTC_ZONE),
                (date(2027, 1, 1), date(2027, 1, 2), BERLIN),
            ],
        ),
    ],
)
def test_parse_blackout_dates(text: str, expected: list[tuple[date, date, ZoneInfo]]) -> None:
    assert parse_blackout_dates(text, UTC_ZONE) == tuple(Blackout(*each) for each in expected)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("2026-12-26..2026-12-24", "ends before it starts"),
        ("2026-02-30", "not a date of the calendar"),
        ("24.12.2026", "is not a date"),
        ("2026-12-24..", "is not a date"),
        ("2026-12-24 Europe/Berlin extra", "is not a date range"),
        ("2026-12-24 Mars/Olympus", "is not a time zone"),
        ("", "is not a date range"),
    ],
)
def test_parse_blackout_dates_rejects_with_the_form(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_blackout_dates(text, UTC_ZONE)


def test_blackout_days_are_whole_days_in_their_zone() -> None:
    (christmas,) = parse_blackout_dates("2026-12-24..2026-12-26", BERLIN)
    assert christmas.contains(utc(2026, 12, 23, 23))  # 00:00 on the 24th in Berlin
    assert not christmas.contains(utc(2026, 12, 23, 22, 59, 59))
    assert christmas.contains(utc(2026, 12, 26, 22, 59, 59))
    assert not christmas.contains(utc(2026, 12, 26, 23))
    assert christmas.ends() == utc(2026, 12, 26, 23)


def test_reboot_windows_replace_the_whole_week_default() -> None:
    night = parse_reboot_window("* 01:00-02:00", UTC_ZONE)
    schedule = Schedule.of(Window.always(), [night], [])
    assert schedule.windows == (night,)
    assert not schedule.is_open(utc(2024, 6, 3, 12))


def test_reboot_windows_add_to_a_narrowed_go_window() -> None:
    saturday = window("0:00", "23:59:59", days=frozenset({6}))
    night = parse_reboot_window("mon 01:00-02:00", UTC_ZONE)
    schedule = Schedule.of(saturday, [night], [])
    assert schedule.windows == (saturday, night)
    assert schedule.is_open(SATURDAY_2024_06_01.replace(hour=12))
    assert schedule.is_open(utc(2024, 6, 3, 1, 30))
    assert not schedule.is_open(utc(2024, 6, 3, 3))


def test_go_flags_alone_keep_go_kureds_description() -> None:
    assert Schedule.of(Window.always(), [], []).describe() == Window.always().describe()


def test_blackout_closes_every_window_and_next_open_skips_it() -> None:
    blackouts = parse_blackout_dates("2026-12-24..2026-12-26", UTC_ZONE)
    schedule = Schedule.of(Window.always(), [], blackouts)
    assert not schedule.is_open(utc(2026, 12, 25, 12))
    assert schedule.next_open(utc(2026, 12, 24, 0, 0, 1)) == utc(2026, 12, 27)
    assert schedule.describe().endswith(" except 2026-12-24..2026-12-26 UTC")


def test_next_open_after_a_blackout_waits_for_a_window() -> None:
    night = parse_reboot_window("mon-fri 22:00-04:00 Europe/Berlin", UTC_ZONE)
    blackouts = parse_blackout_dates("2026-12-24..2026-12-26 Europe/Berlin", UTC_ZONE)
    schedule = Schedule.of(Window.always(), [night], blackouts)
    # Thursday 24 Dec 22:00 would open, but the blackout holds until Sunday; Friday's night
    # window runs into Saturday 04:00, also blacked out; Monday 28 Dec 22:00 is next.
    nxt = schedule.next_open(datetime(2026, 12, 24, 12, tzinfo=BERLIN))
    assert nxt == datetime(2026, 12, 28, 22, tzinfo=BERLIN)


def test_always_open_is_every_second() -> None:
    assert Window.always().always_open()
    assert window("12:00", "11:59:59").always_open()
    assert not window("0:00", "23:59").always_open()
    assert not window("0:00", "23:59:59", days=frozenset({1})).always_open()


def test_a_schedule_needs_a_window() -> None:
    with pytest.raises(ValueError, match="at least one window"):
        Schedule(())


# Hypothesis over zones with DST, Lord Howe's half hour and Apia's skipped day.

start_day_windows = st.builds(
    Window,
    days=st.frozensets(st.integers(0, 6), min_size=1),
    start=st.times().map(lambda t: t.replace(microsecond=0)),
    end=st.times().map(lambda t: t.replace(microsecond=0)),
    tz=st.sampled_from(ZONES).map(ZoneInfo),
    by_start_day=st.just(True),
)
blackouts = st.builds(
    lambda first, length, zone: Blackout(first, first + timedelta(days=length), ZoneInfo(zone)),
    st.dates(min_value=date(2005, 1, 1), max_value=date(2036, 12, 1)),
    st.integers(0, 20),
    st.sampled_from(ZONES),
)
schedules = st.builds(
    Schedule,
    windows=st.lists(windows | start_day_windows, min_size=1, max_size=3).map(tuple),
    blackouts=st.lists(blackouts, max_size=3).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(start_day_windows, moments)
def test_start_day_window_next_open_is_the_first_open_moment(w: Window, now: datetime) -> None:
    assert_first_open(w, now)


@given(start_day_windows, moments)
def test_start_day_window_is_open_exactly_when_its_start_day_is_listed(
    w: Window, now: datetime
) -> None:
    every_day = Window(ALL_DAYS, w.start, w.end, w.tz, by_start_day=True)
    if not every_day.is_open(now):
        assert not w.is_open(now)
        return
    local = now.astimezone(w.tz)
    started_yesterday = w.start > w.end and local.time().replace(microsecond=0) <= w.end
    start_day = local.date() - timedelta(days=1 if started_yesterday else 0)
    assert w.is_open(now) == ((start_day.isoweekday() % 7) in w.days)


@given(schedules, moments)
def test_schedule_is_open_when_a_window_is_and_no_blackout_covers(
    schedule: Schedule, now: datetime
) -> None:
    expected = any(w.is_open(now) for w in schedule.windows) and not any(
        b.contains(now) for b in schedule.blackouts
    )
    assert schedule.is_open(now) == expected


@settings(max_examples=200, deadline=None)
@given(schedules, moments)
def test_schedule_next_open_is_open_and_nothing_earlier_is(
    schedule: Schedule, now: datetime
) -> None:
    nxt = schedule.next_open(now)
    assert nxt >= now
    assert schedule.is_open(nxt)
    if nxt == now:
        return
    assert not schedule.is_open(nxt - timedelta(microseconds=1)) or nxt - now <= timedelta(
        microseconds=1
    )
    for k in range(1, 40):
        assert not schedule.is_open(now + (nxt - now) * k / 40)
