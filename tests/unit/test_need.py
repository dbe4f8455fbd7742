"""Why a node needs a reboot: the sentinel with its packages, and --max-node-age."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from kured.config import Config
from kured.need import NeedKind, RebootNeed, assess, sentinel_source

DAY = timedelta(days=1)


def test_no_sentinel_and_a_young_node_need_nothing() -> None:
    need = assess(sentinel=False, source="s", uptime=DAY, max_age=30 * DAY)
    assert need == RebootNeed()
    assert not need.required


def test_sentinel_reason_names_the_packages() -> None:
    need = assess(
        sentinel=True, source="/var/run/reboot-required exists", packages=("linux-image", "libc6")
    )
    assert need.kind is NeedKind.SENTINEL
    assert need.reason == "/var/run/reboot-required exists (packages: linux-image, libc6)"
    assert need.packages == ("linux-image", "libc6")


def test_an_old_node_needs_a_reboot_without_a_sentinel() -> None:
    need = assess(
        sentinel=False, source="s", uptime=31 * DAY + timedelta(seconds=5.7), max_age=30 * DAY
    )
    assert need.kind is NeedKind.MAX_NODE_AGE
    assert need.reason == "node up 744h0m5s, longer than --max-node-age 720h0m0s"


def test_both_causes_are_named_the_sentinel_first() -> None:
    need = assess(sentinel=True, source="s exists", uptime=40 * DAY, max_age=30 * DAY)
    assert need.kind is NeedKind.SENTINEL
    assert need.reason.startswith("s exists; node up 960h")


def test_unknown_age_and_zero_max_age_never_ask() -> None:
    assert not assess(sentinel=False, source="s", uptime=None, max_age=DAY).required
    assert not assess(sentinel=False, source="s", uptime=1000 * DAY).required


def test_sentinel_source_says_how_the_sentinel_is_read() -> None:
    assert sentinel_source(Config(node_id="n")) == "/var/run/reboot-required exists"
    command = Config(node_id="n", reboot_sentinel_command=("needs-restarting", "-r"))
    assert sentinel_source(command) == "--reboot-sentinel-command 'needs-restarting -r' exited 0"


@given(
    st.booleans(),
    st.integers(0, 100).map(lambda d: d * DAY),
    st.one_of(st.none(), st.integers(0, 10**7).map(lambda s: timedelta(seconds=s))),
)
def test_required_exactly_when_a_cause_applies(
    sentinel: bool, max_age: timedelta, uptime: timedelta | None
) -> None:
    need = assess(sentinel=sentinel, source="s", uptime=uptime, max_age=max_age)
    too_old = bool(max_age) and uptime is not None and uptime > max_age
    assert need.required == (sentinel or too_old)
    assert bool(need.reason) == need.required
