"""The per-node agent: observe, ask the policy, apply the action, record, repeat."""

from __future__ import annotations

from kured.config import Config
from kured.host import Host


async def run_daemon(config: Config, host: Host) -> None:
    """Run the daemon until cancelled."""
    raise NotImplementedError
