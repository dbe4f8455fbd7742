"""Any value of any flag: kured starts (exit 0) or says why not in one line (exit 2).

The whole program runs, from the command line or the environment through the start-up
lines, with only the daemon itself (:func:`kured.agent.run_daemon`, the boundary the
other CLI tests use) replaced: nothing connects anywhere.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kured import cli
from kured.args import value_options
from kured.config import Config
from kured.flagtypes import KuredOption
from kured.host import Host

# Characters the flags' own forms are made of, so random values also get deep into
# the parsers (durations, times, days, selectors, URLs, templates, label lists).
_FORM_CHARACTERS = "0123456789:.,;=!()<>/%{}[]*+-_@#?&' \"\tamshdfuxyzAMPT\\\n"
_SAMPLES = (
    "",
    "0",
    "-1",
    "1h30m",
    "mon-fri 22:00-04:00 Europe/Berlin",
    "2026-12-24..2026-12-26",
    "app=web,tier in (a, b)",
    "slack://a/b/c",
    "json://host/x",
    "https://hooks.slack.com/services/A/B/C",
    "http://p:9090",
    "example.com/key",
    "a=b,c=d",
    "true",
    "signal",
    "25%",
    "Europe/Berlin",
    "Local",
    "3pm",
    "sa,su",
)
_VALUES = st.one_of(
    st.sampled_from(_SAMPLES),
    st.text(alphabet=_FORM_CHARACTERS, max_size=30),
    st.text(max_size=30),
)


class _Daemon:
    """Stands in for the daemon: records that kured got as far as starting it."""

    def __init__(self) -> None:
        self.started = 0

    async def __call__(self, config: Config, host: Host) -> None:
        self.started += 1


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str, int]:
    """Exit status, stderr and how often the daemon was started."""
    daemon, err = _Daemon(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(err):
        for name in [n for n in os.environ if n.startswith("KURED_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr(cli, "run_daemon", daemon)
        status = cli.run(args)
    return status, err.getvalue(), daemon.started


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.parametrize("option", value_options(), ids=lambda option: option.opts[0])
@settings(max_examples=60, deadline=None)
@given(value=_VALUES, from_env=st.booleans())
def test_any_value_starts_kured_or_is_one_line_naming_the_flag(
    option: KuredOption, value: str, from_env: bool
) -> None:
    # The required flag and the one others need come from the environment; the drawn
    # value replaces them there or beats them from the command line.
    env = {"KURED_NODE_ID": "n1", "KURED_PROMETHEUS_URL": "http://p:9090"}
    args = []
    via_env = from_env and "\x00" not in value  # no NUL in an environment variable
    if via_env:
        env[str(option.envvar)] = value
    else:
        args.append(f"{option.opts[0]}={value}")
    status, err, started = _run(args, env)
    assert "Traceback" not in err
    if status == 0:
        assert started == 1
        return
    assert (status, started) == (cli.USAGE_ERROR, 0), err
    assert err.startswith("kured: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert option.opts[0] in err, err
