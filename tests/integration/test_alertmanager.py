"""Alertmanager silences against live Debian Prometheus and Alertmanager (loopback only)."""

from __future__ import annotations

import pytest

from kured.alerts import PrometheusBlocker, active_alerts, active_silences
from tests.conftest import Alertmanager

pytestmark = pytest.mark.integration


async def test_silences_are_read_as_alertmanager_serves_them(alertmanager: Alertmanager) -> None:
    assert await active_silences(alertmanager.url, 5) == []
    ident = alertmanager.silence(alertname="AlwaysFiring", severity="page")
    (silence,) = await active_silences(alertmanager.url, 5)
    assert silence.id == ident
    assert silence.covers({"alertname": "AlwaysFiring", "severity": "page"})
    assert not silence.covers({"alertname": "AlwaysFiring"})


async def test_silenced_live_alerts_stop_blocking(
    prometheus: str, alertmanager: Alertmanager
) -> None:
    both = {"alertmanager_url": alertmanager.url}
    assert await active_alerts(prometheus, None, False, False, 5, **both) == [
        "AlwaysFiring",
        "MaintenanceWindow",
        "SlowBurn",
    ]
    alertmanager.silence(alertname="AlwaysFiring")
    alertmanager.silence(alertname="SlowBurn")  # pending: Alertmanager never saw it
    assert await active_alerts(prometheus, None, False, False, 5, **both) == ["MaintenanceWindow"]
    alertmanager.silence(alertname="MaintenanceWindow")
    assert await PrometheusBlocker(prometheus, alertmanager_url=alertmanager.url).check() is None
