"""What the lab installs: deploy/ as shipped, or the chart rendered with a Go kured user's
values, changed only in each kured container's image and imagePullPolicy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kured_testbed.chart import render_objects
from kured_testbed.lab.images import KURED_IMAGE
from kured_testbed.lab.install import Method, kured_objects, shipped_manifest
from kured_testbed.manifests import load_manifests
from kured_testbed.state import UsageError

GO_VALUES = Path(__file__).with_name("data") / "go-kured-values.yaml"
CONTAINER = "DaemonSet/kured spec.template.spec.containers.0"
ONLY_IMAGE = {
    f"{CONTAINER}.image": KURED_IMAGE,
    f"{CONTAINER}.imagePullPolicy": "Never",
}


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Every scalar in a nested structure by its dotted path (list items by index)."""
    if isinstance(value, list):
        value = {str(i): item for i, item in enumerate(value)}
    if not isinstance(value, dict):
        return {path: value}
    items = value.items()
    return {
        k: v for key, item in items for k, v in leaves(item, f"{path}.{key}".lstrip(".")).items()
    }


def flat(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Every scalar of every object by `Kind/name dotted.path`."""
    named = {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}
    return {f"{name} {path}": v for name, o in named.items() for path, v in leaves(o).items()}


def changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """Each path whose value differs (or is gone: None), with its value after."""
    old, new = flat(before), flat(after)
    return {
        path: new.get(path) for path in old.keys() | new.keys() if old.get(path) != new.get(path)
    }


@pytest.mark.parametrize("method", ["command", "signal"])
def test_manifests_are_shipped_but_for_the_image(method: Method) -> None:
    shipped = load_manifests([shipped_manifest(method)])
    assert changes(shipped, kured_objects(method, "manifests")) == ONLY_IMAGE


def test_the_signal_manifest_is_the_signal_variant() -> None:
    assert shipped_manifest("signal").name.endswith("-signal.yaml")
    (daemonset,) = [o for o in kured_objects("signal", "manifests") if o["kind"] == "DaemonSet"]
    assert (
        "--reboot-method=signal" in daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    )


@pytest.mark.parametrize("method", ["command", "signal"])
def test_helm_with_go_kured_values_changes_only_the_image(method: Method) -> None:
    values = yaml.safe_load(GO_VALUES.read_text())
    if method == "signal":
        values["configuration"]["rebootMethod"] = "signal"
    rendered = render_objects(values)
    assert changes(rendered, kured_objects(method, "helm", GO_VALUES)) == ONLY_IMAGE


@pytest.mark.parametrize("method", ["command", "signal"])
def test_helm_with_the_defaults_is_the_shipped_manifest(method: Method) -> None:
    assert kured_objects(method, "helm") == kured_objects(method, "manifests")


def test_values_only_with_helm_and_never_against_the_method(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--values needs --install helm"):
        kured_objects("command", "manifests", GO_VALUES)
    signal_values = tmp_path / "values.yaml"
    signal_values.write_text("configuration:\n  rebootMethod: signal\n")
    with pytest.raises(UsageError, match="pass --reboot-method signal"):
        kured_objects("command", "helm", signal_values)
    broken = tmp_path / "broken.yaml"
    broken.write_text("configuration: [\n")
    with pytest.raises(UsageError, match=f"--values {broken}"):
        kured_objects("command", "helm", broken)
