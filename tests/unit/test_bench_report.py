"""What `make bench` writes: the issue's targets checked, the summary, the Gantt chart, and
the command's settings; plus how the scale run tells that a node is back, and stops its agent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube.resources.core_v1 import Node

from kured.args import parse_args
from kured_testbed.bench import _parser, _settings
from kured_testbed.benchmath import NodePhases, roll_figures
from kured_testbed.benchreport import checks, summary, write
from kured_testbed.benchrun import Settings
from kured_testbed.benchscale import summary as summary_of_scale
from kured_testbed.manyagents import Boots, HostGoingDown
from kured_testbed.state import UsageError
from kured_testbed.timeline import draw, draw_per_handoff


def roll(ratio_of: float, most: int = 1) -> dict[str, Any]:
    """A roll's JSON whose makespan is ratio_of × its limit."""
    figures = roll_figures([NodePhases("n", 1.0, 3.0, 8.0, 9.0)], 1, most)
    rolled = figures.to_json()
    return rolled | {
        "makespan": rolled["limit"] * ratio_of,
        "ratio": ratio_of,
        "invariant": {"held": True, "most_unavailable": most, "violations": [], "stuck": []},
    }


def scale_run(
    ratio_of: float, requests: float, polling: float, idle: tuple[float, float]
) -> dict[str, Any]:
    """One fleet size of the scale scenario: ours' roll and per hand-off, and polling's."""

    def mode(per_request: float, idle_rate: float) -> dict[str, Any]:
        per = {"requests": per_request, "watch_events": per_request * 10}
        return {
            "per_handoff": per | {"lock_watch_events": 5.0, "cpu_seconds": 0.2},
            "kured_requests_per_handoff_audit": per_request / 2,
            "idle_requests_per_node_hour": idle_rate + 1,
            "idle_requests_per_node_hour_audit": idle_rate,
        }

    ours = roll(ratio_of, most=30) | mode(requests, idle[0]) | {"agents_process_rss_mib": 310.5}
    return {"ours": ours, "polling": mode(polling, idle[1])}


RESULTS: dict[str, Any] = {
    "generated": "2026-01-01T00:00:00Z",
    "kured": "0.1.0",
    "kubernetes": "v1.20.2",
    "machine": {
        "cpus": 2,
        "cpu_model": "Test CPU",
        "memory_mib": 4096,
        "kernel": "6.1",
        "python": "3.11.7",
    },
    "makespan_ratio": {
        "ours": {"c=1": roll(1.05), "c=3": roll(1.2)},
        "polling": {"c=1": roll(3.0)},
    },
    "detect_to_cordon_seconds": {"median": 1.0, "p95": 1.9, "samples": [1.0]},
    "scale": summary_of_scale(
        {
            100: scale_run(1.05, requests=20.0, polling=300.0, idle=(0.0, 120.0)),
            1000: scale_run(1.08, requests=30.0, polling=2800.0, idle=(0.5, 120.0)),
        }
    ),
    "idle_requests_per_node_hour": {
        "window_seconds": 600.0,
        "nodes": 12,
        "baseline_requests": 5000,
        "ours": {"audit": 0.0, "apiserver_metrics": 3.0},
        "polling": {"audit": 120.0, "apiserver_metrics": 118.0},
    },
}


def test_each_target_of_the_issue_is_checked() -> None:
    found = {check.what: check.ok for check in checks(RESULTS)}
    assert found == {
        "makespan_ratio ours c=1 ≤ 1.1": True,
        "makespan_ratio ours c=3 ≤ 1.1": False,
        "detect_to_cordon_seconds median ≤ 5": True,
        "rss_mib median ≤ 35": None,  # not measured in this run
        "scale requests per hand-off, largest fleet / smallest ≤ 2": True,
        "scale idle requests per node-hour ours ≤ polling (0.5 vs 120)": True,
        "scale makespan ratio at 1000 nodes ≤ 1.1": True,
        "scale concurrency violations (audit log) = 0": True,
    }


def test_the_summary_names_the_machine_and_kubernetes_with_the_figures() -> None:
    text = "\n".join(summary(RESULTS))
    assert "Kubernetes v1.20.2" in text
    assert "2 × Test CPU" in text
    assert "| ours c=1 | 1 | 1 |" in text
    assert "| polling c=1 |" in text
    assert "| scale (1000 agents in one process of 310.5 MiB) | 1 | 1 |" in text
    assert "| 1000 | polling | 2800 | 28000 | 5 | 0.2 | 1400 | 121, 120 |" in text
    assert "| polling | 120 | 118 |" in text
    assert "median 1 s, p95 1.9 s" in text
    assert "makespan_ratio ours c=3 ≤ 1.1: 1.2 — NOT met" in text


def test_write_puts_json_and_markdown_side_by_side(tmp_path: Path) -> None:
    lines = write(RESULTS, tmp_path)
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert saved["kubernetes"] == "v1.20.2"
    assert {"what": "rss_mib median ≤ 35", "value": None, "ok": None} in saved["checks"]
    assert (tmp_path / "latest.md").read_text() == "\n".join(lines) + "\n"


def test_a_gantt_chart_of_200_nodes_stays_small(tmp_path: Path) -> None:
    rolled = [
        NodePhases(f"n{i}", i * 0.5, i * 0.5 + 2, i * 0.5 + 7, i * 0.5 + 7.5) for i in range(200)
    ]
    path = tmp_path / "scale.png"
    draw(path, "scale", rolled, limit=300.0)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert path.stat().st_size < 200_000


def test_the_defaults_are_the_issues_sizes() -> None:
    settings = _settings(_parser().parse_args([]))
    assert settings == Settings()
    assert (settings.nodes, settings.concurrency, settings.reboot_seconds) == (12, (1, 3), 5.0)
    assert (settings.stop_seconds, settings.idle_seconds) == (2.0, 120.0)
    assert (settings.scale_nodes, settings.scale_concurrency) == ((100,), 10)
    assert settings.flags("ours", 3) == ["--period=1h", "--concurrency=3"]
    assert settings.flags("polling", 1) == ["--poll-only", "--period=1m", "--concurrency=1"]


def test_a_concurrency_must_leave_a_node_free() -> None:
    with pytest.raises(UsageError, match="concurrency 3 must be below the 3 nodes"):
        Settings(nodes=3, concurrency=(1, 3))
    with pytest.raises(UsageError, match="concurrency 10 must be below the 10 nodes"):
        Settings(scale_nodes=(10, 100))
    Settings(scale_nodes=(10,), scenarios=("idle",))  # no scale run, no scale fleet


def test_only_runs_the_named_scenarios_in_the_usual_order() -> None:
    args = _parser().parse_args(["--only", "scale", "--only", "idle", "--nodes", "4"])
    assert _settings(args).scenarios == ("idle", "scale")


NODE_INFO = (
    *("architecture", "containerRuntimeVersion", "kernelVersion", "kubeProxyVersion"),
    *("kubeletVersion", "machineID", "operatingSystem", "osImage", "systemUUID"),
)


def node(name: str, ready: bool, boot: str) -> Node:
    raw = {
        "metadata": {"name": name},
        "status": {
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "nodeInfo": {"bootID": boot, **dict.fromkeys(NODE_INFO, "x")},
        },
    }
    return cast(Node, Node.from_dict(raw))


async def test_a_node_is_back_when_ready_with_another_boot_id() -> None:
    boots = Boots()
    await boots.see(node("n1", True, "a"))
    waiting = asyncio.create_task(boots.back_up("n1", "a"))
    await boots.see(node("n1", False, "a"))  # went down
    await boots.see(node("n1", False, "b"))  # new boot, not Ready yet
    await asyncio.sleep(0)
    assert not waiting.done()
    await boots.see(node("n1", True, "b"))
    await asyncio.wait_for(waiting, 1.0)


async def test_a_host_told_to_reboot_goes_down_and_its_agent_goes_no_further(
    tmp_path: Path,
) -> None:
    """The agent was stopped only by cancelling its task, a cancellation Python 3.11's
    asyncio.wait_for can drop: the agent ran on and commanded the same reboot again, which the
    simulator carried out once the node was back (two reboots for one sentinel)."""
    argv = ["--node-id", "n1", "--reboot-sentinel", str(tmp_path / "sentinel")]
    down = asyncio.Event()
    rebooting = asyncio.create_task(HostGoingDown(parse_args(argv).config, tmp_path, down).reboot())
    await asyncio.wait_for(down.wait(), 1.0)
    await asyncio.sleep(0.05)
    assert (tmp_path / "reboot-requested").exists()
    assert not rebooting.done()
    rebooting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rebooting


def test_the_scale_summary_has_the_issues_keys() -> None:
    scale = RESULTS["scale"]
    assert scale["nodes"] == [100, 1000]
    assert scale["requests_per_handoff"] == {"100": 20.0, "1000": 30.0}
    assert scale["polling_requests_per_handoff"] == {"100": 300.0, "1000": 2800.0}
    assert scale["watch_events_per_handoff"] == {"100": 200.0, "1000": 300.0}
    assert (scale["requests_per_handoff_growth"], scale["makespan_ratio"]) == (1.5, 1.08)
    assert (scale["violations"], scale["held"]) == (0, True)


def test_a_scale_that_grows_with_the_fleet_misses_its_target() -> None:
    runs = {
        100: scale_run(1.05, requests=20.0, polling=300.0, idle=(0.0, 120.0)),
        1000: scale_run(1.2, requests=50.0, polling=2800.0, idle=(150.0, 120.0)),
    }
    found = {c.what: c.ok for c in checks({"scale": summary_of_scale(runs)})}
    assert found["scale requests per hand-off, largest fleet / smallest ≤ 2"] is False
    assert found["scale idle requests per node-hour ours ≤ polling (150 vs 120)"] is False
    assert found["scale makespan ratio at 1000 nodes ≤ 1.1"] is False


def test_the_per_handoff_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "scale-requests.png"
    draw_per_handoff(path, "t", {"ours": {100: 20.0, 1000: 30.0}, "polling": {100: 300.0}})
    assert path.read_bytes().startswith(b"\x89PNG")
