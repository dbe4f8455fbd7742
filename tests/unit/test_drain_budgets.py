"""Which PodDisruptionBudget has room for which pod: the pure part of the drain's wait for a
budget after a refused eviction (kured.drain.selects, has_room_for), and the Eviction
version read from discovery (kured.kube.eviction_version_in)."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from kured.drain import has_room_for, selects
from kured.kube import eviction_version_in

WEB = {"app": "web", "tier": "front"}


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        (None, False),
        ({}, True),
        ({"matchLabels": {"app": "web"}}, True),
        ({"matchLabels": {"app": "db"}}, False),
        ({"matchLabels": {"app": "web", "tier": "back"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, True),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}],
            },
            False,
        ),
    ],
)
def test_selects(selector: dict[str, Any] | None, selected: bool) -> None:
    assert selects(selector, WEB) is selected


def budget(allowed: int | None, app: str = "web") -> dict[str, Any]:
    status = {} if allowed is None else {"disruptionsAllowed": allowed}
    return {"spec": {"selector": {"matchLabels": {"app": app}}}, "status": status}


@pytest.mark.parametrize(
    ("pdb", "room"),
    [
        (budget(1), True),
        (budget(0), False),
        (budget(None), False),  # not yet processed by the disruption controller
        (budget(2, app="db"), False),  # room, but for other pods
    ],
)
def test_has_room_for(pdb: dict[str, Any], room: bool) -> None:
    pod = Pod(metadata=ObjectMeta(name="web-1", namespace="shop", labels=WEB))
    assert has_room_for(pdb, pod) is room


@pytest.mark.parametrize(
    ("entry", "version"),
    [
        ({"name": "pods/eviction", "group": "policy", "version": "v1beta1"}, "policy/v1beta1"),
        ({"name": "pods/eviction", "group": "policy", "version": "v1"}, "policy/v1"),
        ({"name": "pods/eviction"}, None),  # a server too old to say
        ({"name": "pods/log", "version": "v1"}, None),
    ],
)
def test_the_eviction_version_is_read_from_core_discovery(
    entry: dict[str, str], version: str | None
) -> None:
    assert eviction_version_in({"resources": [{"name": "pods"}, entry]}) == version
