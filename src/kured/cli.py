"""The ``kured`` command: Go kured's flags and ``KURED_*`` env → a validated :class:`Config`.

Every flag keeps Go kured's name, default and value forms so manifests and Helm
values carry over. Two deliberate differences: a flag given on the command line
beats its environment variable (Go kured lets the environment win), and every
bad value stops kured at start-up with exit status 2 and one line naming the flag
and the accepted form, instead of a warning or a crash at the first reboot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
from click.core import ParameterSource
from click.types import OptionHelpExtra

from kured import __version__, flagcheck
from kured.agent import run_daemon
from kured.capacity import MaxUnavailable
from kured.clickparse import AttachedValueCommand
from kured.config import DEFAULT_LOCK_ANNOTATION, Config
from kured.durations import ACCEPTED_FORM, DurationError, format_go_duration, parse_go_duration
from kured.flagcheck import qualified_name as _check_qualified_name
from kured.host import host_from_config
from kured.k8snames import is_label_value as _is_label_name
from kured.kube import NoClusterConfig
from kured.logs import setup_logging
from kured.notify import unknown_placeholders
from kured.window import (
    Window,
    load_zone,
    parse_blackout_dates,
    parse_days,
    parse_reboot_window,
    parse_time_of_day,
)

log = logging.getLogger(__name__)

ENV_PREFIX = "KURED"
USAGE_ERROR = 2
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://.+")
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})


def env_name(flag: str) -> str:
    """``lock-ttl`` → ``KURED_LOCK_TTL``, Go kured's rule."""
    return f"{ENV_PREFIX}_{flag.upper().replace('-', '_')}"


# --- value parsers: str → value, ValueError with the user-facing reason -------------


def _duration(text: str) -> timedelta:
    try:
        value = parse_go_duration(text)
    except DurationError:
        raise ValueError(f'"{text}" is not a duration; {ACCEPTED_FORM}') from None
    if value < timedelta(0):
        raise ValueError(f'"{text}" is negative; use 0 or a positive duration like 90s')
    return value


def _period(text: str) -> timedelta:
    value = _duration(text)
    if not value:
        raise ValueError(f'"{text}" must be longer than 0; {ACCEPTED_FORM}')
    return value


def _boolean(text: str) -> bool:
    """Go's ``strconv.ParseBool`` words, in any case."""
    if text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    raise ValueError(f'"{text}" is not a boolean; use true or false (or the bare flag for true)')


def _integer(low: int, high: int, hint: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10) if text.strip().lstrip("+-").isdigit() else int(text, 0)
        except ValueError:
            raise ValueError(f'"{text}" is not a whole number; {hint}') from None
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range; {hint}")
        return value

    return parse


def _choice(noun: str, *choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text in choices:
            return text
        raise ValueError(f'"{text}" is not a {noun}; use {" or ".join(choices)}')

    return parse


def _command(required: bool) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        try:
            argv = tuple(shlex.split(text))
        except ValueError as error:
            raise ValueError(f'"{text}" is not a command line ({error})') from None
        if required and not argv:
            raise ValueError('must not be empty; give a command like "/bin/systemctl reboot"')
        return argv

    return parse


def _regexp(text: str) -> re.Pattern[str] | None:
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as error:
        raise ValueError(f'"{text}" is not a regular expression: {error}') from None


def _days(text: str) -> frozenset[int]:
    return parse_days(text.split(","))


def _reboot_window(text: str) -> str:
    """Checked here; built in :func:`_build` once --time-zone (its default zone) is known."""
    parse_reboot_window(text, UTC)
    return text


def _blackout_dates(text: str) -> str:
    """Checked here; built in :func:`_build` once --time-zone (its default zone) is known."""
    parse_blackout_dates(text, UTC)
    return text


def _labels(text: str) -> tuple[tuple[str, str], ...]:
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


def _annotation_key(text: str) -> str:
    return _check_qualified_name(text, "annotation key")


def _taint_key(text: str) -> str:
    return _check_qualified_name(text, "taint key") if text else text


def _optional_label_key(text: str) -> str:
    return _check_qualified_name(text, "label key") if text else text


def _max_unavailable(text: str) -> MaxUnavailable:
    try:
        return MaxUnavailable.parse(text)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err


def _strip_quotes(text: str) -> str:
    """Go kured drops one pair of quotes around URLs (a common Helm values slip)."""
    if len(text) > 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if text and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise ValueError(f'"{text}" is not an http(s) URL; use e.g. http://prometheus:9090')
    return text


def _notify_url(text: str) -> str:
    url = _strip_quotes(text)
    if url and not _URL_SCHEME.fullmatch(url):
        raise ValueError(
            f'"{text}" is not a notification URL; use a shoutrrr URL like slack://A/B/C, '
            "smtp://… or generic://…"
        )
    return flagcheck.notify_url(url)


def _slack_hook_url(text: str) -> str:
    """``https://hooks.slack.com/services/A/B/C`` → ``slack://A/B/C``, as Go kured converts."""
    url = _strip_quotes(text)
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


# --- click plumbing -----------------------------------------------------------------


class _Parsed(click.ParamType[Any]):
    """A click type around one parser; its ValueError becomes the user's error line.

    Repeatable flags read one value per line from their environment variable, so a
    pod selector such as ``tier in (a, b)`` survives (click would split on spaces).
    """

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)

    def split_envvar_value(self, rv: str) -> Sequence[str]:
        return [line for line in rv.splitlines() if line.strip()]


class KuredOption(click.Option):
    """An option whose help and README show the default as the user would type it."""

    def __init__(self, name: str, default_text: str, **kwargs: Any) -> None:
        super().__init__(
            [f"--{name}"], envvar=env_name(name), show_envvar=True, show_default=False, **kwargs
        )
        self.default_text = default_text

    def get_help_extra(self, ctx: click.Context) -> OptionHelpExtra:
        return {**super().get_help_extra(ctx), "default": self.default_text}

    def value_from_envvar(self, ctx: click.Context) -> Any:
        """A variable of blank lines is unset, as click takes an empty one (not: no days)."""
        value = super().value_from_envvar(ctx)
        return None if self.multiple and not value else value


def _flag(
    name: str,
    default: str | None,
    help_text: str,
    parse: Callable[[str], Any] = str,
    *,
    metavar: str = "TEXT",
    shown: str | None = None,
    multiple: bool = False,
) -> KuredOption:
    """One Go kured flag: ``--name VALUE`` / ``--name=VALUE``, or env ``KURED_NAME``."""
    return KuredOption(
        name,
        shown if shown is not None else (default or '""'),
        type=_Parsed(metavar.lower(), parse),
        default=(default,) if multiple and default is not None else default,
        multiple=multiple,
        metavar=metavar,
        help=help_text,
    )


def _bool_flag(name: str, help_text: str) -> KuredOption:
    """A Go boolean: ``--name`` means true, ``--name=true|false`` (or 1/0, t/f) sets it."""
    return KuredOption(
        name,
        "false",
        type=_Parsed("boolean", _boolean),
        is_flag=False,
        flag_value="true",
        default="false",
        metavar="[=BOOL]",
        help=help_text,
    )


def _eager_flag(
    name: str, help_text: str, render: Callable[[], str], *, hidden: bool
) -> click.Option:
    """A flag that prints ``render()`` and exits before anything else is parsed."""

    def print_and_exit(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(render())
            ctx.exit()

    return click.Option(
        [f"--{name}"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        hidden=hidden,
        help=help_text,
        callback=print_and_exit,
    )


def _duration_flag(
    name: str, default: str, help_text: str, parse: Callable[[str], timedelta] = _duration
) -> KuredOption:
    return _flag(name, default, help_text, parse, metavar="DURATION")


def _labels_flag(name: str, help_text: str) -> KuredOption:
    return _flag(
        name, None, help_text, _labels, metavar="KEY=VALUE,...", shown="(none)", multiple=True
    )


_MAX_SIGNAL = int(signal.SIGRTMAX)
_MAX_INT32 = 2**31 - 1

FLAGS: tuple[KuredOption, ...] = (
    _flag(
        "node-id", "", "name of this node; set KURED_NODE_ID from spec.nodeName", shown="(required)"
    ),
    _duration_flag("period", "1h", "how often to check whether a reboot is needed", _period),
    _flag(
        "ds-namespace",
        "kube-system",
        "namespace of the DaemonSet that carries the lock",
        flagcheck.namespace_name,
    ),
    _flag("ds-name", "kured", "name of the DaemonSet that carries the lock", flagcheck.object_name),
    _flag(
        "lock-annotation",
        DEFAULT_LOCK_ANNOTATION,
        "DaemonSet annotation that stores the lock",
        _annotation_key,
        metavar="KEY",
    ),
    _duration_flag("lock-ttl", "0", "a lock held longer than this is free again (0 = never)"),
    _duration_flag("lock-release-delay", "0", "after the reboot, keep the lock this much longer"),
    _flag(
        "concurrency",
        "1",
        "how many nodes may reboot at once",
        _integer(1, _MAX_INT32, "use 1 or more"),
        metavar="N",
    ),
    _flag(
        "reboot-sentinel",
        "/var/run/reboot-required",
        "file whose presence means a reboot is needed",
        metavar="PATH",
    ),
    _flag(
        "reboot-sentinel-command",
        "",
        "command run on the host instead of the file check: exit 0 = reboot needed, 1 = not",
        _command(required=False),
        metavar="COMMAND",
    ),
    _flag(
        "reboot-method",
        "command",
        "how to reboot: command or signal",
        _choice("reboot method", "command", "signal"),
        metavar="METHOD",
    ),
    _flag(
        "reboot-command",
        "/bin/systemctl reboot",
        "command run on the host to reboot (method command)",
        _command(required=True),
        metavar="COMMAND",
    ),
    _flag(
        "reboot-signal",
        "39",
        "signal sent to PID 1 to reboot (method signal); 39 = SIGRTMIN+5",
        _integer(1, _MAX_SIGNAL, f"use a signal number 1-{_MAX_SIGNAL}"),
        metavar="N",
    ),
    _duration_flag("reboot-delay", "0", "wait this long between the drain and the reboot"),
    _bool_flag("force-reboot", "reboot even if cordoning or draining fails or times out"),
    _flag(
        "drain-grace-period",
        "-1",
        "seconds each evicted pod gets to stop; -1 = the pod's own setting",
        _integer(-1, _MAX_INT32, "use -1 or a number of seconds"),
        metavar="SECONDS",
    ),
    _flag(
        "drain-pod-selector",
        "",
        "only evict pods matching this label selector (empty = all pods)",
        flagcheck.label_selector,
        metavar="SELECTOR",
    ),
    _duration_flag("drain-timeout", "0", "give up draining after this long (0 = no limit)"),
    _duration_flag("drain-delay", "0", "wait this long before cordoning and draining"),
    _flag(
        "skip-wait-for-delete-timeout",
        "0",
        "don't wait for pods deleted more than this many seconds ago (0 = always wait)",
        _integer(0, _MAX_INT32, "use 0 or a number of seconds"),
        metavar="SECONDS",
    ),
    _flag(
        "reboot-days",
        "su,mo,tu,we,th,fr,sa",
        "days reboots may happen on: su,mo,... (any case, long names too) or 0-6, 0 = Sunday",
        _days,
        metavar="DAYS",
        multiple=True,
    ),
    _flag(
        "start-time", "0:00", "reboot only from this time of day", parse_time_of_day, metavar="TIME"
    ),
    _flag(
        "end-time",
        "23:59:59",
        "reboot only until this time of day, inclusive; before --start-time = past midnight",
        parse_time_of_day,
        metavar="TIME",
    ),
    _flag(
        "time-zone",
        "UTC",
        "time zone of the schedule: an IANA name, or Local",
        load_zone,
        metavar="ZONE",
    ),
    _flag(
        "blocking-pod-selector",
        None,
        "pods on this node matching this label selector block reboots (repeatable, any match)",
        flagcheck.label_selector,
        metavar="SELECTOR",
        shown="(none)",
        multiple=True,
    ),
    _flag(
        "prometheus-url",
        "",
        "Prometheus whose active alerts block reboots",
        _http_url,
        metavar="URL",
    ),
    _flag(
        "alert-filter-regexp",
        "",
        "alerts whose name matches are ignored (see --alert-filter-match-only)",
        _regexp,
        metavar="REGEXP",
        shown="(none)",
    ),
    _bool_flag("alert-filter-match-only", "invert the filter: only matching alerts block reboots"),
    _bool_flag("alert-firing-only", "ignore pending alerts, only firing ones block reboots"),
    _flag(
        "prefer-no-schedule-taint",
        "",
        "taint key (PreferNoSchedule) put on a node waiting for the lock; empty = no taint",
        _taint_key,
        metavar="KEY",
    ),
    _bool_flag(
        "annotate-nodes",
        "annotate rebooting nodes with weave.works/kured-reboot-in-progress and "
        "weave.works/kured-most-recent-reboot-needed",
    ),
    _labels_flag("pre-reboot-node-labels", "labels set on the node before it is drained"),
    _labels_flag("post-reboot-node-labels", "labels set on the node after it is uncordoned"),
    _flag(
        "notify-url",
        None,
        "where to send notifications, a shoutrrr URL (slack://, smtp://, generic://, ...); "
        "repeatable, every URL gets every message",
        _notify_url,
        metavar="URL",
        shown='""',
        multiple=True,
    ),
    _flag(
        "slack-hook-url",
        "",
        "deprecated: Slack webhook URL, converted to slack://A/B/C; --notify-url wins",
        _slack_hook_url,
        metavar="URL",
    ),
    _flag("slack-username", "kured", "accepted for compatibility; unused"),
    _flag("slack-channel", "", "accepted for compatibility; unused"),
    _flag("message-template-drain", "Draining node %s", "drain notification; %s = node name"),
    _flag("message-template-reboot", "Rebooting node %s", "reboot notification; %s = node name"),
    _flag(
        "message-template-uncordon",
        "Node %s rebooted & uncordoned successfully!",
        "uncordon notification; %s = node name",
    ),
    _flag(
        "metrics-host", "", "address the /metrics server listens on (empty = all)", metavar="HOST"
    ),
    _flag(
        "metrics-port",
        "8080",
        "port of the /metrics server",
        _integer(0, 65535, "use a port 0-65535"),
        metavar="PORT",
    ),
    _flag(
        "log-format",
        "text",
        "log format: text or json",
        _choice("log format", "text", "json"),
        metavar="FORMAT",
    ),
)
"""Go kured 1.23's flags, same names, defaults and value forms."""

OUR_FLAGS: tuple[KuredOption, ...] = (
    _flag(
        "kubeconfig",
        None,
        "kubeconfig file, for running outside the cluster",
        metavar="PATH",
        shown="(in-cluster)",
    ),
    _flag(
        "lock-backend",
        "daemonset-annotation",
        "where the lock lives: daemonset-annotation (as Go kured) or lease (one Lease per slot)",
        _choice("lock backend", "daemonset-annotation", "lease"),
        metavar="BACKEND",
    ),
    _duration_flag(
        "stale-lock-timeout",
        "30m",
        "an expired lock whose holder is mid-reboot is taken over only after this long",
    ),
    _flag(
        "post-reboot-pod-selector",
        "",
        "after the reboot, hold the lock until pods on the node matching this are ready",
        flagcheck.label_selector,
        metavar="SELECTOR",
    ),
    _flag(
        "post-reboot-gate-query",
        "",
        "after the reboot, hold the lock until this PromQL returns nothing (needs Prometheus)",
        metavar="PROMQL",
    ),
    _duration_flag(
        "post-reboot-gate-timeout", "10m", "stop waiting for the post-reboot gate after this long"
    ),
    _flag(
        "max-consecutive-reboots",
        "3",
        "stop rebooting a node still needing a reboot after this many in a row (0 = no limit)",
        _integer(0, _MAX_INT32, "use 0 or more"),
        metavar="N",
    ),
    _bool_flag(
        "poll-only",
        "act only every --period, like Go kured: no lock watch, no sentinel checks in between",
    ),
    _flag(
        "lock-group-label",
        "",
        "node label whose values (e.g. zones) each get their own --concurrency lock slots",
        _optional_label_key,
        metavar="LABEL",
    ),
    _flag(
        "max-unavailable",
        None,
        "never reboot while this many nodes (or percent) are NotReady or cordoned for any reason",
        _max_unavailable,
        metavar="N|P%",
        shown="(no limit)",
    ),
    _flag(
        "reboot-window",
        None,
        'reboot only in this window, "DAYS START-END [ZONE]" like "mon-fri 22:00-04:00 '
        'Europe/Berlin" (repeatable, any window; see docs/policy.md)',
        _reboot_window,
        metavar="WINDOW",
        shown="(none)",
        multiple=True,
    ),
    _flag(
        "blackout-dates",
        None,
        "never reboot on these days: YYYY-MM-DD[..YYYY-MM-DD] [ZONE] (repeatable)",
        _blackout_dates,
        metavar="DATES",
        shown="(none)",
        multiple=True,
    ),
    _duration_flag(
        "max-node-age",
        "0",
        "a node up longer than this needs a reboot even without the sentinel (0 = never)",
    ),
    _bool_flag(
        "dry-run",
        "decide, log and notify what would happen, but never lock, cordon, drain or reboot",
    ),
    _flag(
        "blocking-query",
        None,
        "PromQL that blocks reboots while it returns anything (repeatable; needs --prometheus-url)",
        metavar="PROMQL",
        shown="(none)",
        multiple=True,
    ),
    _flag(
        "alertmanager-url",
        "",
        "Alertmanager whose silences exempt alerts from blocking (needs --prometheus-url)",
        _http_url,
        metavar="URL",
    ),
    _duration_flag(
        "notify-blocked-after",
        "1h",
        "notify once when a reboot has been blocked this long (0 = never)",
    ),
    _flag(
        "message-template-blocked",
        "Reboot of node %s blocked for {duration}: {reason}",
        "blocked notification; %s or {node}, {reason}, {duration}, {packages}",
    ),
    _flag(
        "message-template-drain-failed",
        "Draining node %s failed: {reason}",
        "drain failure notification (the reason names the blocking PodDisruptionBudget)",
    ),
    _flag(
        "message-template-reboot-loop",
        "Node %s: {reason}; not rebooting it again",
        "reboot-loop guard notification",
    ),
    _flag(
        "message-template-gate-timeout",
        "Node %s: {reason}; holding the reboot lock",
        "post-reboot gate timeout notification",
    ),
)
"""Ours, not in Go kured (the README lists them after Go kured's)."""


@dataclass(frozen=True)
class ParsedArgs:
    """The configuration plus the warnings Go kured would log about it."""

    config: Config
    warnings: tuple[str, ...]


def _build(**params: Any) -> ParsedArgs:
    """The command's callback: cross-flag checks, then the frozen :class:`Config`."""
    if not params["node_id"]:
        raise click.UsageError(
            "--node-id is required (or env KURED_NODE_ID); set it from spec.nodeName"
        )
    for flag in ("post_reboot_gate_query", "blocking_query", "alertmanager_url"):
        if params[flag] and not params["prometheus_url"]:
            raise click.UsageError(
                f"--{flag.replace('_', '-')} needs --prometheus-url (the Prometheus to ask)"
            )
    zone = params.pop("time_zone")
    window = Window(
        frozenset[int]().union(*params.pop("reboot_days")),
        params.pop("start_time"),
        params.pop("end_time"),
        zone,
    )
    slack_url = params.pop("slack_hook_url")
    notify_urls = tuple(url for url in params.pop("notify_url") if url)
    pre_labels = _concat(params.pop("pre_reboot_node_labels"))
    post_labels = _concat(params.pop("post_reboot_node_labels"))
    warnings = (
        *_notify_warnings(bool(notify_urls), slack_url),
        *_label_warnings(pre_labels, post_labels),
        *_template_warnings(params),
    )
    config = Config(
        window=window,
        reboot_windows=tuple(parse_reboot_window(w, zone) for w in params.pop("reboot_window")),
        blackout_dates=tuple(
            b for text in params.pop("blackout_dates") for b in parse_blackout_dates(text, zone)
        ),
        blocking_pod_selectors=tuple(params.pop("blocking_pod_selector")),
        blocking_queries=tuple(params.pop("blocking_query")),
        pre_reboot_node_labels=pre_labels,
        post_reboot_node_labels=post_labels,
        notify_urls=notify_urls or ((slack_url,) if slack_url else ()),
        **params,
    )
    return ParsedArgs(config, warnings)


def _concat(groups: Iterable[tuple[tuple[str, str], ...]]) -> tuple[tuple[str, str], ...]:
    return tuple(label for group in groups for label in group)


def _notify_warnings(notify_url: bool, slack_url: str) -> tuple[str, ...]:
    if slack_url and notify_url:
        return ("Both --notify-url and --slack-hook-url are set; using --notify-url only",)
    if slack_url:
        return (f"--slack-hook-url is deprecated; use --notify-url={slack_url}",)
    return ()


def _template_warnings(params: dict[str, Any]) -> tuple[str, ...]:
    """A ``{word}`` that is no placeholder is sent as written; probably a typo."""
    return tuple(
        f"--{name.replace('_', '-')}: {', '.join(unknown)} is not a placeholder and is sent "
        "as written; use %s or {node}, {reason}, {duration}, {packages}"
        for name, value in params.items()
        if name.startswith("message_template_") and (unknown := unknown_placeholders(value))
    )


def _label_warnings(
    pre: tuple[tuple[str, str], ...], post: tuple[tuple[str, str], ...]
) -> tuple[str, ...]:
    pre_keys, post_keys = sorted(k for k, _ in pre), sorted(k for k, _ in post)
    if pre_keys == post_keys:
        return ()
    return (
        f"--pre-reboot-node-labels keys {_go_list(pre_keys)} differ from "
        f"--post-reboot-node-labels keys {_go_list(post_keys)}; "
        "a label set before the reboot may stay after it",
    )


def markdown_flags() -> str:
    """The README's flag table, generated from the command (see tests/unit/test_readme_flags)."""
    rows = ["| flag | env | default | meaning |", "|---|---|---|---|"]
    for option in value_options():
        default = option.default_text
        shown = default if default.startswith("(") else f"`{default}`"
        rows.append(f"| `{option.opts[0]}` | `{option.envvar}` | {shown} | {option.help} |")
    return "\n".join(rows)


def value_options() -> list[KuredOption]:
    """Every option that sets a configuration value (not --help, --version …)."""
    return [p for p in kured_command.params if isinstance(p, KuredOption)]


kured_command = AttachedValueCommand(
    "kured",
    params=[
        *FLAGS,
        *OUR_FLAGS,
        _eager_flag(
            "version", "print the version and exit", lambda: f"kured {__version__}", hidden=False
        ),
        _eager_flag("markdown-flags", "print the README flag table", markdown_flags, hidden=True),
    ],
    callback=_build,
    help=(
        "Kubernetes Reboot Daemon: drains and reboots this node when its OS needs it, "
        "one node (or --concurrency nodes) at a time. A flag given on the command line "
        "beats its KURED_* environment variable."
    ),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def parse_args(argv: Sequence[str]) -> ParsedArgs:
    """Flags and ``KURED_*`` env → :class:`ParsedArgs`.

    Raises :class:`click.ClickException` for a bad value and
    :class:`click.exceptions.Exit` after ``--help`` / ``--version``.
    """
    with kured_command.make_context("kured", list(argv)) as ctx:
        parsed: ParsedArgs = kured_command.invoke(ctx)
    return parsed


def error_line(error: click.ClickException) -> str:
    """One line naming the flag (and its env var when the value came from there)."""
    if isinstance(error, click.NoSuchOption):
        text = f"unknown flag {error.option_name}"
        if error.possibilities:
            text += f"; did you mean {' or '.join(sorted(error.possibilities))}?"
        text += " (see kured --help)"
    elif isinstance(error, click.BadParameter) and isinstance(error.param, click.Option):
        text = f"{_where(error.param, error.ctx)}: {error.message}"
    else:
        text = error.format_message()
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _where(option: click.Option, ctx: click.Context | None) -> str:
    source = ctx.get_parameter_source(option.name) if ctx and option.name else None
    if source == ParameterSource.ENVIRONMENT:
        return f"{option.opts[0]} (from env {option.envvar})"
    return option.opts[0]


def log_startup(parsed: ParsedArgs) -> None:
    """The start-up lines Go kured prints, in its order and wording."""
    config = parsed.config
    log.info("Kubernetes Reboot Daemon: %s", __version__)
    log.info("Node ID: %s", config.node_id)
    log.info(
        "Lock Annotation: %s/%s:%s", config.ds_namespace, config.ds_name, config.lock_annotation
    )
    if config.lock_ttl:
        log.info("Lock TTL set, lock will expire after: %s", format_go_duration(config.lock_ttl))
    else:
        log.info("Lock TTL not set, lock will remain until being released")
    if config.lock_release_delay:
        log.info(
            "Lock release delay set, lock release will be delayed by: %s",
            format_go_duration(config.lock_release_delay),
        )
    else:
        log.info("Lock release delay not set, lock will be released immediately after rebooting")
    log.info("PreferNoSchedule taint: %s", config.prefer_no_schedule_taint)
    log.info("Blocking Pod Selectors: %s", _go_list(config.blocking_pod_selectors))
    log.info("Reboot schedule: %s", config.schedule.describe())
    log.info(
        "Reboot check command: %s every %s",
        _go_list(config.reboot_sentinel_command or ("test", "-f", config.reboot_sentinel)),
        format_go_duration(config.period),
    )
    log.info("Concurrency: %d", config.concurrency)
    log.info("Reboot method: %s", config.reboot_method)
    if config.reboot_method == "signal":
        log.info("Reboot signal: %d", config.reboot_signal)
    else:
        log.info("Reboot command: %s", _go_list(config.reboot_command))
    if config.annotate_nodes:
        log.info("Will annotate nodes during kured reboot operations")
    if config.max_node_age:
        log.info("Max node age: %s", format_go_duration(config.max_node_age))
    if config.dry_run:
        log.warning("Dry run: nothing will be locked, cordoned, drained or rebooted")
    for warning in parsed.warnings:
        log.warning("%s", warning)


def _go_list(items: Sequence[str]) -> str:
    """Go's ``%v`` of a string slice: ``[a b c]``."""
    return "[" + " ".join(items) + "]"


def run(argv: Sequence[str]) -> int:
    """The whole program; returns the exit status. Never lets a traceback out."""
    try:
        parsed = parse_args(argv)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        click.echo(f"kured: error: {error_line(error)}", err=True)
        return USAGE_ERROR
    setup_logging(parsed.config.log_format)
    log_startup(parsed)
    return _serve(parsed.config)


def _root_cause(error: BaseException) -> BaseException:
    """The first real error inside task-group wrappers, so the one log line says what broke."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _serve(config: Config) -> int:
    host = host_from_config(config, os.environ)
    try:
        asyncio.run(run_daemon(config, host))
    except KeyboardInterrupt:
        return 130
    except NoClusterConfig as error:
        log.critical("Cannot load the cluster config: %s", error)
        return 1
    except Exception as error:  # last line of defence: one log line, not a traceback
        log.critical("Kured stopped on an unexpected error", exc_info=_root_cause(error))
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
