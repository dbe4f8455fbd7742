"""Go kured's flags, then kured's own: name, default, help and value form of each (the
README's flag table and the Helm chart's values are generated from this table)."""

from __future__ import annotations

import signal

from kured import flagcheck
from kured.config import DEFAULT_LOCK_ANNOTATION
from kured.flagtypes import KuredOption, bool_flag, duration_flag, labels_flag, make_flag
from kured.flagvalues import (
    as_annotation_key,
    as_blackout_dates,
    as_choice,
    as_command,
    as_days,
    as_http_url,
    as_integer,
    as_max_unavailable,
    as_notify_url,
    as_optional_label_key,
    as_period,
    as_reboot_window,
    as_regexp,
    as_slack_hook_url,
    as_taint_key,
)
from kured.window import (
    load_zone,
    parse_time_of_day,
)

MAX_SIGNAL = int(signal.SIGRTMAX)
MAX_INT32 = 2**31 - 1

FLAGS: tuple[KuredOption, ...] = (
    make_flag(
        "node-id", "", "name of this node; set KURED_NODE_ID from spec.nodeName", shown="(required)"
    ),
    duration_flag("period", "1h", "how often to check whether a reboot is needed", as_period),
    make_flag(
        "ds-namespace",
        "kube-system",
        "namespace of the DaemonSet that carries the lock",
        flagcheck.namespace_name,
    ),
    make_flag(
        "ds-name", "kured", "name of the DaemonSet that carries the lock", flagcheck.object_name
    ),
    make_flag(
        "lock-annotation",
        DEFAULT_LOCK_ANNOTATION,
        "DaemonSet annotation that stores the lock",
        as_annotation_key,
        metavar="KEY",
    ),
    duration_flag("lock-ttl", "0", "a lock held longer than this is free again (0 = never)"),
    duration_flag("lock-release-delay", "0", "after the reboot, keep the lock this much longer"),
    make_flag(
        "concurrency",
        "1",
        "how many nodes may reboot at once",
        as_integer(1, MAX_INT32, "use 1 or more"),
        metavar="N",
    ),
    make_flag(
        "reboot-sentinel",
        "/var/run/reboot-required",
        "file whose presence means a reboot is needed",
        metavar="PATH",
    ),
    make_flag(
        "reboot-sentinel-command",
        "",
        "command run on the host instead of the file check: exit 0 = reboot needed, 1 = not",
        as_command(required=False),
        metavar="COMMAND",
    ),
    make_flag(
        "reboot-method",
        "command",
        "how to reboot: command or signal",
        as_choice("reboot method", "command", "signal"),
        metavar="METHOD",
    ),
    make_flag(
        "reboot-command",
        "/bin/systemctl reboot",
        "command run on the host to reboot (method command)",
        as_command(required=True),
        metavar="COMMAND",
    ),
    make_flag(
        "reboot-signal",
        "39",
        "signal sent to PID 1 to reboot (method signal); 39 = SIGRTMIN+5",
        as_integer(1, MAX_SIGNAL, f"use a signal number 1-{MAX_SIGNAL}"),
        metavar="N",
    ),
    duration_flag("reboot-delay", "0", "wait this long between the drain and the reboot"),
    bool_flag("force-reboot", "reboot even if cordoning or draining fails or times out"),
    make_flag(
        "drain-grace-period",
        "-1",
        "seconds each evicted pod gets to stop; -1 = the pod's own setting",
        as_integer(-1, MAX_INT32, "use -1 or a number of seconds"),
        metavar="SECONDS",
    ),
    make_flag(
        "drain-pod-selector",
        "",
        "only evict pods matching this label selector (empty = all pods)",
        flagcheck.label_selector,
        metavar="SELECTOR",
    ),
    duration_flag("drain-timeout", "0", "give up draining after this long (0 = no limit)"),
    duration_flag("drain-delay", "0", "wait this long before cordoning and draining"),
    make_flag(
        "skip-wait-for-delete-timeout",
        "0",
        "don't wait for pods deleted more than this many seconds ago (0 = always wait)",
        as_integer(0, MAX_INT32, "use 0 or a number of seconds"),
        metavar="SECONDS",
    ),
    make_flag(
        "reboot-days",
        "su,mo,tu,we,th,fr,sa",
        "days reboots may happen on: su,mo,... (any case, long names too) or 0-6, 0 = Sunday",
        as_days,
        metavar="DAYS",
        multiple=True,
    ),
    make_flag(
        "start-time", "0:00", "reboot only from this time of day", parse_time_of_day, metavar="TIME"
    ),
    make_flag(
        "end-time",
        "23:59:59",
        "reboot only until this time of day, inclusive; before --start-time = past midnight",
        parse_time_of_day,
        metavar="TIME",
    ),
    make_flag(
        "time-zone",
        "UTC",
        "time zone of the schedule: an IANA name, or Local",
        load_zone,
        metavar="ZONE",
    ),
    make_flag(
        "blocking-pod-selector",
        None,
        "pods on this node matching this label selector block reboots (repeatable, any match)",
        flagcheck.label_selector,
        metavar="SELECTOR",
        shown="(none)",
        multiple=True,
    ),
    make_flag(
        "prometheus-url",
        "",
        "Prometheus whose active alerts block reboots",
        as_http_url,
        metavar="URL",
    ),
    make_flag(
        "alert-filter-regexp",
        "",
        "alerts whose name matches are ignored (see --alert-filter-match-only)",
        as_regexp,
        metavar="REGEXP",
        shown="(none)",
    ),
    bool_flag("alert-filter-match-only", "invert the filter: only matching alerts block reboots"),
    bool_flag("alert-firing-only", "ignore pending alerts, only firing ones block reboots"),
    make_flag(
        "prefer-no-schedule-taint",
        "",
        "taint key (PreferNoSchedule) put on a node waiting for the lock; empty = no taint",
        as_taint_key,
        metavar="KEY",
    ),
    bool_flag(
        "annotate-nodes",
        "annotate rebooting nodes with weave.works/kured-reboot-in-progress and "
        "weave.works/kured-most-recent-reboot-needed",
    ),
    labels_flag("pre-reboot-node-labels", "labels set on the node before it is drained"),
    labels_flag("post-reboot-node-labels", "labels set on the node after it is uncordoned"),
    make_flag(
        "notify-url",
        None,
        "where to send notifications, a shoutrrr URL (slack://, smtp://, generic://, ...); "
        "repeatable, every URL gets every message",
        as_notify_url,
        metavar="URL",
        shown='""',
        multiple=True,
    ),
    make_flag(
        "slack-hook-url",
        "",
        "deprecated: Slack webhook URL, converted to slack://A/B/C; --notify-url wins",
        as_slack_hook_url,
        metavar="URL",
    ),
    make_flag("slack-username", "kured", "accepted for compatibility; unused"),
    make_flag("slack-channel", "", "accepted for compatibility; unused"),
    make_flag("message-template-drain", "Draining node %s", "drain notification; %s = node name"),
    make_flag(
        "message-template-reboot", "Rebooting node %s", "reboot notification; %s = node name"
    ),
    make_flag(
        "message-template-uncordon",
        "Node %s rebooted & uncordoned successfully!",
        "uncordon notification; %s = node name",
    ),
    make_flag(
        "metrics-host", "", "address the /metrics server listens on (empty = all)", metavar="HOST"
    ),
    make_flag(
        "metrics-port",
        "8080",
        "port of the /metrics server",
        as_integer(0, 65535, "use a port 0-65535"),
        metavar="PORT",
    ),
    make_flag(
        "log-format",
        "text",
        "log format: text or json",
        as_choice("log format", "text", "json"),
        metavar="FORMAT",
    ),
)
"""Go kured 1.23's flags, same names, defaults and value forms."""

OUR_FLAGS: tuple[KuredOption, ...] = (
    make_flag(
        "kubeconfig",
        None,
        "kubeconfig file, for running outside the cluster",
        metavar="PATH",
        shown="(in-cluster)",
    ),
    make_flag(
        "lock-backend",
        "daemonset-annotation",
        "where the lock lives: daemonset-annotation (as Go kured) or lease (one Lease per slot)",
        as_choice("lock backend", "daemonset-annotation", "lease"),
        metavar="BACKEND",
    ),
    duration_flag(
        "stale-lock-timeout",
        "30m",
        "an expired lock whose holder is mid-reboot is taken over only after this long",
    ),
    make_flag(
        "post-reboot-pod-selector",
        "",
        "after the reboot, hold the lock until pods on the node matching this are ready",
        flagcheck.label_selector,
        metavar="SELECTOR",
    ),
    make_flag(
        "post-reboot-gate-query",
        "",
        "after the reboot, hold the lock until this PromQL returns nothing (needs Prometheus)",
        metavar="PROMQL",
    ),
    duration_flag(
        "post-reboot-gate-timeout", "10m", "stop waiting for the post-reboot gate after this long"
    ),
    make_flag(
        "max-consecutive-reboots",
        "3",
        "stop rebooting a node still needing a reboot after this many in a row (0 = no limit)",
        as_integer(0, MAX_INT32, "use 0 or more"),
        metavar="N",
    ),
    bool_flag(
        "poll-only",
        "act only every --period, like Go kured: no lock watch, no sentinel checks in between",
    ),
    make_flag(
        "lock-group-label",
        "",
        "node label whose values (e.g. zones) each get their own --concurrency lock slots",
        as_optional_label_key,
        metavar="LABEL",
    ),
    make_flag(
        "max-unavailable",
        None,
        "never reboot while this many nodes (or percent) are NotReady or cordoned for any reason",
        as_max_unavailable,
        metavar="N|P%",
        shown="(no limit)",
    ),
    make_flag(
        "reboot-window",
        None,
        'reboot only in this window, "DAYS START-END [ZONE]" like "mon-fri 22:00-04:00 '
        'Europe/Berlin" (repeatable, any window; see docs/policy.md)',
        as_reboot_window,
        metavar="WINDOW",
        shown="(none)",
        multiple=True,
    ),
    make_flag(
        "blackout-dates",
        None,
        "never reboot on these days: YYYY-MM-DD[..YYYY-MM-DD] [ZONE] (repeatable)",
        as_blackout_dates,
        metavar="DATES",
        shown="(none)",
        multiple=True,
    ),
    duration_flag(
        "max-node-age",
        "0",
        "a node up longer than this needs a reboot even without the sentinel (0 = never)",
    ),
    bool_flag(
        "dry-run",
        "decide, log and notify what would happen, but never lock, cordon, drain or reboot",
    ),
    make_flag(
        "blocking-query",
        None,
        "PromQL that blocks reboots while it returns anything (repeatable; needs --prometheus-url)",
        metavar="PROMQL",
        shown="(none)",
        multiple=True,
    ),
    make_flag(
        "alertmanager-url",
        "",
        "Alertmanager whose silences exempt alerts from blocking (needs --prometheus-url)",
        as_http_url,
        metavar="URL",
    ),
    duration_flag(
        "notify-blocked-after",
        "1h",
        "notify once when a reboot has been blocked this long (0 = never)",
    ),
    make_flag(
        "message-template-blocked",
        "Reboot of node %s blocked for {duration}: {reason}",
        "blocked notification; %s or {node}, {reason}, {duration}, {packages}",
    ),
    make_flag(
        "message-template-drain-failed",
        "Draining node %s failed: {reason}",
        "drain failure notification (the reason names the blocking PodDisruptionBudget)",
    ),
    make_flag(
        "message-template-reboot-loop",
        "Node %s: {reason}; not rebooting it again",
        "reboot-loop guard notification",
    ),
    make_flag(
        "message-template-gate-timeout",
        "Node %s: {reason}; holding the reboot lock",
        "post-reboot gate timeout notification",
    ),
)
"""Ours, not in Go kured (the README lists them after Go kured's)."""
