"""The click plumbing of kured's flags: an option type around one value parser, the
option class that knows its ``KURED_*`` variable and shown default, and the makers the
flag table is written with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import click
from click.types import OptionHelpExtra

from kured.flagvalues import as_boolean, as_duration, as_labels

ENV_PREFIX = "KURED"


def env_name(flag: str) -> str:
    """``lock-ttl`` → ``KURED_LOCK_TTL``, Go kured's rule."""
    return f"{ENV_PREFIX}_{flag.upper().replace('-', '_')}"


class ParsedValue(click.ParamType[Any]):
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


def make_flag(
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
        type=ParsedValue(metavar.lower(), parse),
        default=(default,) if multiple and default is not None else default,
        multiple=multiple,
        metavar=metavar,
        help=help_text,
    )


def bool_flag(name: str, help_text: str) -> KuredOption:
    """A Go boolean: ``--name`` means true, ``--name=true|false`` (or 1/0, t/f) sets it."""
    return KuredOption(
        name,
        "false",
        type=ParsedValue("boolean", as_boolean),
        is_flag=False,
        flag_value="true",
        default="false",
        metavar="[=BOOL]",
        help=help_text,
    )


def eager_flag(
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


def duration_flag(
    name: str, default: str, help_text: str, parse: Callable[[str], timedelta] = as_duration
) -> KuredOption:
    return make_flag(name, default, help_text, parse, metavar="DURATION")


def labels_flag(name: str, help_text: str) -> KuredOption:
    return make_flag(
        name, None, help_text, as_labels, metavar="KEY=VALUE,...", shown="(none)", multiple=True
    )
