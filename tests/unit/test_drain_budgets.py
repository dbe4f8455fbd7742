"""Which PodDisruptionBudget has room for which pod: the pure part of the drain's wait for a
budget after a refused eviction (kured.drain.selects, has_room_for), and the Eviction
version read from discovery (kured.evictions.eviction_version_in)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from kured.drain import has_room_for, left_disrupted, selects
from kured.evictions import eviction_version_in

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


CREATED = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def _web_pod() -> Pod:
    return Pod(metadata=ObjectMeta(name="web-1", labels=WEB, creationTimestamp=CREATED))


@pytest.mark.parametrize(
    ("selector", "disrupted", "left"),
    [
        ({"matchLabels": {"app": "web"}}, {"web-1": "2026-12-03T12:00:05Z"}, True),
        ({"matchLabels": {"app": "web"}}, {"web-1": "2026-12-03T12:00:00Z"}, True),
        ({"matchLabels": {"app": "web"}}, {"web-2": "2026-12-03T12:00:05Z"}, False),
        # recorded before this pod existed: an earlier pod of the same name (StatefulSet)
        ({"matchLabels": {"app": "web"}}, {"web-1": "2026-12-03T11:59:59Z"}, False),
        # listed by a budget that does not cover the pod
        ({"matchLabels": {"app": "db"}}, {"web-1": "2026-12-03T12:00:05Z"}, False),
        ({"matchLabels": {"app": "web"}}, None, False),
    ],
)
def test_a_pod_is_left_disrupted_when_its_budget_lists_this_very_pod(
    selector: dict[str, Any], disrupted: dict[str, str] | None, left: bool
) -> None:
    budget = {"spec": {"selector": selector}, "status": {"disruptedPods": disrupted}}
    assert left_disrupted(budget, _web_pod()) is left
