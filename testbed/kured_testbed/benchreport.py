"""What `make bench` writes: bench/results/latest.json (every figure with its parameters, the
machine and the Kubernetes version) and latest.md, the same for humans, with the targets of
the issue checked. The summary is built from the JSON alone, so the two never disagree.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MEMINFO = Path("/proc/meminfo")
CPUINFO = Path("/proc/cpuinfo")
TARGET_RATIO = 1.10
TARGET_DETECT_SECONDS = 5.0
TARGET_RSS_MIB = 35.0
TARGET_SCALE_RATIO = 1.10
TARGET_SCALE_GROWTH = 2.0  # requests per hand-off, largest fleet over smallest


def _proc_field(path: Path, key: str) -> str:
    """The value of the first "key: value" line of a /proc file ("" if there is none)."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def machine() -> dict[str, Any]:
    """The machine the figures were measured on."""
    memory_kib = _proc_field(MEMINFO, "MemTotal").split()[0]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _proc_field(CPUINFO, "model name") or platform.processor(),
        "memory_mib": int(memory_kib) // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class Check:
    """One of the issue's targets, against the measured value (None: not measured)."""

    what: str
    value: float | bool | None
    ok: bool | None

    def line(self) -> str:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[self.ok]
        return f"- {self.what}: {_show(self.value)} — {verdict}"


def _at_most(name: str, value: float | None, bound: float) -> Check:
    return Check(f"{name} ≤ {bound:g}", value, None if value is None else value <= bound)


def checks(results: dict[str, Any]) -> list[Check]:
    """The issue's "done when", in its order."""
    ours = results.get("makespan_ratio", {}).get("ours", {})
    found = [
        _at_most(f"makespan_ratio ours {key}", roll["ratio"], TARGET_RATIO)
        for key, roll in ours.items()
    ]
    detect = results.get("detect_to_cordon_seconds", {}).get("median")
    found.append(_at_most("detect_to_cordon_seconds median", detect, TARGET_DETECT_SECONDS))
    rss = results.get("rss_mib", {}).get("median")
    found.append(_at_most("rss_mib median", rss, TARGET_RSS_MIB))
    scale = results.get("scale")
    found += _scale_checks(scale) if scale else [Check("scale", None, None)]
    return found


def _scale_checks(scale: dict[str, Any]) -> list[Check]:
    """The scale run's targets: hand-offs that cost the same at any size, idle at or below
    polling's, the largest roll near its limit and never over its slots."""
    largest = scale["runs"][str(max(scale["nodes"]))]
    ours = largest["ours"]["idle_requests_per_node_hour_audit"]
    polling = largest["polling"]["idle_requests_per_node_hour_audit"]
    clean = scale["violations"] == 0 and scale["held"]
    return [
        _at_most(
            "scale requests per hand-off, largest fleet / smallest",
            scale["requests_per_handoff_growth"],
            TARGET_SCALE_GROWTH,
        ),
        Check(
            f"scale idle requests per node-hour ours ≤ polling ({ours:g} vs {polling:g})",
            ours,
            ours <= polling,
        ),
        _at_most(
            f"scale makespan ratio at {max(scale['nodes'])} nodes",
            scale["makespan_ratio"],
            TARGET_SCALE_RATIO,
        ),
        Check("scale concurrency violations (audit log) = 0", scale["violations"], clean),
    ]


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _roll_line(label: str, roll: dict[str, Any]) -> str:
    return (
        f"| {label} | {roll['nodes']} | {roll['concurrency']} | {_show(roll['makespan'])} | "
        f"{_show(roll['limit'])} | **{roll['ratio']:.3f}** | {roll['strict_ratio']:.3f} | "
        f"{roll['mean_ratio']:.3f} | "
        f"{_show(roll['drain'])} / {_show(roll['reboot'])} / {_show(roll['ready'])} | "
        f"{_show(roll['first_cordon'])} | {_show(roll['handoff'])} | "
        f"{roll['invariant']['most_unavailable']} |"
    )


ROLL_HEADER = [
    "| roll | N | c | makespan (s) | limit (s) | ratio | strict ratio | mean ratio | "
    "drain / reboot / ready (s, medians) | first cordon (s) | handoff (s) | most down |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def _rolls(results: dict[str, Any]) -> list[str]:
    rows = [
        _roll_line(f"{mode} {key}", roll)
        for mode, rolls in results.get("makespan_ratio", {}).items()
        for key, roll in rolls.items()
    ]
    for nodes, run in (results.get("scale") or {}).get("runs", {}).items():
        size = run["ours"]["agents_process_rss_mib"]
        rows.append(_roll_line(f"scale ({nodes} agents in one process of {size} MiB)", run["ours"]))
    return [*ROLL_HEADER, *rows] if rows else []


def _idle(results: dict[str, Any]) -> list[str]:
    idle = results.get("idle_requests_per_node_hour")
    if not idle:
        return []
    lines = [
        f"Idle API requests per node per hour ({idle['nodes']} nodes, "
        f"{idle['window_seconds']:g} s windows):",
        "",
        "| mode | from the audit log | from apiserver_request_total − baseline |",
        "|---|---|---|",
    ]
    for mode in ("ours", "polling"):
        if mode in idle:
            figures = idle[mode]
            lines.append(
                f"| {mode} | {_show(figures['audit'])} | {_show(figures['apiserver_metrics'])} |"
            )
    return lines


SCALE_HEADER = [
    "| N | model | requests / hand-off | watch events / hand-off | of them DaemonSet | "
    "apiserver CPU s / reboot | kured requests / hand-off (audit) | "
    "idle requests / node-hour (metrics, audit) |",
    "|---|---|---|---|---|---|---|---|",
]


def _scale(results: dict[str, Any]) -> list[str]:
    scale = results.get("scale")
    if not scale:
        return []
    rows = []
    for nodes, run in scale["runs"].items():
        for mode in ("ours", "polling"):
            figures = run[mode]
            per = figures["per_handoff"] or {}
            rows.append(
                f"| {nodes} | {mode} | {_show(per.get('requests'))} | "
                f"{_show(per.get('watch_events'))} | {_show(per.get('lock_watch_events'))} | "
                f"{_show(per.get('cpu_seconds'))} | "
                f"{_show(figures['kured_requests_per_handoff_audit'])} | "
                f"{_show(figures['idle_requests_per_node_hour'])}, "
                f"{_show(figures['idle_requests_per_node_hour_audit'])} |"
            )
    return [
        "Scale: kube-apiserver's own counters above the no-kured baseline:",
        "",
        *SCALE_HEADER,
        *rows,
    ]


def summary(results: dict[str, Any]) -> list[str]:
    """latest.md: the machine, the figures, and the targets."""
    box = results["machine"]
    lines = [
        "# kured benchmark",
        "",
        f"{results['generated']} · kured {results['kured']} · Kubernetes "
        f"{results['kubernetes']} · {box['cpus']} × {box['cpu_model']}, "
        f"{box['memory_mib']} MiB, Linux {box['kernel']}, Python {box['python']}",
        "",
        *_rolls(results),
        "",
    ]
    if detect := results.get("detect_to_cordon_seconds"):
        lines += [
            f"Sentinel → cordon with the lock free: median {_show(detect['median'])} s, "
            f"p95 {_show(detect['p95'])} s ({len(detect['samples'])} samples)",
            "",
        ]
    if rss := results.get("rss_mib"):
        lines += [
            f"Daemon RSS at steady state: median {_show(rss['median'])} MiB, "
            f"max {_show(rss['max'])} MiB",
            "",
        ]
    lines += _idle(results)
    lines += ["", *_scale(results)]
    if "wall_s" in results:
        lines += ["", f"Wall time: {results['wall_s']:.0f} s"]
    lines += ["", "Targets:", *(check.line() for check in checks(results))]
    return lines


def write(results: dict[str, Any], out: Path) -> list[str]:
    """latest.json and latest.md in out; returns the summary's lines."""
    out.mkdir(parents=True, exist_ok=True)
    results = results | {"checks": [asdict(check) for check in checks(results)]}
    (out / "latest.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    lines = summary(results)
    (out / "latest.md").write_text("\n".join(lines) + "\n")
    return lines
