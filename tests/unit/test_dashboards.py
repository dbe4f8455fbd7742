"""The Grafana dashboard and the alert rules: valid, and only on kured's metric names.

The rule file and the dashboard's queries go through the real Prometheus tooling (promtool,
from Debian's prometheus package: scripts/install-test-deps.sh), the alerts through
``promtool test rules``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import run_promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "kured-dashboard.json"
PROMETHEUS_RULE = ROOT / "deploy" / "prometheus" / "kured-rules.yaml"
RULE_FILE = ROOT / "deploy" / "prometheus" / "kured-rules.prom.yaml"
ALERTS = {"RebootRequiredTooLong", "NodeStuckDraining", "LockHeldTooLong", "RebootLoop"}
HISTOGRAMS = {"kured_drain_duration_seconds", "kured_lock_acquire_latency_seconds"}
METRICS = {
    "kured_reboot_required",
    "kured_lock_held",
    "kured_phase",
    "kured_reboot_blocked",
    "kured_window_open",
    "kured_reboots_total",
    "kured_last_successful_reboot_timestamp_seconds",
    "kured_reboot_loop",
    "kured_gate_timeout_total",
    "kured_stale_locks_reclaimed_total",
    *HISTOGRAMS,
}
SERIES = METRICS | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
# Grafana's variables, replaced by something Prometheus parses.
GRAFANA_VARIABLES = {"$node": ".*", "$__range": "1h"}
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:$])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    for pattern in (r'"(?:[^"\\]|\\.)*"', r"\{[^}]*\}", r"\[[^\]]*\]", _LABEL_LISTS):
        expr = re.sub(pattern, " ", expr)
    return set(_NAME.findall(expr)) - _KEYWORDS


def test_metric_names_finds_selectors_only() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le) (increase(a_bucket{node=~"$node"}[$__range])))'
        " / on (node) group_left (phase) max without (x) (b) * 1000 > bool time()"
    )
    assert metric_names(expr) == {"a_bucket", "b"}


# --- the dashboard ------------------------------------------------------------------


DASHBOARD_JSON: dict[str, Any] = json.loads(DASHBOARD.read_text())
PANELS: list[dict[str, Any]] = DASHBOARD_JSON["panels"]


def panel_exprs() -> Iterator[tuple[str, str]]:
    """(name, expr) of every query in the dashboard: panels' targets and annotations."""
    for panel in PANELS:
        for target in panel["targets"]:
            yield f"panel{panel['id']}_{target['refId']}", target["expr"]
    for number, annotation in enumerate(DASHBOARD_JSON["annotations"]["list"]):
        yield f"annotation{number}", annotation["expr"]


def test_dashboard_is_a_grafana_dashboard() -> None:
    assert DASHBOARD_JSON["title"] == "kured"
    assert DASHBOARD_JSON["uid"]
    assert isinstance(DASHBOARD_JSON["schemaVersion"], int)
    ids = [panel["id"] for panel in PANELS]
    assert len(ids) == len(set(ids))
    for panel in PANELS:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["targets"], panel["title"]


def test_datasource_is_a_template_variable() -> None:
    variables = {v["name"]: v for v in DASHBOARD_JSON["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": "${datasource}"}
    queried = [variables["node"], *DASHBOARD_JSON["annotations"]["list"], *PANELS]
    queried += [target for panel in PANELS for target in panel["targets"]]
    assert all(each["datasource"] == expected for each in queried)


def test_dashboard_queries_only_kureds_metrics_and_shows_them_all() -> None:
    used = set().union(*(metric_names(expr) for _, expr in panel_exprs()))
    assert used <= SERIES
    assert {name.removesuffix("_bucket") for name in used} == METRICS
    node_query = next(v for v in DASHBOARD_JSON["templating"]["list"] if v["name"] == "node")
    assert re.fullmatch(r"label_values\((\w+), node\)", node_query["definition"])
    assert node_query["definition"].removeprefix("label_values(").split(",")[0] in METRICS


def test_dashboard_queries_parse_in_prometheus(tmp_path: Path) -> None:
    rules = []
    for name, query in panel_exprs():
        expr = query
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:{name}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


# --- the alerts ---------------------------------------------------------------------


PROMETHEUS_RULE_YAML: dict[str, Any] = yaml.safe_load(PROMETHEUS_RULE.read_text())
RULES: list[dict[str, Any]] = [
    rule for group in PROMETHEUS_RULE_YAML["spec"]["groups"] for rule in group["rules"]
]


def test_prometheus_rule_has_the_four_alerts_on_kureds_metrics() -> None:
    assert PROMETHEUS_RULE_YAML["apiVersion"] == "monitoring.coreos.com/v1"
    assert PROMETHEUS_RULE_YAML["kind"] == "PrometheusRule"
    assert {rule["alert"] for rule in RULES} == ALERTS
    for rule in RULES:
        assert metric_names(rule["expr"]) <= SERIES, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= rule["annotations"].keys()


def test_rule_file_is_the_prometheus_rules_groups() -> None:
    assert yaml.safe_load(RULE_FILE.read_text())["groups"] == PROMETHEUS_RULE_YAML["spec"]["groups"]


def test_rule_file_loads_in_prometheus() -> None:
    run_promtool("check", "rules", str(RULE_FILE))


def firing(alert: str, at: str, node: str = "n1") -> dict[str, Any]:
    severity = next(rule["labels"]["severity"] for rule in RULES if rule["alert"] == alert)
    summary = next(rule["annotations"] for rule in RULES if rule["alert"] == alert)
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [
            {
                "exp_labels": {"node": node, "severity": severity},
                "exp_annotations": {
                    key: text.replace("{{ $labels.node }}", node) for key, text in summary.items()
                },
            }
        ],
    }


def quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def test_alerts_fire_after_their_durations(tmp_path: Path) -> None:
    """Each alert is quiet just before its `for:` has passed and firing just after."""
    series = {
        'kured_reboot_required{node="n1"}': "1x4400",  # 3 days = 4320 minutes
        'kured_phase{node="n1", phase="draining"}': "1x40",
        'kured_phase{node="n2", phase="idle"}': "1x40",
        'kured_lock_held{node="n1"}': "1x130",
        'kured_reboot_loop{node="n1"}': "0x10 1x10",
    }
    tests = {
        "rule_files": [str(RULE_FILE)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    quiet("RebootRequiredTooLong", "4319m"),
                    firing("RebootRequiredTooLong", "4321m"),
                    quiet("NodeStuckDraining", "29m"),
                    firing("NodeStuckDraining", "31m"),
                    quiet("LockHeldTooLong", "119m"),
                    firing("LockHeldTooLong", "121m"),
                    quiet("RebootLoop", "10m"),
                    firing("RebootLoop", "12m"),
                ],
            }
        ],
    }
    path = tmp_path / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(tests))
    run_promtool("test", "rules", str(path))
