"""The ``kured`` command's start-up: the flags parsed (:mod:`kured.args`), Go kured's
start-up lines logged, the daemon run; every failure ends in one line, never a traceback."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import click

from kured import __version__
from kured.agent import run_daemon
from kured.args import ParsedArgs, error_line, go_list, parse_args
from kured.config import Config
from kured.durations import format_go_duration
from kured.host import host_from_config
from kured.kube import NoClusterConfig
from kured.logs import setup_logging

log = logging.getLogger(__name__)
USAGE_ERROR = 2


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
    log.info("Blocking Pod Selectors: %s", go_list(config.blocking_pod_selectors))
    log.info("Reboot schedule: %s", config.schedule.describe())
    log.info(
        "Reboot check command: %s every %s",
        go_list(config.reboot_sentinel_command or ("test", "-f", config.reboot_sentinel)),
        format_go_duration(config.period),
    )
    log.info("Concurrency: %d", config.concurrency)
    log.info("Reboot method: %s", config.reboot_method)
    if config.reboot_method == "signal":
        log.info("Reboot signal: %d", config.reboot_signal)
    else:
        log.info("Reboot command: %s", go_list(config.reboot_command))
    if config.annotate_nodes:
        log.info("Will annotate nodes during kured reboot operations")
    if config.max_node_age:
        log.info("Max node age: %s", format_go_duration(config.max_node_age))
    if config.dry_run:
        log.warning("Dry run: nothing will be locked, cordoned, drained or rebooted")
    for warning in parsed.warnings:
        log.warning("%s", warning)


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
        cause = _root_cause(error)
        log.debug("The unexpected error: %s", "".join(traceback.format_exception(cause)))
        # What the error says, not its Python class (users read the line, not the code).
        log.critical("Kured stopped on an unexpected error", extra={"error": str(cause) or "?"})
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
