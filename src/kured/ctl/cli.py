"""``kuredctl`` (also ``kubectl kured``): see and steer kured from a terminal.

The global options mirror the daemon's (``--ds-namespace`` is ``-n/--namespace``
here, as in kubectl) and read the same ``KURED_*`` variables, so a shell set up
for the daemon points kuredctl at the same lock. Failures print one line and
exit 1; bad usage prints one line and exits 2.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from click.exceptions import NoArgsIsHelpError

from kured import __version__
from kured.ctl import cluster, render
from kured.ctl.cluster import CtlError, Target
from kured.ctl.model import DEFAULT_AUTHOR, rfc3339
from kured.policy import PauseNote

OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)


class KuredctlGroup(click.Group):
    """Turns every failure into one line on stderr, under CliRunner as under a shell."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        **extra: Any,
    ) -> NoReturn:
        prog = prog_name or program_name(sys.argv[0])
        try:
            code = super().main(args, prog, standalone_mode=False, **extra)
        except NoArgsIsHelpError as err:  # a bare `kuredctl`: help, as kubectl does
            click.echo(err.format_message())
            sys.exit(0)
        except click.UsageError as err:
            where = err.ctx.command_path if err.ctx else prog
            _fail(prog, f"{err.format_message()} (see '{where} --help')", 2)
        except click.Abort:
            _fail(prog, "aborted", 1)
        except click.ClickException as err:
            _fail(prog, err.format_message(), err.exit_code)
        except CtlError as err:
            _fail(prog, str(err), 1)
        except Exception as err:  # a bug: still one line, with enough to report it
            _fail(prog, f"unexpected {type(err).__name__}: {err}", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(prog: str, message: str, code: int) -> NoReturn:
    click.echo(f"{prog}: {message}", err=True)
    sys.exit(code)


def program_name(argv0: str) -> str:
    """``kubectl kured`` when kubectl ran us as its plugin, else ``kuredctl``."""
    return "kubectl kured" if os.path.basename(argv0) == "kubectl-kured" else "kuredctl"


@click.group(cls=KuredctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config).",
)
@click.option(
    "-n",
    "--namespace",
    envvar="KURED_DS_NAMESPACE",
    show_envvar=True,
    default="kube-system",
    show_default=True,
    help="Namespace of kured's DaemonSet.",
)
@click.option(
    "--ds-name",
    envvar="KURED_DS_NAME",
    show_envvar=True,
    default="kured",
    show_default=True,
    help="Name of kured's DaemonSet (it carries the lock, or names the lock Leases).",
)
@click.option(
    "--lock-annotation",
    envvar="KURED_LOCK_ANNOTATION",
    show_envvar=True,
    default="weave.works/kured-node-lock",
    show_default=True,
    help="Annotation that holds the lock.",
)
@click.version_option(__version__, prog_name="kuredctl")
@click.pass_context
def cli(
    ctx: click.Context,
    kubeconfig: str | None,
    namespace: str,
    ds_name: str,
    lock_annotation: str,
) -> None:
    """See and steer kured, the Kubernetes reboot daemon."""
    ctx.obj = Target(kubeconfig, namespace, ds_name, lock_annotation)


@cli.command()
@OUTPUT
@click.pass_obj
def status(target: Target, output: str) -> None:
    """Show each node's reboot state, the lock (annotation and Leases), pauses.

    Per node: reboot needed, maintenance window, blocker, lock, phase, last
    reboot, cordoned, paused. "-" means the daemon has not reported there (yet).
    """
    report = asyncio.run(cluster.fetch_status(target, datetime.now(UTC)))
    click.echo(render.status_json(report) if output == "json" else render.status_text(report))


NODE = click.option("--node", metavar="NODE", help="One node instead of the whole cluster.")


@cli.command()
@NODE
@click.option("--reason", default="", help="Why; shown by `status` and kept in the annotation.")
@click.pass_obj
def pause(target: Target, node: str | None, reason: str) -> None:
    """Stop new drains and reboots (cluster or a node).

    Sets kured.dev/paused on the DaemonSet, or on NODE with --node. A reboot
    already under way is not interrupted.
    """
    note = PauseNote(by=current_user(), at=rfc3339(datetime.now(UTC)), reason=reason)
    previous = asyncio.run(cluster.set_paused(target, node, note))
    replaced = f" (replacing the pause {PauseNote.parse(previous).describe()})" if previous else ""
    click.echo(f"paused kured {_scope(target, node)}: no new drains or reboots{replaced}")


@cli.command()
@NODE
@click.pass_obj
def resume(target: Target, node: str | None) -> None:
    """Undo `pause` (cluster or a node)."""
    previous = asyncio.run(cluster.set_paused(target, node, None))
    if previous is None:
        click.echo(f"kured was not paused {_scope(target, node)}; nothing to do")
    else:
        was = PauseNote.parse(previous).describe()
        click.echo(f"resumed kured {_scope(target, node)}; it had been paused {was}")


def _scope(target: Target, node: str | None) -> str:
    return f"on node {node}" if node else f"cluster-wide (DaemonSet {target.ds_path})"


def current_user() -> str:
    """The login name of whoever runs kuredctl, for the record; ``kuredctl`` if unknown."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return DEFAULT_AUTHOR


@cli.command()
@NODE
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def unlock(target: Target, node: str | None, yes: bool) -> None:
    """Remove the reboot lock, or one node's entry.

    Both backends: the lock annotation on the DaemonSet, and the holders of its
    lock Leases (--lock-backend=lease). Shows the holders and asks first, unless
    --yes. The lock is only removed if it is still what was shown.
    """
    if not yes and not sys.stdin.isatty():
        raise CtlError("unlock asks for confirmation but stdin is not a terminal; add --yes")
    confirm = None if yes else _confirm
    click.echo(asyncio.run(cluster.unlock(target, node, confirm, datetime.now(UTC))))


def _confirm(question: str) -> bool:
    return click.confirm(question, default=False)


@cli.command()
@NODE
@click.option("--limit", type=click.IntRange(min=1), help="Only the most recent N events.")
@OUTPUT
@click.pass_obj
def history(target: Target, node: str | None, limit: int | None, output: str) -> None:
    """kured's Events on Nodes, oldest first."""
    entries = asyncio.run(cluster.fetch_history(target, node, limit))
    click.echo(render.history_json(entries) if output == "json" else render.history_text(entries))


def main() -> NoReturn:
    cli.main()
