"""The Helm chart deploy/helm/kured, rendered by the real Helm engine (helm-python-sdk).

It must take a Go kured user's values file unchanged and give the flags Go kured's chart gives,
produce the objects of the lead's deploy/*.yaml, and only ever pass flags kured knows.
"""

from __future__ import annotations

import os
import re
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import helm_python
import pytest
import yaml

from kured.args import kured_command, parse_args
from kured.config import Config
from kured_testbed.chart import render_objects

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kured"
GO_VALUES = Path(__file__).with_name("data") / "go-kured-values.yaml"

CHART_VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
CONFIGURATION_KEYS = sorted(set(CHART_VALUES["configuration"]) - {"useRebootSentinelHostPath"})
# Flags our chart renders that kured.cli does not have yet. TODO(cli): remove each one as
# kured.cli gains it; test_pending_flags_are_not_in_the_cli fails until then.
PENDING_FLAGS: set[str] = set()
# What kubereboot/charts' kured chart 5.10 renders for tests/unit/data/go-kured-values.yaml,
# in its order (read off its templates/daemonset.yaml).
GO_CHART_ARGS = [
    "--ds-name=kured",
    "--ds-namespace=kube-system",
    "--metrics-port=8080",
    "--lock-ttl=4h",
    "--alert-filter-regexp=^(Watchdog|InfoInhibitor)$",
    "--alert-firing-only=true",
    "--blocking-pod-selector=app=etcd-backup",
    "--blocking-pod-selector=kured.io/block-reboot=true",
    "--end-time=5am",
    "--period=1h",
    "--drain-grace-period=120",
    "--drain-timeout=30m",
    "--prometheus-url=http://prometheus-operated.monitoring.svc:9090",
    "--reboot-days=mo",
    "--reboot-days=tu",
    "--reboot-days=we",
    "--pre-reboot-node-labels=kured=rebooting",
    "--post-reboot-node-labels=kured=done",
    "--reboot-sentinel=/sentinel/reboot-required",
    "--reboot-command=/bin/systemctl reboot",
    "--slack-hook-url=https://hooks.slack.com/services/T0000/B0000/XXXXXXXX",
    "--notify-url=smtp://kured:secret@smtp.example.com:587/?from=kured@example.com&to=ops@example.com",
    "--message-template-drain=Draining node %s for OS updates",
    "--start-time=2am",
    "--time-zone=Europe/Berlin",
    "--prefer-no-schedule-taint=weave.works/kured-node-reboot",
    "--log-format=json",
    "--concurrency=1",
    "--annotate-nodes=true",
    "--lock-release-delay=5m",
]


def render(
    values: dict[str, Any] | None = None, release: str = "kured", namespace: str = "kube-system"
) -> dict[str, dict[str, Any]]:
    """The chart's objects by "Kind/name"."""
    objects: list[dict[str, Any]] = render_objects(values or {}, release, namespace)
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def pod_spec(objects: dict[str, dict[str, Any]], name: str = "kured") -> dict[str, Any]:
    spec: dict[str, Any] = objects[f"DaemonSet/{name}"]["spec"]["template"]["spec"]
    return spec


def container(objects: dict[str, dict[str, Any]], name: str = "kured") -> dict[str, Any]:
    (only,) = pod_spec(objects, name)["containers"]
    return dict(only)


def args_of(values: dict[str, Any] | None = None) -> list[str]:
    return list(container(render(values))["args"])


def flag_args(args: list[str], flag: str) -> list[str]:
    return [a for a in args if a == flag or a.startswith(f"{flag}=")]


def flag_for(key: str) -> str:
    """configuration.someKey → --some-key, but for one key renamed to avoid a clash."""
    if key == "maxUnavailableNodes":  # the top-level maxUnavailable is the DaemonSet's
        return "--max-unavailable"
    return "--" + re.sub(r"(?<!^)([A-Z])", r"-\1", key).lower()


def lead_daemonset(path: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / path).read_text())
    return manifest


RULE_FIELDS = ("apiGroups", "resources", "resourceNames", "verbs")
EVENTS_RULE = (("",), ("events",), (), ("create", "patch"))
LEASES_RULE = (
    ("coordination.k8s.io",),
    ("leases",),
    (),
    ("create", "get", "list", "update", "watch"),
)


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[tuple[str, ...], ...]]:
    return {tuple(tuple(sorted(rule.get(field, ()))) for field in RULE_FIELDS) for rule in rules}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray KURED_* from the outside; the node id comes from env as the DaemonSet sets it."""
    for name in [n for n in os.environ if n.startswith("KURED_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KURED_NODE_ID", "n1")


def config_of(args: list[str]) -> Config:
    return parse_args(args).config


def test_chart_lints_clean() -> None:
    report = helm_python.lint(CHART, strict=True, namespace="kube-system")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("lead_file", "values"),
    [
        ("daemonset.yaml", {}),
        ("daemonset-signal.yaml", {"configuration": {"rebootMethod": "signal"}}),
    ],
)
def test_daemonset_is_the_leads(lead_file: str, values: dict[str, Any]) -> None:
    lead_spec = lead_daemonset(lead_file)["spec"]["template"]["spec"]
    (lead,) = lead_spec["containers"]
    objects = render(values)
    spec, ours = pod_spec(objects), container(objects)
    for field in ("hostPID", "restartPolicy", "tolerations", "nodeSelector", "volumes"):
        assert spec[field] == lead_spec[field], field
    for field in ("image", "imagePullPolicy", "env", "volumeMounts"):
        assert ours[field] == lead[field], field
    assert lead["securityContext"].items() <= ours["securityContext"].items()
    assert ours["securityContext"]["runAsUser"] == 0
    assert ours["ports"][0]["containerPort"] == lead["ports"][0]["containerPort"]
    assert ours["livenessProbe"]["httpGet"] == {
        **lead["livenessProbe"]["httpGet"],
        "scheme": "HTTP",
    }
    assert ours["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["serviceAccountName"] == lead_spec["serviceAccountName"]
    # The same daemon configuration, whatever the flags' spelling and order.
    assert config_of(ours["args"]) == config_of(lead["args"])


def test_signal_method_keeps_only_cap_kill() -> None:
    ours = container(render({"configuration": {"rebootMethod": "signal"}}))
    assert ours["securityContext"] == {
        "runAsUser": 0,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["KILL"]},
    }
    assert "--reboot-method=signal" in ours["args"]


def test_container_security_context_keys_the_user_sets_win() -> None:
    go_style_signal = {
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["CAP_KILL"], "drop": ["*"]},
    }
    ours = container(render({"containerSecurityContext": go_style_signal}))
    assert ours["securityContext"] == {**go_style_signal, "runAsUser": 0}


@pytest.mark.usefixtures("cli_env")
def test_go_kured_values_file_renders_unchanged_with_go_charts_flags() -> None:
    values = yaml.safe_load(GO_VALUES.read_text())
    objects = render(values)
    ours = container(objects)
    assert ours["args"] == GO_CHART_ARGS
    spec = pod_spec(objects)
    assert spec["tolerations"] == values["tolerations"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert ours["resources"] == values["resources"]
    assert ours["env"][1:] == values["extraEnvVars"]
    template = objects["DaemonSet/kured"]["spec"]["template"]["metadata"]
    assert template["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}
    service = objects["Service/kured"]
    assert service["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    selector = objects["DaemonSet/kured"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    monitor = objects["ServiceMonitor/kured"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    config = config_of(ours["args"])
    window = config.window
    assert (window.days, window.start, window.end) == (frozenset({1, 2, 3}), time(2), time(5))
    assert window.tz == ZoneInfo("Europe/Berlin")
    assert config.blocking_pod_selectors == ("app=etcd-backup", "kured.io/block-reboot=true")
    assert config.notify_urls[0].startswith("smtp://")  # --notify-url wins over --slack-hook-url


def test_selector_is_go_charts_so_helm_upgrade_can_switch_charts() -> None:
    selector = render(release="nightly")["DaemonSet/nightly-kured"]["spec"]["selector"]
    assert selector == {
        "matchLabels": {
            "app.kubernetes.io/name": "kured",
            "app.kubernetes.io/instance": "nightly",
        }
    }


def sample(key: str) -> Any:
    default = CHART_VALUES["configuration"][key]
    if isinstance(default, bool):
        return True
    if isinstance(default, list):
        return ["first", "second"]
    return f"{key}-value"


def expected_args(key: str, flag: str) -> list[str]:
    value = sample(key)
    if isinstance(value, list):
        return [f"{flag}={item}" for item in value]
    if value is True:
        return [flag] if key in {"forceReboot", "dryRun", "pollOnly"} else [f"{flag}=true"]
    return [f"{flag}={value}"]


@pytest.mark.parametrize("key", CONFIGURATION_KEYS)
def test_every_configuration_key_maps_to_its_flag(key: str) -> None:
    flag = flag_for(key)
    values = {"configuration": {key: sample(key), "useRebootSentinelHostPath": False}}
    assert flag_args(args_of(values), flag) == expected_args(key, flag)


@pytest.mark.parametrize("key", CONFIGURATION_KEYS)
def test_unset_keys_pass_no_flag(key: str) -> None:
    """Empty values (the defaults of the keys Go kured's chart leaves empty) pass nothing."""
    if CHART_VALUES["configuration"][key] in ("", 0, False, []):
        assert flag_args(args_of(), flag_for(key)) == []


@pytest.mark.parametrize("key", ["maxConsecutiveReboots", "maxUnavailableNodes"])
def test_our_counts_pass_zero(key: str) -> None:
    """Go template truth drops 0; these two take 0 as a setting (no limit, none at once)."""
    assert flag_args(args_of({"configuration": {key: 0}}), flag_for(key)) == [f"{flag_for(key)}=0"]


def test_notify_url_may_be_a_list() -> None:
    values = {"configuration": {"notifyUrl": ["slack://a/b/c", "json://hooks/x"]}}
    args = flag_args(args_of(values), "--notify-url")
    assert args == ["--notify-url=slack://a/b/c", "--notify-url=json://hooks/x"]


def test_slack_values_go_through_tpl() -> None:
    values = {"configuration": {"slackChannel": "{{ .Release.Name }}-alerts"}}
    assert "--slack-channel=kured-alerts" in args_of(values)


def test_extra_args_come_last_and_empty_values_give_bare_flags() -> None:
    args = args_of({"extraArgs": {"force-reboot": "", "period": "10m"}})
    assert args[-2:] == ["--force-reboot", "--period=10m"]


def rendered_flags() -> set[str]:
    """Every flag name the chart can render: each key set, plus the fixed ones."""
    values = {key: sample(key) for key in CONFIGURATION_KEYS}
    everything = args_of({"configuration": {**values, "useRebootSentinelHostPath": False}})
    return {arg.partition("=")[0] for arg in everything + args_of()}


def cli_flags() -> set[str]:
    return {opt for param in kured_command.params for opt in param.opts}


def test_every_rendered_flag_is_a_kured_flag() -> None:
    assert rendered_flags() - cli_flags() <= PENDING_FLAGS


def test_every_kured_flag_has_a_configuration_key() -> None:
    set_by_the_chart = {"--ds-name", "--ds-namespace"}
    not_for_a_daemonset = {"--node-id", "--kubeconfig", "--version", "--markdown-flags", "--help"}
    configurable = {flag_for(key) for key in CONFIGURATION_KEYS} | set_by_the_chart
    assert cli_flags() - not_for_a_daemonset - {"-h"} <= configurable


def test_pending_flags_are_not_in_the_cli() -> None:
    assert PENDING_FLAGS & cli_flags() == set(), "kured.cli has them now: shrink PENDING_FLAGS"


def test_rbac_is_the_leads_plus_events_and_leases() -> None:
    lead = {
        doc["kind"]: doc
        for doc in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text())
        if doc
    }
    objects = render()
    for kind in ("ClusterRole", "Role"):
        ours = rule_set(objects[f"{kind}/kured"]["rules"])
        # deploy/rbac.yaml serves both lock backends, the chart adds leases only when asked
        lead_rules = rule_set(lead[kind]["rules"]) - {EVENTS_RULE, LEASES_RULE}
        assert ours - {EVENTS_RULE} == lead_rules, kind
    assert EVENTS_RULE in rule_set(objects["ClusterRole/kured"]["rules"])
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        assert objects[f"{kind}/kured"]["subjects"] == lead[kind]["subjects"], kind
        assert objects[f"{kind}/kured"]["roleRef"] == lead[kind]["roleRef"], kind
    assert objects["ServiceAccount/kured"]["metadata"]["namespace"] == "kube-system"


def test_lease_backend_adds_the_lease_rule_to_the_role_only() -> None:
    default, lease = render(), render({"configuration": {"lockBackend": "lease"}})
    assert rule_set(lease["Role/kured"]["rules"]) == rule_set(default["Role/kured"]["rules"]) | {
        LEASES_RULE
    }
    assert lease["ClusterRole/kured"] == default["ClusterRole/kured"]


def test_rbac_create_false_renders_no_rbac() -> None:
    kinds = {key.partition("/")[0] for key in render({"rbac": {"create": False}})}
    assert kinds == {"ServiceAccount", "DaemonSet"}


def test_service_account_create_false_uses_the_given_name() -> None:
    objects = render({"serviceAccount": {"create": False, "name": "node-maintenance"}})
    assert "ServiceAccount/kured" not in objects
    assert pod_spec(objects)["serviceAccountName"] == "node-maintenance"
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        (subject,) = objects[f"{kind}/kured"]["subjects"]
        assert subject["name"] == "node-maintenance"


def test_service_account_annotations_merge_the_go_charts_key() -> None:
    values = {
        "serviceAccount": {
            "annotations": {"a.example.com/one": "1"},
            "extraAnnotations": {"b.example.com/two": 2},
        }
    }
    metadata = render(values)["ServiceAccount/kured"]["metadata"]
    assert metadata["annotations"] == {"a.example.com/one": "1", "b.example.com/two": "2"}


def test_release_name_and_namespace_name_everything() -> None:
    objects = render({"namespaceOverride": "maintenance"}, release="nightly", namespace="ops")
    args = container(objects, "nightly-kured")["args"]
    assert args[:2] == ["--ds-name=nightly-kured", "--ds-namespace=maintenance"]
    namespaced = [o for o in objects.values() if not o["kind"].startswith("Cluster")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"maintenance"}
    assert objects["Role/nightly-kured"]["rules"][0]["resourceNames"] == ["nightly-kured"]
    (subject,) = objects["ClusterRoleBinding/nightly-kured"]["subjects"]
    assert subject == {
        "kind": "ServiceAccount",
        "name": "nightly-kured",
        "namespace": "maintenance",
    }


def test_sentinel_command_replaces_the_host_path() -> None:
    command = "sh -c 'test -f /var/run/reboot-required'"
    configuration = {"rebootSentinelCommand": command}
    with_mount = render({"configuration": configuration})
    assert not flag_args(container(with_mount)["args"], "--reboot-sentinel-command")
    without = render({"configuration": {**configuration, "useRebootSentinelHostPath": False}})
    args = container(without)["args"]
    assert flag_args(args, "--reboot-sentinel-command") == [f"--reboot-sentinel-command={command}"]
    assert flag_args(args, "--reboot-sentinel") == ["--reboot-sentinel=/var/run/reboot-required"]
    assert "volumes" not in pod_spec(without)
    assert "volumeMounts" not in container(without)


def test_custom_sentinel_mounts_its_directory() -> None:
    objects = render({"configuration": {"rebootSentinel": "/run/kured/needs-reboot"}})
    assert "--reboot-sentinel=/sentinel/needs-reboot" in container(objects)["args"]
    (volume,) = pod_spec(objects)["volumes"]
    assert volume["hostPath"] == {"path": "/run/kured", "type": "Directory"}


def test_on_delete_update_strategy_has_no_rolling_update() -> None:
    strategy = render({"updateStrategy": "OnDelete"})["DaemonSet/kured"]["spec"]["updateStrategy"]
    assert strategy == {"type": "OnDelete"}


def test_image_tag_defaults_to_the_app_version() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(render())["image"] == f"ghcr.io/kured-py/kured:{app_version}"
    assert container(render({"image": {"tag": "dev"}}))["image"] == "ghcr.io/kured-py/kured:dev"
