"""Metrics content, the health signal, and the HTTP endpoints over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest

from kured.metrics import Health, Metrics, MetricsServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reboot_required_gauge_matches_go_kured() -> None:
    metrics = Metrics("n1")
    assert b"kured_reboot_required{" not in metrics.exposition()
    metrics.set_reboot_required(True)
    text = metrics.exposition().decode()
    assert "# HELP kured_reboot_required OS requires reboot due to software updates." in text
    assert "# TYPE kured_reboot_required gauge" in text
    assert 'kured_reboot_required{node="n1"} 1.0' in text
    metrics.set_reboot_required(False)
    assert 'kured_reboot_required{node="n1"} 0.0' in metrics.exposition().decode()


def test_reboot_reason_gauge_names_the_cause() -> None:
    metrics = Metrics("n1")
    metrics.set_reboot_reason("max-node-age")
    text = metrics.exposition().decode()
    assert 'kured_reboot_reason{node="n1",reason="max-node-age"} 1.0' in text
    assert 'kured_reboot_reason{node="n1",reason="sentinel"} 0.0' in text
    metrics.set_reboot_reason("")
    assert 'reason="max-node-age"} 0.0' in metrics.exposition().decode()


def test_registries_are_per_instance_and_keep_process_metrics() -> None:
    first, second = Metrics("a"), Metrics("b")
    first.set_reboot_required(True)
    assert b'node="a"' not in second.exposition()
    assert b"python_info" in second.exposition()
    assert b"process_" in first.exposition()  # Linux: the process collector reads /proc


def test_health_beats_and_stalls() -> None:
    clock = FakeClock()
    health = Health(stuck_after=60, clock=clock)
    assert health.problem() is None
    clock.now += 61
    assert health.problem() == "main loop stuck: no progress for 61s (last stage: starting)"
    health.beat("sleep")
    assert health.problem() is None
    clock.now += 90
    assert health.problem() == "main loop stuck: no progress for 90s (last stage: sleep)"


def test_health_operation_overrun() -> None:
    clock = FakeClock()
    health = Health(stuck_after=600, clock=clock)
    with health.operation("sentinel-command", timeout=30):
        clock.now += 30
        assert health.problem() is None
        clock.now += 15
        assert health.problem() == "sentinel-command running for 45s (timeout 30s)"
    assert health.problem() is None


def test_health_operations_nest_and_raise() -> None:
    clock = FakeClock()
    health = Health(stuck_after=600, clock=clock)
    with pytest.raises(RuntimeError), health.operation("drain", 300):
        with health.operation("drain", 5):
            clock.now += 10
            assert health.problem() == "drain running for 10s (timeout 5s)"
        assert health.problem() is None
        raise RuntimeError
    clock.now += 400  # the outer drain's 300s would have overrun had it stayed registered
    assert health.problem() is None


@pytest.fixture
async def served() -> AsyncIterator[tuple[Metrics, Health, FakeClock, str]]:
    clock = FakeClock()
    metrics, health = Metrics("n1"), Health(stuck_after=60, clock=clock)
    async with MetricsServer(metrics, health, "127.0.0.1", 0) as server:
        yield metrics, health, clock, f"http://127.0.0.1:{server.port}"


async def test_http_metrics(served: tuple[Metrics, Health, FakeClock, str]) -> None:
    metrics, _, _, base = served
    metrics.set_reboot_required(True)
    async with httpx2.AsyncClient() as client:
        response = await client.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert 'kured_reboot_required{node="n1"} 1.0' in response.text


async def test_http_healthz_flips(served: tuple[Metrics, Health, FakeClock, str]) -> None:
    _, health, clock, base = served
    async with httpx2.AsyncClient() as client:
        ok = await client.get(f"{base}/healthz")
        assert (ok.status_code, ok.text) == (200, "ok\n")
        clock.now += 120
        stuck = await client.get(f"{base}/healthz")
        assert stuck.status_code == 503
        assert "main loop stuck" in stuck.text
        health.beat("lock")
        assert (await client.get(f"{base}/healthz")).status_code == 200


async def test_http_other_requests(served: tuple[Metrics, Health, FakeClock, str]) -> None:
    base = served[3]
    async with httpx2.AsyncClient() as client:
        assert (await client.get(f"{base}/nope")).status_code == 404
        refused = await client.post(f"{base}/metrics")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
        head = await client.head(f"{base}/metrics?x=1")
        assert head.status_code == 200
        assert head.content == b""


async def test_garbage_and_silent_clients_do_not_hurt(
    served: tuple[Metrics, Health, FakeClock, str],
) -> None:
    port = int(served[3].rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NONSENSE\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # to the end: the server hangs up
    assert b"400" in answer and b"kured" not in answer
    writer.close()
    async with httpx2.AsyncClient() as client:
        assert (await client.get(f"{served[3]}/healthz")).status_code == 200


def test_a_long_step_within_its_time_is_not_stuck() -> None:
    clock = FakeClock()
    health = Health(stuck_after=60, clock=clock)
    with health.operation("drain", timeout=3600):
        clock.now += 600
        assert health.problem() is None
    assert health.problem() == "main loop stuck: no progress for 600s (last stage: starting)"
