"""One flag value each: text → the value, or :class:`ValueError` with the reason the user
reads (the accepted form). Kept apart from click so each rule reads on its own."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from datetime import UTC, timedelta
from urllib.parse import urlsplit

import click

from kured import flagcheck
from kured.capacity import MaxUnavailable
from kured.durations import ACCEPTED_FORM, DurationError, parse_go_duration
from kured.flagcheck import qualified_name as _check_qualified_name
from kured.k8snames import is_label_value as _is_label_name
from kured.window import (
    parse_blackout_dates,
    parse_days,
    parse_reboot_window,
)

_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://.+")
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})


def as_duration(text: str) -> timedelta:
    try:
        value = parse_go_duration(text)
    except DurationError:
        raise ValueError(f'"{text}" is not a duration; {ACCEPTED_FORM}') from None
    if value < timedelta(0):
        raise ValueError(f'"{text}" is negative; use 0 or a positive duration like 90s')
    return value


def as_period(text: str) -> timedelta:
    value = as_duration(text)
    if not value:
        raise ValueError(f'"{text}" must be longer than 0; {ACCEPTED_FORM}')
    return value


def as_boolean(text: str) -> bool:
    """Go's ``strconv.ParseBool`` words, in any case."""
    if text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    raise ValueError(f'"{text}" is not a boolean; use true or false (or the bare flag for true)')


def as_integer(low: int, high: int, hint: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10) if text.strip().lstrip("+-").isdigit() else int(text, 0)
        except ValueError:
            raise ValueError(f'"{text}" is not a whole number; {hint}') from None
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range; {hint}")
        return value

    return parse


def as_choice(noun: str, *choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text in choices:
            return text
        raise ValueError(f'"{text}" is not a {noun}; use {" or ".join(choices)}')

    return parse


def as_command(required: bool) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        try:
            argv = tuple(shlex.split(text))
        except ValueError as error:
            raise ValueError(f'"{text}" is not a command line ({error})') from None
        if required and not argv:
            raise ValueError('must not be empty; give a command like "/bin/systemctl reboot"')
        return argv

    return parse


def as_regexp(text: str) -> re.Pattern[str] | None:
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as error:
        raise ValueError(f'"{text}" is not a regular expression: {error}') from None


def as_days(text: str) -> frozenset[int]:
    return parse_days(text.split(","))


def as_reboot_window(text: str) -> str:
    """Checked here; built in :func:`_build` once --time-zone (its default zone) is known."""
    parse_reboot_window(text, UTC)
    return text


def as_blackout_dates(text: str) -> str:
    """Checked here; built in :func:`_build` once --time-zone (its default zone) is known."""
    parse_blackout_dates(text, UTC)
    return text


def as_labels(text: str) -> tuple[tuple[str, str], ...]:
    """``key=value[,key=value…]``, each a valid Kubernetes label."""
    labels = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f'"{item}" has no "="; use key=value[,key=value...]')
        _check_qualified_name(key, "label key")
        if not _is_label_name(value):
            raise ValueError(
                f'"{value}" is not a label value; use up to 63 letters, digits, "-", "_", "." '
                "starting and ending with a letter or digit"
            )
        labels.append((key, value))
    return tuple(labels)


def as_annotation_key(text: str) -> str:
    return _check_qualified_name(text, "annotation key")


def as_taint_key(text: str) -> str:
    return _check_qualified_name(text, "taint key") if text else text


def as_optional_label_key(text: str) -> str:
    return _check_qualified_name(text, "label key") if text else text


def as_max_unavailable(text: str) -> MaxUnavailable:
    try:
        return MaxUnavailable.parse(text)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err


def strip_quotes(text: str) -> str:
    """Go kured drops one pair of quotes around URLs (a common Helm values slip)."""
    if len(text) > 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def as_http_url(text: str) -> str:
    parts = urlsplit(text)
    if text and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise ValueError(f'"{text}" is not an http(s) URL; use e.g. http://prometheus:9090')
    return text


def as_notify_url(text: str) -> str:
    url = strip_quotes(text)
    if url and not _URL_SCHEME.fullmatch(url):
        raise ValueError(
            f'"{text}" is not a notification URL; use a shoutrrr URL like slack://A/B/C, '
            "smtp://… or generic://…"
        )
    return flagcheck.notify_url(url)


def as_slack_hook_url(text: str) -> str:
    """``https://hooks.slack.com/services/A/B/C`` → ``slack://A/B/C``, as Go kured converts."""
    url = strip_quotes(text)
    if not url:
        return url
    parts = urlsplit(url)
    tokens = parts.path.removeprefix("/services/").strip("/").split("/")
    if not parts.netloc or not parts.path.startswith("/services/") or len(tokens) != 3:
        raise ValueError(
            f'"{text}" is not a Slack webhook URL; use https://hooks.slack.com/services/A/B/C '
            "(or --notify-url)"
        )
    return "slack://" + "/".join(tokens)
