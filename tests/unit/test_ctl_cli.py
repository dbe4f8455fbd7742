"""kuredctl's command line without a cluster: usage errors, refusals, config errors.

Everything that needs an API server is in tests/e2e/test_kuredctl.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kured.ctl.cli import cli, current_user, program_name


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin, prog_name="kuredctl")
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "kuredctl: No such option '--bogus'."),
        (["nosuch"], "kuredctl: No such command 'nosuch'."),
        (["status", "-o", "yaml"], "kuredctl: Invalid value for '-o' / '--output'"),
        (["history", "--limit", "0"], "kuredctl: Invalid value for '--limit'"),
        (["history", "--limit", "many"], "kuredctl: Invalid value for '--limit'"),
        (["pause", "--node"], "kuredctl: Option '--node' requires an argument."),
        (["status", "extra"], "kuredctl: Got unexpected extra argument (extra)"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = invoke(*args)
    assert code == 2
    assert out == ""
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert "--help'" in err


def test_bare_command_shows_help() -> None:
    code, out, _ = invoke()
    assert code == 0
    assert out.startswith("Usage: kuredctl")
    for command in ("status", "pause", "resume", "unlock", "history"):
        assert command in out


def test_help_and_version() -> None:
    code, out, _ = invoke("unlock", "--help")
    assert code == 0
    assert "--yes" in out
    code, out, _ = invoke("--version")
    assert code == 0
    assert out.startswith("kuredctl, version ")


def test_unlock_refuses_without_a_terminal_before_touching_the_cluster(tmp_path: Path) -> None:
    missing = tmp_path / "no-kubeconfig"
    code, out, err = invoke("--kubeconfig", str(missing), "unlock", stdin="y\n")
    assert code == 1
    assert out == ""
    assert err == "kuredctl: unlock asks for confirmation but stdin is not a terminal; add --yes\n"


@pytest.mark.parametrize("command", [["status"], ["history"], ["pause"], ["unlock", "--yes"]])
def test_missing_kubeconfig_is_one_line(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no-kubeconfig"
    code, _, err = invoke("--kubeconfig", str(missing), *command)
    assert code == 1
    assert err == f"kuredctl: cannot load a kubeconfig: Configuration file {missing} not found\n"


def test_kubeconfig_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "env-kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "")
    code, _, err = invoke("status")
    assert code == 1
    assert str(missing) in err


@pytest.mark.parametrize(
    ("argv0", "name"),
    [
        ("/usr/local/bin/kubectl-kured", "kubectl kured"),
        ("kubectl-kured", "kubectl kured"),
        ("/work/.venv/bin/kuredctl", "kuredctl"),
        ("python", "kuredctl"),
    ],
)
def test_program_name_follows_how_it_was_run(argv0: str, name: str) -> None:
    assert program_name(argv0) == name


def test_current_user_falls_back_to_kuredctl(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown() -> str:
        raise OSError("no login name")

    monkeypatch.setattr("getpass.getuser", unknown)
    assert current_user() == "kuredctl"


@pytest.mark.parametrize(
    ("raised", "message"),
    [
        (RuntimeError("boom"), "kuredctl: unexpected RuntimeError: boom\n"),
        (KeyboardInterrupt(), "\nkuredctl: aborted\n"),
    ],
)
def test_anything_else_is_still_one_line(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, message: str
) -> None:
    async def failing(*_: object) -> None:
        raise raised

    monkeypatch.setattr("kured.ctl.cluster.fetch_status", failing)
    code, out, err = invoke("status")
    assert (code, out, err) == (1, "", message)
