"""Go kured's flags and ``KURED_*`` env → a validated :class:`Config`.

Every flag keeps Go kured's name, default and value forms so manifests and Helm
values carry over. Two deliberate differences: a flag given on the command line
beats its environment variable (Go kured lets the environment win), and every
bad value stops kured at start-up with exit status 2 and one line naming the flag
and the accepted form, instead of a warning or a crash at the first reboot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import click
from click.core import ParameterSource

from kured import __version__
from kured.clickparse import AttachedValueCommand
from kured.config import Config
from kured.flags import FLAGS, OUR_FLAGS
from kured.flagtypes import KuredOption, eager_flag
from kured.notify import unknown_placeholders
from kured.window import (
    Window,
    parse_blackout_dates,
    parse_reboot_window,
)


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


SLACK_FORM = "slack://TOKEN_A/TOKEN_B/TOKEN_C"  # the form, not the webhook's own tokens


def _notify_warnings(notify_url: bool, slack_url: str) -> tuple[str, ...]:
    if slack_url and notify_url:
        return ("Both --notify-url and --slack-hook-url are set; using --notify-url only",)
    if slack_url:  # the URL itself is a secret, and stays out of the log
        return (f"--slack-hook-url is deprecated; use --notify-url={SLACK_FORM}",)
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
        f"--pre-reboot-node-labels keys {go_list(pre_keys)} differ from "
        f"--post-reboot-node-labels keys {go_list(post_keys)}; "
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
        eager_flag(
            "version", "print the version and exit", lambda: f"kured {__version__}", hidden=False
        ),
        eager_flag("markdown-flags", "print the README flag table", markdown_flags, hidden=True),
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


def go_list(items: Sequence[str]) -> str:
    """Go's ``%v`` of a string slice: ``[a b c]``."""
    return "[" + " ".join(items) + "]"
