"""Notifications delivered through apprise to a webhook receiver on loopback."""

from __future__ import annotations

import logging
import time

import pytest

from kured.notify import Notifier, Templates, validate_notify_url
from tests.conftest import Receiver

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("generic://127.0.0.1:{port}/hook?disabletls=yes", "/hook"),
        ("generic+http://127.0.0.1:{port}/hook?team=ops", "/hook?team=ops"),
        ("json://127.0.0.1:{port}/native/path", "/native/path"),
    ],
)
async def test_templated_text_arrives(receiver: Receiver, url: str, path: str) -> None:
    notify_url = validate_notify_url(url.format(port=receiver.port))
    notifier = Notifier(notify_url, Templates(reboot="Rebooting %s now"), timeout=10)
    assert await notifier.notify("reboot", "node-7") is True
    assert await notifier.notify("uncordon", "node-7") is True
    assert [(p, body["message"]) for p, body in receiver.received] == [
        (path, "Rebooting node-7 now"),
        (path, "Node node-7 rebooted & uncordoned successfully!"),
    ]


async def test_closed_port_warns_without_raising(
    caplog: pytest.LogCaptureFixture, unused_tcp_port: int
) -> None:
    notifier = Notifier(f"generic+http://127.0.0.1:{unused_tcp_port}/hook", timeout=10)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kured.notify"):
        assert await notifier.notify("drain", "n1") is False
    assert time.monotonic() - started < 10
    assert "Error notifying: drain notification was not delivered" in caplog.text
