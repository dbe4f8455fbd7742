"""Go duration strings, both ways, as Go's time package reads and prints them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kured.durations import DurationError, format_go_duration, parse_go_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("-0", timedelta(0)),
        ("0s", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("2h45m30.25s", timedelta(hours=2, minutes=45, seconds=30.25)),
        ("300us", timedelta(microseconds=300)),
        ("300µs", timedelta(microseconds=300)),
        ("300μs", timedelta(microseconds=300)),
        ("1500ns", timedelta(microseconds=2)),  # rounded to the microsecond
        ("+5m", timedelta(minutes=5)),
        ("-1m30s", -timedelta(minutes=1, seconds=30)),
        ("1h1h", timedelta(hours=2)),
    ],
)
def test_parses_go_forms(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "1", "1x", "h", "1.5", "1h 30m", " 1h", "--1s", ".s", "1e3s", "1H", "9223372037s", "+"],
)
def test_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(hours=1), "1h0m0s"),
        (timedelta(minutes=1), "1m0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(microseconds=1), "1µs"),
        (timedelta(hours=2, milliseconds=500), "2h0m0.5s"),
        (timedelta(hours=26), "26h0m0s"),
        (-timedelta(seconds=90), "-1m30s"),
    ],
)
def test_formats_like_go(value: timedelta, expected: str) -> None:
    assert format_go_duration(value) == expected


@given(st.timedeltas(min_value=-timedelta(days=10_000), max_value=timedelta(days=10_000)))
def test_format_then_parse_round_trips(value: timedelta) -> None:
    assert parse_go_duration(format_go_duration(value)) == value
