"""Why this node needs a reboot: the OS asked for one, or it has been up too long.

Go kured only knows the sentinel. We also reboot a node whose current boot is older
than ``--max-node-age`` (Karpenter's expireAfter, kured#51), and say which packages
asked for a sentinel reboot (Ubuntu lists them in ``<sentinel>.pkgs``), so the reason
shown in logs, Events, ``kured.dev/status``, metrics and notifications is specific.
Pure: the agent gathers the facts from the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from kured.config import Config
from kured.durations import format_go_duration


class NeedKind(StrEnum):
    """What asks for the reboot (the ``reason`` label of ``kured_reboot_reason``)."""

    NONE = ""
    SENTINEL = "sentinel"
    MAX_NODE_AGE = "max-node-age"


@dataclass(frozen=True)
class RebootNeed:
    """Whether a reboot is needed, the main cause, and every cause in words."""

    kind: NeedKind = NeedKind.NONE
    reason: str = ""  # "" when no reboot is needed
    packages: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.kind is not NeedKind.NONE


def sentinel_source(config: Config) -> str:
    """How the sentinel is read, for the reason text."""
    if config.reboot_sentinel_command:
        return f"--reboot-sentinel-command {' '.join(config.reboot_sentinel_command)!r} exited 0"
    return f"{config.reboot_sentinel} exists"


def assess(
    *,
    sentinel: bool,
    source: str,
    packages: Sequence[str] = (),
    uptime: timedelta | None = None,
    max_age: timedelta = timedelta(0),
) -> RebootNeed:
    """The need from the sentinel and the node's age (``uptime`` None = unknown).

    The sentinel is the main cause when both apply: its packages say more than an age.
    """
    causes: list[tuple[NeedKind, str]] = []
    if sentinel:
        listed = f" (packages: {', '.join(packages)})" if packages else ""
        causes.append((NeedKind.SENTINEL, f"{source}{listed}"))
    if max_age and uptime is not None and uptime > max_age:
        age = format_go_duration(timedelta(seconds=int(uptime.total_seconds())))
        limit = format_go_duration(max_age)
        causes.append((NeedKind.MAX_NODE_AGE, f"node up {age}, longer than --max-node-age {limit}"))
    if not causes:
        return RebootNeed()
    return RebootNeed(
        causes[0][0], "; ".join(text for _, text in causes), tuple(packages) if sentinel else ()
    )
