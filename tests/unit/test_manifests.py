"""deploy/manifests: the chart's defaults rendered into one file per reboot method.

scripts/render-manifests.py --check re-renders them (and the plain Prometheus rule file) with
the real Helm engine and fails on any difference, so they cannot drift from the chart.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_VERSION = yaml.safe_load((ROOT / "deploy/helm/kured/Chart.yaml").read_text())["appVersion"]
KINDS = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "DaemonSet"]


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render-manifests.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("suffix", "method"), [("", "command"), ("-signal", "signal")])
def test_one_file_per_method_with_everything_to_apply(suffix: str, method: str) -> None:
    path = ROOT / "deploy" / "manifests" / f"kured-{APP_VERSION}{suffix}.yaml"
    objects: list[dict[str, Any]] = [o for o in yaml.safe_load_all(path.read_text()) if o]
    assert [o["kind"] for o in objects] == KINDS
    namespaced = [o for o in objects if not o["kind"].startswith("Cluster")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"kube-system"}
    (container,) = objects[-1]["spec"]["template"]["spec"]["containers"]
    assert ("--reboot-method=signal" in container["args"]) == (method == "signal")
    assert container["image"] == f"ghcr.io/kured-py/kured:{APP_VERSION}"
