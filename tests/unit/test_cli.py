"""The kured command: Go kured's flags, KURED_* env, one-line errors, start-up lines."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, time, timedelta
from functools import reduce
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kured import __version__, cli
from kured.args import parse_args, value_options
from kured.capacity import MaxUnavailable
from kured.cli import run
from kured.config import Config
from kured.flagtypes import env_name
from kured.host import Host, LinuxHost, SimulatedHost
from kured.window import Blackout, Window


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No stray KURED_* from the outside; node id from env as the manifests set it;
    logging restored after tests that run the whole program."""
    for name in [n for n in os.environ if n.startswith("KURED_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KURED_NODE_ID", "n1")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def parse(*args: str) -> Config:
    return parse_args(list(args)).config


def attribute(config: Config, path: str) -> Any:
    return reduce(getattr, path.split("."), config)


# flag, a valid non-default value, the Config attribute it sets, the expected value
SAMPLES: list[tuple[str, str, str, object]] = [
    ("node-id", "node-7", "node_id", "node-7"),
    ("period", "1h30m", "period", timedelta(minutes=90)),
    ("ds-namespace", "ops", "ds_namespace", "ops"),
    ("ds-name", "kured-ds", "ds_name", "kured-ds"),
    ("lock-annotation", "example.com/lock", "lock_annotation", "example.com/lock"),
    ("lock-ttl", "30m", "lock_ttl", timedelta(minutes=30)),
    ("lock-release-delay", "500ms", "lock_release_delay", timedelta(milliseconds=500)),
    ("concurrency", "3", "concurrency", 3),
    (
        "reboot-sentinel",
        "/sentinel/reboot-required",
        "reboot_sentinel",
        "/sentinel/reboot-required",
    ),
    (
        "reboot-sentinel-command",
        'test -f "/run/a b"',
        "reboot_sentinel_command",
        ("test", "-f", "/run/a b"),
    ),
    ("reboot-method", "signal", "reboot_method", "signal"),
    ("reboot-command", "/sbin/reboot -f", "reboot_command", ("/sbin/reboot", "-f")),
    ("reboot-signal", "15", "reboot_signal", 15),
    ("reboot-delay", "1m", "reboot_delay", timedelta(minutes=1)),
    ("force-reboot", "true", "force_reboot", True),
    ("drain-grace-period", "30", "drain_grace_period", 30),
    ("drain-pod-selector", "app!=db", "drain_pod_selector", "app!=db"),
    ("drain-timeout", "10m", "drain_timeout", timedelta(minutes=10)),
    ("drain-delay", "5s", "drain_delay", timedelta(seconds=5)),
    ("skip-wait-for-delete-timeout", "60", "skip_wait_for_delete_timeout", 60),
    ("reboot-days", "sat,SUNDAY", "window.days", frozenset({0, 6})),
    ("start-time", "2am", "window.start", time(2)),
    ("end-time", "04:30", "window.end", time(4, 30)),
    ("time-zone", "Europe/Berlin", "window.tz", ZoneInfo("Europe/Berlin")),
    ("blocking-pod-selector", "app=batch", "blocking_pod_selectors", ("app=batch",)),
    ("prometheus-url", "http://prometheus:9090", "prometheus_url", "http://prometheus:9090"),
    ("alert-filter-regexp", "^Watchdog$", "alert_filter_regexp", re.compile("^Watchdog$")),
    ("alert-filter-match-only", "true", "alert_filter_match_only", True),
    ("alert-firing-only", "1", "alert_firing_only", True),
    ("prefer-no-schedule-taint", "kured/reboot", "prefer_no_schedule_taint", "kured/reboot"),
    ("annotate-nodes", "T", "annotate_nodes", True),
    (
        "pre-reboot-node-labels",
        "kured=rebooting",
        "pre_reboot_node_labels",
        (("kured", "rebooting"),),
    ),
    ("post-reboot-node-labels", "kured=done", "post_reboot_node_labels", (("kured", "done"),)),
    ("notify-url", "slack://a/b/c", "notify_urls", ("slack://a/b/c",)),
    (
        "slack-hook-url",
        "https://hooks.slack.com/services/T0/B0/X0",
        "notify_urls",
        ("slack://T0/B0/X0",),
    ),
    ("slack-username", "bot", "slack_username", "bot"),
    ("slack-channel", "#ops", "slack_channel", "#ops"),
    ("message-template-drain", "Draining %s now", "message_template_drain", "Draining %s now"),
    ("message-template-reboot", "Boot %s", "message_template_reboot", "Boot %s"),
    ("message-template-uncordon", "Back: %s", "message_template_uncordon", "Back: %s"),
    ("metrics-host", "127.0.0.1", "metrics_host", "127.0.0.1"),
    ("metrics-port", "9100", "metrics_port", 9100),
    ("log-format", "json", "log_format", "json"),
]
GO_FLAGS = [flag for flag, *_ in SAMPLES]
OUR_SAMPLES: list[tuple[str, str, str, object]] = [
    ("kubeconfig", "/etc/kured/kubeconfig", "kubeconfig", "/etc/kured/kubeconfig"),
    ("lock-backend", "lease", "lock_backend", "lease"),
    ("stale-lock-timeout", "1h", "stale_lock_timeout", timedelta(hours=1)),
    ("post-reboot-pod-selector", "app=web", "post_reboot_pod_selector", "app=web"),
    ("post-reboot-gate-query", "up == 0", "post_reboot_gate_query", "up == 0"),
    ("post-reboot-gate-timeout", "5m", "post_reboot_gate_timeout", timedelta(minutes=5)),
    ("max-consecutive-reboots", "0", "max_consecutive_reboots", 0),
    ("poll-only", "true", "poll_only", True),
    (
        "lock-group-label",
        "topology.kubernetes.io/zone",
        "lock_group_label",
        "topology.kubernetes.io/zone",
    ),
    ("max-unavailable", "25%", "max_unavailable", MaxUnavailable(25, percent=True)),
    (
        "reboot-window",
        "mon-fri 22:00-04:00 Europe/Berlin",
        "reboot_windows",
        (Window(frozenset(range(1, 6)), time(22), time(4), ZoneInfo("Europe/Berlin"), True),),
    ),
    (
        "blackout-dates",
        "2026-12-24..2026-12-26",
        "blackout_dates",
        (Blackout(date(2026, 12, 24), date(2026, 12, 26), UTC),),
    ),
    ("max-node-age", "720h", "max_node_age", timedelta(days=30)),
    ("dry-run", "true", "dry_run", True),
    ("blocking-query", "up == 0", "blocking_queries", ("up == 0",)),
    ("alertmanager-url", "http://am:9093", "alertmanager_url", "http://am:9093"),
    ("notify-blocked-after", "30m", "notify_blocked_after", timedelta(minutes=30)),
    (
        "message-template-blocked",
        "{node}: {reason}",
        "message_template_blocked",
        "{node}: {reason}",
    ),
    ("message-template-drain-failed", "%s!", "message_template_drain_failed", "%s!"),
    ("message-template-reboot-loop", "loop %s", "message_template_reboot_loop", "loop %s"),
    ("message-template-gate-timeout", "gate %s", "message_template_gate_timeout", "gate %s"),
]
SAMPLES += OUR_SAMPLES


def test_all_43_go_flags_and_ours_exist_and_are_sampled() -> None:
    assert len(GO_FLAGS) == 43
    assert not {flag for flag, *_ in OUR_SAMPLES} & set(GO_FLAGS)
    assert [o.opts[0] for o in value_options()] == [f"--{flag}" for flag, *_ in SAMPLES]
    assert all(o.envvar == env_name(o.opts[0][2:]) for o in value_options())


def test_defaults_are_go_kureds_and_the_config_defaults() -> None:
    parsed = parse_args([])
    assert parsed.config == Config(node_id="n1")
    assert parsed.warnings == ()


@pytest.mark.parametrize(("flag", "value", "path", "expected"), SAMPLES)
@pytest.mark.parametrize("joined", [True, False], ids=["--flag=value", "--flag value"])
def test_every_flag_on_the_command_line(
    flag: str, value: str, path: str, expected: object, joined: bool
) -> None:
    args = [f"--{flag}={value}"] if joined else [f"--{flag}", value]
    needs_prometheus = {"post-reboot-gate-query", "blocking-query", "alertmanager-url"}
    args += ["--prometheus-url=http://p:9090"] if flag in needs_prometheus else []
    config = parse(*args)
    assert attribute(config, path) == expected
    assert attribute(Config(node_id="n1"), path) != expected


@pytest.mark.parametrize(("flag", "value", "path", "expected"), SAMPLES)
def test_every_flag_from_its_env_var(
    monkeypatch: pytest.MonkeyPatch, flag: str, value: str, path: str, expected: object
) -> None:
    monkeypatch.setenv("KURED_PROMETHEUS_URL", "http://p:9090")
    monkeypatch.setenv(env_name(flag), value)
    assert attribute(parse(), path) == expected


def test_command_line_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KURED_PERIOD", "2h")
    monkeypatch.setenv("KURED_FORCE_REBOOT", "true")
    monkeypatch.setenv("KURED_REBOOT_DAYS", "mo")
    config = parse("--period=5m", "--force-reboot=false", "--reboot-days=fr", "--node-id=n2")
    assert (config.period, config.force_reboot, config.window.days) == (
        timedelta(minutes=5),
        False,
        frozenset({5}),
    )
    assert config.node_id == "n2"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], False),
        (["--force-reboot"], True),
        (["--force-reboot", "--period=5m"], True),
        (["--force-reboot=true"], True),
        (["--force-reboot=True"], True),
        (["--force-reboot=1"], True),
        (["--force-reboot=false"], False),
        (["--force-reboot=FALSE"], False),
        (["--force-reboot=0"], False),
        (["--force-reboot=f"], False),
    ],
)
def test_boolean_forms(args: list[str], expected: bool) -> None:
    assert parse(*args).force_reboot is expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("1", True), ("false", False), ("0", False)]
)
def test_boolean_env_forms(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("KURED_ANNOTATE_NODES", raw)
    assert parse().annotate_nodes is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
    ],
)
def test_duration_forms(raw: str, expected: timedelta) -> None:
    assert parse(f"--drain-timeout={raw}").drain_timeout == expected


def test_list_flags_take_commas_and_repeats() -> None:
    config = parse(
        "--reboot-days=mo,tu",
        "--reboot-days",
        "5",
        "--pre-reboot-node-labels=a=1,example.com/b=2",
        "--pre-reboot-node-labels=c=",
        "--blocking-pod-selector=app=a,tier=web",
        "--blocking-pod-selector",
        "tier in (x, y)",
    )
    assert config.window.days == {1, 2, 5}
    assert config.pre_reboot_node_labels == (("a", "1"), ("example.com/b", "2"), ("c", ""))
    assert config.blocking_pod_selectors == ("app=a,tier=web", "tier in (x, y)")


def test_repeatable_env_vars_take_one_value_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KURED_BLOCKING_POD_SELECTOR", "app=a\ntier in (x, y)\n")
    monkeypatch.setenv("KURED_POST_REBOOT_NODE_LABELS", "a=1,b=2")
    config = parse()
    assert config.blocking_pod_selectors == ("app=a", "tier in (x, y)")
    assert config.post_reboot_node_labels == (("a", "1"), ("b", "2"))


def test_window_from_flags() -> None:
    window = parse("--start-time=03:04pm", "--end-time=3", "--time-zone=America/New_York").window
    assert (window.start, window.end, str(window.tz)) == (time(15, 4), time(3), "America/New_York")


def test_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert str(parse("--time-zone=Local").window.tz) == "Asia/Tokyo"


def test_slack_hook_url_converts_with_a_deprecation_warning() -> None:
    parsed = parse_args(["--slack-hook-url='https://hooks.slack.com/services/A/B/C'"])
    assert parsed.config.notify_urls == ("slack://A/B/C",)
    assert parsed.warnings == (
        "--slack-hook-url is deprecated; use --notify-url=slack://TOKEN_A/TOKEN_B/TOKEN_C",
    )


def test_notify_url_wins_over_slack_hook_url() -> None:
    parsed = parse_args(
        [
            '--notify-url="smtp://u:p@host:25/?from=k@example.com&to=ops@example.com"',
            "--slack-hook-url=https://hooks.slack.com/services/A/B/C",
        ]
    )
    assert parsed.config.notify_urls == (
        "smtp://u:p@host:25/?from=k@example.com&to=ops@example.com",
    )
    assert "using --notify-url only" in parsed.warnings[0]


def test_mismatched_label_keys_warn_as_go_kured_does() -> None:
    parsed = parse_args(["--pre-reboot-node-labels=a=1,b=2", "--post-reboot-node-labels=a=0"])
    assert parsed.warnings == (
        "--pre-reboot-node-labels keys [a b] differ from --post-reboot-node-labels keys [a]; "
        "a label set before the reboot may stay after it",
    )
    assert (
        parse_args(["--pre-reboot-node-labels=a=1", "--post-reboot-node-labels=a=0"]).warnings == ()
    )


def test_empty_alert_filter_means_no_filter() -> None:
    assert parse("--alert-filter-regexp=").alert_filter_regexp is None


# --- help and version ---------------------------------------------------------------


def test_help_lists_every_flag_with_its_default_and_env(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in value_options():
        assert option.opts[0] in text
        assert f"default: {' '.join(option.default_text.split())}" in text
        assert f"env var: {option.envvar}" in text
    assert "--markdown-flags" not in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out == f"kured {__version__}\n"


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kured", "--version"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, f"kured {__version__}\n")


# --- errors: one line, exit 2, flag and accepted form named ---------------------------

DAYS_FORM = "use su,mo,tu,we,th,fr,sa (or sun/sunday…, or 0-6 with 0=Sunday)"
TIME_FORM = "use 15:04, 15:04:05, 03:04pm, 15, 03pm or 3pm"
GO_DURATION = "use Go form like 90s, 1h30m, 500ms"
SELECTOR_FORM = (
    'use a label selector like "app=web", "tier!=db", "env in (a,b)", "env notin (c)", '
    '"key" or "!key", joined by commas'
)
LABEL_KEY = (
    "use [prefix/]name: a DNS prefix like example.com and a name of up to 63 letters, "
    'digits, "-", "_", "."'
)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--reboot-days=mo,funday"], f'--reboot-days: "funday" is not a day; {DAYS_FORM}'),
        (["--reboot-days=7"], f'--reboot-days: "7" is out of range; {DAYS_FORM}'),
        (["--reboot-days="], f"--reboot-days: no day given; {DAYS_FORM}"),
        (["--start-time=25:00"], f'--start-time: "25:00" is not a time of day; {TIME_FORM}'),
        (
            ["--end-time=13pm"],
            f'--end-time: "13pm": hour 13 is not on a 12-hour clock; {TIME_FORM}',
        ),
        (["--period=1x"], f'--period: "1x" is not a duration; {GO_DURATION}'),
        (["--period=0"], f'--period: "0" must be longer than 0; {GO_DURATION}'),
        (
            ["--lock-ttl=-5m"],
            '--lock-ttl: "-5m" is negative; use 0 or a positive duration like 90s',
        ),
        (
            ["--alert-filter-regexp=(a"],
            '--alert-filter-regexp: "(a" is not a regular expression: '
            "missing ), unterminated subpattern at position 0",
        ),
        (
            ["--time-zone=Mars/Base"],
            '--time-zone: "Mars/Base" is not a time zone; '
            "use an IANA name like Europe/Berlin, UTC, or Local",
        ),
        (
            ["--reboot-method=foo"],
            '--reboot-method: "foo" is not a reboot method; use command or signal',
        ),
        (["--log-format=xml"], '--log-format: "xml" is not a log format; use text or json'),
        (["--concurrency=0"], "--concurrency: 0 is out of range; use 1 or more"),
        (["--concurrency=two"], '--concurrency: "two" is not a whole number; use 1 or more'),
        (["--metrics-port=70000"], "--metrics-port: 70000 is out of range; use a port 0-65535"),
        (["--reboot-signal=0"], "--reboot-signal: 0 is out of range; use a signal number 1-64"),
        (
            ["--drain-grace-period=-2"],
            "--drain-grace-period: -2 is out of range; use -1 or a number of seconds",
        ),
        (
            ["--pre-reboot-node-labels=foo"],
            '--pre-reboot-node-labels: "foo" has no "="; use key=value[,key=value...]',
        ),
        (
            ["--post-reboot-node-labels=Bad Key=x"],
            f'--post-reboot-node-labels: "Bad Key" is not a valid label key; {LABEL_KEY}',
        ),
        (
            ["--pre-reboot-node-labels=a=b c"],
            '--pre-reboot-node-labels: "b c" is not a label value; use up to 63 letters, digits, '
            '"-", "_", "." starting and ending with a letter or digit',
        ),
        (
            ["--lock-annotation=not a key"],
            f'--lock-annotation: "not a key" is not a valid annotation key; {LABEL_KEY}',
        ),
        (
            ["--prefer-no-schedule-taint=-x"],
            f'--prefer-no-schedule-taint: "-x" is not a valid taint key; {LABEL_KEY}',
        ),
        (
            ["--force-reboot=maybe"],
            '--force-reboot: "maybe" is not a boolean; '
            "use true or false (or the bare flag for true)",
        ),
        (
            ["--slack-hook-url=https://example.com/x"],
            '--slack-hook-url: "https://example.com/x" is not a Slack webhook URL; '
            "use https://hooks.slack.com/services/A/B/C (or --notify-url)",
        ),
        (
            ["--prometheus-url=prometheus:9090"],
            '--prometheus-url: "prometheus:9090" is not an http(s) URL; use e.g. http://prometheus:9090',
        ),
        (
            ["--notify-url=hooks"],
            '--notify-url: "hooks" is not a notification URL; use a shoutrrr URL like '
            "slack://A/B/C, smtp://… or generic://…",
        ),
        (
            ["--reboot-command="],
            '--reboot-command: must not be empty; give a command like "/bin/systemctl reboot"',
        ),
        (
            ['--reboot-sentinel-command=test -f "/a'],
            '--reboot-sentinel-command: "test -f "/a" is not a command line (No closing quotation)',
        ),
        (
            ["--post-reboot-gate-query=up == 0"],
            "--post-reboot-gate-query needs --prometheus-url (the Prometheus to ask)",
        ),
        (
            ["--lock-backend=etcd"],
            '--lock-backend: "etcd" is not a lock backend; use daemonset-annotation or lease',
        ),
        (
            ["--ds-name="],
            '--ds-name: "" is not a DaemonSet name; use up to 253 lower-case letters, digits, '
            '"-" and ".", starting and ending with a letter or digit',
        ),
        (
            ["--ds-namespace=Bad_NS"],
            '--ds-namespace: "Bad_NS" is not a namespace name; use up to 63 lower-case letters, '
            'digits and "-", starting and ending with a letter or digit',
        ),
        (
            ["--blocking-pod-selector=a=b=c"],
            f"--blocking-pod-selector: \"a=b=c\" is not a label selector (found '=', expected ',' "
            f"or end of string); {SELECTOR_FORM}",
        ),
        (
            ["--drain-pod-selector=tier in (a b)"],
            '--drain-pod-selector: "tier in (a b)" is not a label selector '
            f"(found 'b', expected a value, ',' or ')'); {SELECTOR_FORM}",
        ),
        (
            ["--post-reboot-pod-selector=Bad Key"],
            "--post-reboot-pod-selector: \"Bad Key\" is not a label selector (found 'Key', "
            f"expected an operator: =, ==, !=, >, <, in or notin); {SELECTOR_FORM}",
        ),
        (
            ["--notify-url=bogus://x"],
            "--notify-url: bogus:// is a scheme neither shoutrrr nor apprise knows; use a shoutrrr "
            "URL (slack, smtp, discord, telegram, gotify, ntfy, rocketchat, generic) or an apprise "
            "URL (https://appriseit.com/services/)",
        ),
        (
            ["--notify-url=telegram://123:SECRET@telegram"],
            "--notify-url: malformed telegram:// URL; "
            "expected telegram://TOKEN@telegram?chats=ID[,ID]",
        ),
        (
            ["--force-reboot=-h"],
            '--force-reboot: "-h" is not a boolean; use true or false (or the bare flag for true)',
        ),
        (["--no-such-flag"], "unknown flag --no-such-flag (see kured --help)"),
        (
            ["--force-rebot"],
            "unknown flag --force-rebot; did you mean --force-reboot? (see kured --help)",
        ),
        (["--period"], "Option '--period' requires an argument."),
    ],
)
def test_bad_values_exit_2_with_one_actionable_line(
    capsys: pytest.CaptureFixture[str], args: list[str], line: str
) -> None:
    assert run(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"kured: error: {line}\n"


def test_missing_node_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KURED_NODE_ID")
    assert run([]) == 2
    assert capsys.readouterr().err == (
        "kured: error: --node-id is required (or env KURED_NODE_ID); set it from spec.nodeName\n"
    )


def test_bad_env_value_names_the_env_var(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KURED_CONCURRENCY", "0")
    assert run([]) == 2
    assert capsys.readouterr().err == (
        "kured: error: --concurrency (from env KURED_CONCURRENCY): "
        "0 is out of range; use 1 or more\n"
    )


def test_blank_env_lines_are_an_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KURED_REBOOT_DAYS", " \n")
    monkeypatch.setenv("KURED_BLOCKING_POD_SELECTOR", " ")
    config = parse()
    assert (config.window.days, config.blocking_pod_selectors) == (frozenset(range(7)), ())


def test_no_cluster_config_is_one_line_saying_what_to_set_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """Not in a cluster, no kubeconfig: the real daemon start, stopped at loading the config."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert run(["--metrics-port=0"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Error" not in err
    assert err.splitlines()[-1].endswith(
        'level=fatal msg="Cannot load the cluster config: not in a cluster (no service account '
        "token in /var/run/secrets/kubernetes.io/serviceaccount) and no kubeconfig at "
        "~/.kube/config (Configuration file ~/.kube/config not found); set --kubeconfig or "
        'KUBECONFIG, or run kured in its DaemonSet"'
    )


def test_main_exits_with_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--period=1x"])
    assert done.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# --- start-up -------------------------------------------------------------------------


class Daemon:
    """Stands in for kured.agent.run_daemon and records what it was given."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls: list[tuple[Config, Host]] = []

    async def __call__(self, config: Config, host: Host) -> None:
        self.calls.append((config, host))
        if self.error:
            raise self.error


def run_with(monkeypatch: pytest.MonkeyPatch, daemon: Daemon, *args: str) -> int:
    monkeypatch.setattr(cli, "run_daemon", daemon)
    return run(list(args))


def messages(err: str) -> list[str]:
    return [json.loads(line)["msg"] for line in err.splitlines()]


def test_startup_lines_match_go_kured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = Daemon()
    assert run_with(monkeypatch, daemon, "--log-format=json") == 0
    assert messages(capsys.readouterr().err) == [
        f"Kubernetes Reboot Daemon: {__version__}",
        "Node ID: n1",
        "Lock Annotation: kube-system/kured:weave.works/kured-node-lock",
        "Lock TTL not set, lock will remain until being released",
        "Lock release delay not set, lock will be released immediately after rebooting",
        "PreferNoSchedule taint: ",
        "Blocking Pod Selectors: []",
        "Reboot schedule: SunMonTueWedThuFriSat between 00:00 and 23:59 UTC",
        "Reboot check command: [test -f /var/run/reboot-required] every 1h0m0s",
        "Concurrency: 1",
        "Reboot method: command",
        "Reboot command: [/bin/systemctl reboot]",
    ]
    ((config, host),) = daemon.calls
    assert config == Config(node_id="n1", log_format="json")
    assert type(host) is LinuxHost


def test_startup_lines_for_the_other_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_with(
        monkeypatch,
        Daemon(),
        "--log-format=json",
        "--lock-ttl=1h",
        "--lock-release-delay=90s",
        "--prefer-no-schedule-taint=weave.works/kured-node-reboot",
        "--blocking-pod-selector=app=a",
        "--blocking-pod-selector=b in (c, d)",
        "--reboot-sentinel-command=/usr/bin/needs-restarting -r",
        "--period=1m",
        "--concurrency=2",
        "--reboot-method=signal",
        "--reboot-days=sa,su",
        "--start-time=22:00",
        "--end-time=2am",
        "--time-zone=Europe/Berlin",
        "--annotate-nodes",
    )
    assert messages(capsys.readouterr().err)[3:] == [
        "Lock TTL set, lock will expire after: 1h0m0s",
        "Lock release delay set, lock release will be delayed by: 1m30s",
        "PreferNoSchedule taint: weave.works/kured-node-reboot",
        "Blocking Pod Selectors: [app=a b in (c, d)]",
        "Reboot schedule: Sun---------------Sat between 22:00 and 02:00 Europe/Berlin",
        "Reboot check command: [/usr/bin/needs-restarting -r] every 1m0s",
        "Concurrency: 2",
        "Reboot method: signal",
        "Reboot signal: 39",
        "Will annotate nodes during kured reboot operations",
    ]


def test_text_startup_line_looks_like_logrus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_with(monkeypatch, Daemon())
    assert (
        ' level=info msg="Reboot schedule: SunMonTueWedThuFriSat between 00:00 and 23:59 UTC"\n'
        in capsys.readouterr().err
    )


def test_warnings_are_logged_after_the_startup_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_with(monkeypatch, Daemon(), "--slack-hook-url=https://hooks.slack.com/services/A/B/C")
    last = capsys.readouterr().err.splitlines()[-1]
    assert (
        'level=warning msg="--slack-hook-url is deprecated; use --notify-url=slack://TOKEN_A/'
        in last
    )


def test_sandbox_env_selects_the_simulated_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("KURED_SANDBOX_NODE_DIR", str(tmp_path))
    daemon = Daemon()
    run_with(monkeypatch, daemon)
    assert isinstance(daemon.calls[0][1], SimulatedHost)


def test_daemon_crash_is_one_fatal_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the error says, without its Python class (it was ``error="RuntimeError: boom"``),
    from inside the daemon's task groups too."""
    crash = ExceptionGroup("unhandled errors in a TaskGroup", [RuntimeError("disk on fire")])
    assert run_with(monkeypatch, Daemon(crash)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "Error" not in err
    assert err.splitlines()[-1].endswith(
        'level=fatal msg="Kured stopped on an unexpected error" error="disk on fire"'
    )


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_with(monkeypatch, Daemon(KeyboardInterrupt())) == 130


# --- maintenance policy flags (docs/policy.md) --------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--reboot-window=mon-fri 22:00"],
            '--reboot-window: "22:00" is not a START-END time range; use "DAYS START-END '
            '[ZONE]" like "mon-fri 22:00-04:00 Europe/Berlin" or "sat,sun 0:00-23:59:59"; '
            "DAYS is a list of days and ranges, or * for every day",
        ),
        (
            ["--reboot-window=mo-fr 1-2 Mars/Olympus"],
            '--reboot-window: "Mars/Olympus" is not a time zone; use an IANA name like '
            "Europe/Berlin, UTC, or Local",
        ),
        (
            ["--blackout-dates=2026-12-26..2026-12-24"],
            "--blackout-dates: 2026-12-26..2026-12-24 ends before it starts; use YYYY-MM-DD or "
            "YYYY-MM-DD..YYYY-MM-DD (both days included), optionally followed by a time zone",
        ),
        (
            ["--max-node-age=30d"],
            '--max-node-age: "30d" is not a duration; use Go form like 90s, 1h30m, 500ms',
        ),
        (
            ["--blocking-query=up == 0"],
            "--blocking-query needs --prometheus-url (the Prometheus to ask)",
        ),
        (
            ["--alertmanager-url=http://am:9093"],
            "--alertmanager-url needs --prometheus-url (the Prometheus to ask)",
        ),
        (
            ["--prometheus-url=http://p", "--alertmanager-url=am:9093"],
            '--alertmanager-url: "am:9093" is not an http(s) URL; use e.g. http://prometheus:9090',
        ),
    ],
)
def test_policy_flags_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], line: str
) -> None:
    assert run(args) == 2
    assert capsys.readouterr().err == f"kured: error: {line}\n"


def test_reboot_windows_take_time_zone_as_their_default_zone() -> None:
    config = parse(
        "--time-zone=Europe/Berlin",
        "--reboot-window=sat,sun 0:00-23:59:59",
        "--reboot-window=* 1-2 UTC",
        "--blackout-dates=2026-12-24..2026-12-26,2026-12-31 Asia/Tokyo",
    )
    assert [str(w.tz) for w in config.reboot_windows] == ["Europe/Berlin", "UTC"]
    assert [str(b.tz) for b in config.blackout_dates] == ["Europe/Berlin", "Asia/Tokyo"]
    assert config.schedule.windows == config.reboot_windows  # the Go window is the default


def test_reboot_windows_are_alternatives_to_a_narrowed_go_window() -> None:
    config = parse("--reboot-days=sa", "--reboot-window=mon 1-2")
    assert config.schedule.windows == (config.window, *config.reboot_windows)


def test_several_notify_urls_and_env_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KURED_NOTIFY_URL", "json://a/x\njson://b/y")
    assert parse().notify_urls == ("json://a/x", "json://b/y")
    assert parse("--notify-url=slack://a/b/c").notify_urls == ("slack://a/b/c",)


def test_unknown_placeholders_warn() -> None:
    parsed = parse_args(["--message-template-drain=Draining {nod}", "--notify-url=json://a/x"])
    assert parsed.warnings == (
        "--message-template-drain: {nod} is not a placeholder and is sent as written; "
        "use %s or {node}, {reason}, {duration}, {packages}",
    )


def test_startup_lines_show_the_schedule_age_and_dry_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_with(
        monkeypatch,
        Daemon(),
        "--log-format=json",
        "--reboot-window=mon-fri 22:00-04:00 Europe/Berlin",
        "--blackout-dates=2026-12-24..2026-12-26",
        "--max-node-age=720h",
        "--dry-run",
    )
    lines = messages(capsys.readouterr().err)
    assert (
        "Reboot schedule: mon-fri 22:00-04:00 Europe/Berlin except 2026-12-24..2026-12-26 UTC"
        in lines
    )
    assert lines[-2:] == [
        "Max node age: 720h0m0s",
        "Dry run: nothing will be locked, cordoned, drained or rebooted",
    ]
