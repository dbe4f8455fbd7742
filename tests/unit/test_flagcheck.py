"""The start-up checks of flag values (kured.flagcheck); the CLI's tests check the lines."""

from __future__ import annotations

import subprocess
import sys

import apprise
import pytest
from apprise.manager_plugins import NotificationManager

from kured import flagcheck
from kured.apprise_schemes import APPRISE_VERSION, KNOWN


def test_the_listed_apprise_schemes_are_the_installed_apprises() -> None:
    schemes: list[str] = NotificationManager().schemas()  # type: ignore[no-untyped-call]
    live = frozenset(s.lower() for s in schemes)
    assert (apprise.__version__, live) == (APPRISE_VERSION, KNOWN), "run make apprise-schemes"


@pytest.mark.parametrize(
    "url",
    ["slack://a/b/c", "json://host/x", "MAILTOS://u:p@h/?to=a@b", "https://discord.com/api/x"],
)
def test_a_scheme_shoutrrr_or_apprise_knows_is_accepted_without_loading_apprise(
    url: str,
) -> None:
    code = (
        "import sys; from kured import flagcheck; "
        f"flagcheck.notify_url({url!r}); print('apprise' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "False\n"


def test_a_scheme_not_listed_is_asked_of_apprise(monkeypatch: pytest.MonkeyPatch) -> None:
    """A newer apprise may know a scheme the list lacks: its answer decides."""
    monkeypatch.setattr(flagcheck, "_apprise_schemes", lambda: frozenset({"newsvc"}))
    assert flagcheck.notify_url("newsvc://token") == "newsvc://token"
    with pytest.raises(ValueError, match=r"^bogus:// is a scheme neither shoutrrr nor apprise"):
        flagcheck.notify_url("bogus://token")
