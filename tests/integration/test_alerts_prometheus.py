"""The alert blocker against a real Prometheus evaluating real alerting rules."""

from __future__ import annotations

import re

import pytest

from kured.alerts import PrometheusBlocker, PrometheusQueryError, active_alerts

pytestmark = pytest.mark.integration

MAINT = re.compile("^Maintenance")


@pytest.mark.parametrize(
    ("regex", "match_only", "firing_only", "expected"),
    [
        (None, False, False, ["AlwaysFiring", "MaintenanceWindow", "SlowBurn"]),
        (None, False, True, ["AlwaysFiring", "MaintenanceWindow"]),
        (MAINT, False, False, ["AlwaysFiring", "SlowBurn"]),
        (MAINT, False, True, ["AlwaysFiring"]),
        (MAINT, True, False, ["MaintenanceWindow"]),
        (re.compile("Slow"), True, True, []),
    ],
)
async def test_filters_against_live_alerts(
    prometheus: str,
    regex: re.Pattern[str] | None,
    match_only: bool,
    firing_only: bool,
    expected: list[str],
) -> None:
    assert await active_alerts(prometheus, regex, match_only, firing_only, timeout=5) == expected


async def test_blocker_reason(prometheus: str) -> None:
    blocker = PrometheusBlocker(prometheus, MAINT, firing_only=True)
    assert await blocker.check() == "alerts firing: AlwaysFiring"
    assert await PrometheusBlocker(prometheus, re.compile("."), firing_only=True).check() is None


async def test_wrong_path_is_a_query_failure(prometheus: str) -> None:
    with pytest.raises(PrometheusQueryError, match="HTTP 404"):
        await active_alerts(f"{prometheus}/not-prometheus", None, False, False, timeout=5)
    reason = await PrometheusBlocker(f"{prometheus}/not-prometheus").check()
    assert reason is not None
    assert reason.startswith("prometheus query failed: HTTP 404")
