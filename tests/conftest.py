"""Real services for integration and e2e tests, on loopback only, stopped by their own PIDs.

``receiver`` is a webhook receiver (a threaded HTTP server) that records every POST.

``prometheus`` is Debian's server (``scripts/install-test-deps.sh``, run by ``make test``)
started from this fixture, never through its systemd unit, with rules that keep three
alerts active: one firing, one pending for an hour, one firing that filters exclude.

``alertmanager`` is Debian's ``prometheus-alertmanager``, started the same way for one test
(clustering off), so the silences a test creates die with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

RULES = """\
groups:
  - name: kured-integration
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        for: 0s
      - alert: SlowBurn
        expr: vector(1)
        for: 1h
      - alert: MaintenanceWindow
        expr: vector(1)
        for: 0s
"""

CONFIG = """\
global:
  evaluation_interval: 1s
rule_files:
  - {rules}
"""

EXPECTED_ALERTS = {
    ("AlwaysFiring", "firing"),
    ("SlowBurn", "pending"),
    ("MaintenanceWindow", "firing"),
}
STARTUP_TIMEOUT = 30.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: runs real local services (loopback only)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alerts_seen(url: str) -> set[tuple[str, str]]:
    try:
        response = httpx2.get(f"{url}/api/v1/query", params={"query": "ALERTS"}, timeout=2)
        result = response.json()["data"]["result"]
    except (httpx2.HTTPError, ValueError, KeyError):
        return set()
    return {(r["metric"]["alertname"], r["metric"]["alertstate"]) for r in result}


def _stop(pid: int, proc: subprocess.Popen[bytes]) -> None:
    os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running Prometheus whose ALERTS hold EXPECTED_ALERTS."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not installed: run scripts/install-test-deps.sh (make test does)"
        )
    work = tmp_path_factory.mktemp("prometheus")
    rules = work / "rules.yml"
    rules.write_text(RULES)
    config = work / "prometheus.yml"
    config.write_text(CONFIG.format(rules=rules))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    pid = proc.pid
    try:
        _wait_for_alerts(url, proc, log_path)
        yield url
    finally:
        _stop(pid, proc)


AM_CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


class Alertmanager:
    """A running Alertmanager: its base URL, and a way to silence alerts."""

    def __init__(self, url: str) -> None:
        self.url = url

    def silence(self, **labels: str) -> str:
        """An active silence (for a day) of alerts with these labels; returns its id."""
        now = time.time()
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in labels.items()
            ],
            "startsAt": _rfc3339(now),
            "endsAt": _rfc3339(now + 86400),
            "createdBy": "kured tests",
            "comment": "test silence",
        }
        response = httpx2.post(f"{self.url}/api/v2/silences", json=body, timeout=5)
        response.raise_for_status()
        silence_id: str = response.json()["silenceID"]
        return silence_id


def _rfc3339(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.fail(
            "prometheus-alertmanager is not installed: run scripts/install-test-deps.sh "
            "(make test does)"
        )
    config = tmp_path / "alertmanager.yml"
    config.write_text(AM_CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "alertmanager.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    pid = proc.pid
    try:
        _wait_for_ready(f"{url}/-/ready", proc, log_path)
        yield Alertmanager(url)
    finally:
        _stop(pid, proc)


def _wait_for_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            if httpx2.get(url, timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} not ready in {STARTUP_TIMEOUT:g}s: {log_path.read_text()[-2000:]}")


def _wait_for_alerts(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        if _alerts_seen(url) >= EXPECTED_ALERTS:
            return
        time.sleep(0.2)
    pytest.fail(
        f"prometheus produced no ALERTS in {STARTUP_TIMEOUT:g}s: {log_path.read_text()[-2000:]}"
    )


class Receiver(ThreadingHTTPServer):
    """Records (path, JSON body) of every POST."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, dict[str, Any]]] = []

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_promtool(*args: str, stdin: str = "") -> None:
    """Prometheus' own checker (Debian's prometheus package has it), which must agree."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run scripts/install-test-deps.sh (make test does)")
    result = subprocess.run([path, *args], input=stdin, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
