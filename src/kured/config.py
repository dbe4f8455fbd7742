"""The daemon's configuration: one frozen value built from flags and ``KURED_*`` env.

Field names follow Go kured's flag names (``--lock-ttl`` → ``lock_ttl``) so the
mapping stays obvious. Parsing and validation live in :mod:`kured.cli`; this
module only says what a valid configuration looks like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from kured.capacity import MaxUnavailable
from kured.window import Blackout, Schedule, Window

DEFAULT_LOCK_ANNOTATION = "weave.works/kured-node-lock"


@dataclass(frozen=True)
class Config:
    """Everything the daemon was told, already parsed and validated."""

    node_id: str
    period: timedelta = timedelta(hours=1)
    ds_namespace: str = "kube-system"
    ds_name: str = "kured"
    lock_annotation: str = DEFAULT_LOCK_ANNOTATION
    lock_ttl: timedelta = timedelta(0)  # 0 = never expires
    lock_release_delay: timedelta = timedelta(0)
    concurrency: int = 1
    reboot_sentinel: str = "/var/run/reboot-required"
    reboot_sentinel_command: tuple[str, ...] = ()  # empty = use the file
    reboot_method: Literal["command", "signal"] = "command"
    reboot_command: tuple[str, ...] = ("/bin/systemctl", "reboot")
    reboot_signal: int = 39
    reboot_delay: timedelta = timedelta(0)
    force_reboot: bool = False
    drain_grace_period: int = -1  # seconds; -1 = each pod's own
    drain_pod_selector: str = ""
    drain_timeout: timedelta = timedelta(0)  # 0 = no timeout
    drain_delay: timedelta = timedelta(0)
    skip_wait_for_delete_timeout: int = 0  # seconds
    window: Window = field(default_factory=Window.always)  # --reboot-days, --start-time …
    blocking_pod_selectors: tuple[str, ...] = ()
    prometheus_url: str = ""
    alert_filter_regexp: re.Pattern[str] | None = None
    alert_filter_match_only: bool = False
    alert_firing_only: bool = False
    prefer_no_schedule_taint: str = ""
    annotate_nodes: bool = False
    pre_reboot_node_labels: tuple[tuple[str, str], ...] = ()
    post_reboot_node_labels: tuple[tuple[str, str], ...] = ()
    # Every --notify-url (repeatable here, not in Go kured), or the converted
    # --slack-hook-url when there is none.
    notify_urls: tuple[str, ...] = ()
    slack_username: str = "kured"
    slack_channel: str = ""
    message_template_drain: str = "Draining node %s"
    message_template_reboot: str = "Rebooting node %s"
    message_template_uncordon: str = "Node %s rebooted & uncordoned successfully!"
    # Not in Go kured: messages about trouble (placeholders: kured.notify.PLACEHOLDERS).
    message_template_blocked: str = "Reboot of node %s blocked for {duration}: {reason}"
    message_template_drain_failed: str = "Draining node %s failed: {reason}"
    message_template_reboot_loop: str = "Node %s: {reason}; not rebooting it again"
    message_template_gate_timeout: str = "Node %s: {reason}; holding the reboot lock"
    notify_blocked_after: timedelta = timedelta(hours=1)  # 0 = never
    metrics_host: str = ""
    metrics_port: int = 8080
    log_format: Literal["text", "json"] = "text"
    # Not in Go kured: where to find the API server when running outside a cluster.
    kubeconfig: str | None = None
    # Not in Go kured: an expired lock whose holder is mid-reboot is only taken over once
    # the holder has been NotReady (or back without finishing) this long.
    stale_lock_timeout: timedelta = timedelta(minutes=30)
    # Not in Go kured: where the lock lives (Go kured's annotation, or one Lease per slot).
    lock_backend: Literal["daemonset-annotation", "lease"] = "daemonset-annotation"
    # Not in Go kured: the post-reboot health gate that must pass before the lock passes on.
    post_reboot_pod_selector: str = ""
    post_reboot_gate_query: str = ""  # PromQL; must return no samples (needs --prometheus-url)
    post_reboot_gate_timeout: timedelta = timedelta(minutes=10)
    # Not in Go kured: stop rebooting a node whose sentinel survives this many reboots in a row.
    max_consecutive_reboots: int = 3
    # Not in Go kured: topology-aware concurrency and a cap on nodes down for any reason.
    lock_group_label: str = ""
    # Not in Go kured: Go kured's timing (for comparison); normally kured reacts to events.
    poll_only: bool = False
    max_unavailable: MaxUnavailable | None = None
    # Not in Go kured: maintenance policy (docs/policy.md).
    reboot_windows: tuple[Window, ...] = ()
    blackout_dates: tuple[Blackout, ...] = ()
    max_node_age: timedelta = timedelta(0)  # 0 = only the sentinel asks for reboots
    dry_run: bool = False
    blocking_queries: tuple[str, ...] = ()  # PromQL; any sample blocks (needs --prometheus-url)
    alertmanager_url: str = ""  # its silences exempt alerts from blocking

    @property
    def schedule(self) -> Schedule:
        """When reboots may happen: the Go window, --reboot-window and --blackout-dates."""
        return Schedule.of(self.window, self.reboot_windows, self.blackout_dates)
