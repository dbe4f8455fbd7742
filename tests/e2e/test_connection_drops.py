"""What users see of the HTTP layer, against the sandbox's real API server through a loopback
proxy that cuts connections (tests/cutproxy.py): requests share one kept-alive connection;
a write whose answer is lost is not sent again (the server acted once), a read is; a watch
cut short ends with an error its caller can watch again on, and the new watch sees changes.
TLS is verified against the cluster's CA: a daemon given the wrong CA says so in one line,
without a traceback; and no bearer token or notification secret reaches its output."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
import yaml
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Node
from lightkube.types import PatchType

from kured.kube import Kube, load_config
from kured_testbed.controlplane import ControlPlane
from tests.cutproxy import CutProxy, cut_proxy

pytestmark = pytest.mark.e2e

NODE = "cut-proxy-node"
NOTIFY_SECRET = "n0tify5ecretXYZ"
SLACK_SECRET = "sl4ckHookSecretQRS"
SECRET_FLAGS = [
    f"--notify-url=generic+http://kured:{NOTIFY_SECRET}@127.0.0.1:9/hook",
    f"--slack-hook-url=https://hooks.slack.com/services/T000/B000/{SLACK_SECRET}",
]


def kubeconfig(plane: ControlPlane, path: Path, server: str, ca_pem: bytes | None = None) -> Path:
    """The admin kubeconfig, pointed at ``server`` (and trusting ``ca_pem`` if given)."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    cluster["server"] = server
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def node(kube: AsyncClient) -> AsyncIterator[str]:
    await kube.create(Node(metadata=ObjectMeta(name=NODE)))
    try:
        yield NODE
    finally:
        await kube.delete(Node, NODE)


@pytest.fixture
async def proxied(
    control_plane: ControlPlane, tmp_path: Path, node: str
) -> AsyncIterator[tuple[CutProxy, Kube]]:
    target = urlsplit(control_plane.server)
    assert target.hostname and target.port
    async with cut_proxy(target.hostname, target.port) as proxy:
        path = kubeconfig(control_plane, tmp_path / "kubeconfig", f"https://127.0.0.1:{proxy.port}")
        async with Kube(load_config(str(path))) as client:
            yield proxy, client


async def test_requests_share_one_kept_alive_connection(proxied: tuple[CutProxy, Kube]) -> None:
    proxy, client = proxied
    assert await client.get_node(NODE) is not None  # lightkube's requests
    await client.list_pods(node=NODE)  # kured's own on the same pool
    await asyncio.sleep(1)
    assert await client.get_node(NODE) is not None
    assert proxy.connections == 1


async def test_a_write_whose_answer_is_lost_is_not_sent_again(
    proxied: tuple[CutProxy, Kube], kube: AsyncClient
) -> None:
    proxy, client = proxied
    node = await client.get_node(NODE)  # a kept connection, its TLS handshake long over
    assert node is not None
    proxy.cut_next_answer = True
    with pytest.raises(httpx2.TransportError):
        await client.create_node_event(node, "CutProxyTest", "answer lost")
    assert proxy.connections == 1  # not sent again on a new connection
    events = [e async for e in kube.list(Event, namespace="default")]
    assert [e.message for e in events if e.reason == "CutProxyTest"] == ["answer lost"]

    assert await client.get_node(NODE) is not None  # on a new connection, kept
    proxy.cut_next_answer = True
    assert await client.get_node(NODE) is not None  # a read is sent again, and answered
    assert proxy.connections == 3


async def test_a_cut_watch_ends_and_a_new_one_sees_changes(
    proxied: tuple[CutProxy, Kube], kube: AsyncClient
) -> None:
    proxy, client = proxied
    first = aiter(client.watch_node(NODE))
    assert (await asyncio.wait_for(anext(first), 30))[0] == "ADDED"
    proxy.cut_all()
    with pytest.raises(httpx2.TransportError):
        await asyncio.wait_for(anext(first), 30)  # an error, not a hang

    again = aiter(client.watch_node(NODE))
    assert (await asyncio.wait_for(anext(again), 30))[0] == "ADDED"
    patch = {"metadata": {"labels": {"cut": "over"}}}
    await kube.patch(Node, NODE, patch, patch_type=PatchType.MERGE)
    kind, changed = await asyncio.wait_for(anext(again), 30)
    assert kind == "MODIFIED" and changed.metadata and changed.metadata.labels == {"cut": "over"}
    assert proxy.connections >= 2


def run_daemon_until(
    path: Path, tmp_path: Path, expected: str, flags: list[str], linger: float = 0
) -> str:
    """Run the kured script until its output has ``expected`` and ``linger`` seconds more
    (or until it exits); its output."""
    argv = [str(Path(sys.executable).parent / "kured"), "--node-id", NODE]
    argv += ["--kubeconfig", str(path), "--reboot-sentinel", str(tmp_path / "reboot-required")]
    argv += ["--metrics-port", "0", "--period", "1m", *flags]
    out = tmp_path / "daemon.log"
    with out.open("w") as sink:
        daemon = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while expected not in out.read_text() and daemon.poll() is None:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.2)
            time.sleep(linger)
        finally:
            if daemon.poll() is None:
                os.kill(daemon.pid, signal.SIGTERM)
            daemon.wait(30)
    return out.read_text()


def other_ca(tmp_path: Path) -> bytes:
    """A CA that did not sign the API server's certificate."""
    key, cert = tmp_path / "ca.key", tmp_path / "ca.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    request += ["-subj", "/CN=not-the-cluster-ca"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(["openssl", *request, *files], check=True, capture_output=True)
    return cert.read_bytes()


def tokens(plane: ControlPlane) -> list[str]:
    """Every user's bearer token (the API server's --token-auth-file: token,user,uid,...)."""
    lines = (plane.state.root / "tokens.csv").read_text().splitlines()
    return [line.split(",")[0] for line in lines if line.strip()]


def assert_no_secrets(output: str, plane: ControlPlane) -> None:
    for secret in (*tokens(plane), NOTIFY_SECRET, SLACK_SECRET):
        assert secret not in output


def test_no_secret_in_any_log_of_the_session(control_plane: ControlPlane) -> None:
    """Every log the sandbox keeps (the control plane's, each fleet's supervisor and its
    daemons') as the session's tests so far left them."""
    logs = [p for p in control_plane.state.root.rglob("*.log") if p.is_file()]
    assert logs
    for log in logs:
        assert_no_secrets(log.read_text(errors="replace"), control_plane)


def test_the_wrong_ca_is_one_clear_line(
    control_plane: ControlPlane, tmp_path: Path, node: str
) -> None:
    path = kubeconfig(control_plane, tmp_path / "kc", control_plane.server, other_ca(tmp_path))
    slack_alone = SECRET_FLAGS[1:]  # deprecated: its warning names the flag, not the URL
    output = run_daemon_until(path, tmp_path, "certificate verify failed", slack_alone)
    lines = [line for line in output.splitlines() if "certificate verify failed" in line]
    assert lines, output
    assert "Traceback" not in output and 'File "' not in output
    assert all("CERTIFICATE_VERIFY_FAILED" in line for line in lines)
    assert_no_secrets(output, control_plane)

    kuredctl = str(Path(sys.executable).parent / "kuredctl")
    argv = [kuredctl, "--kubeconfig", str(path), "status"]
    ctl = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert ctl.returncode == 1 and ctl.stdout == ""
    assert len(ctl.stderr.splitlines()) == 1 and "certificate verify failed" in ctl.stderr
    assert_no_secrets(ctl.stderr, control_plane)


async def test_no_secret_in_a_daemon_output_through_cut_connections(
    control_plane: ControlPlane, tmp_path: Path, node: str
) -> None:
    """The daemon runs through the proxy, which cuts its connections every second; what it
    logs on the way (start-up, errors, reconnects) carries no token and no notify secret."""
    target = urlsplit(control_plane.server)
    assert target.hostname and target.port
    async with cut_proxy(target.hostname, target.port) as proxy:
        path = kubeconfig(control_plane, tmp_path / "kc", f"https://127.0.0.1:{proxy.port}")
        daemon = asyncio.create_task(
            asyncio.to_thread(run_daemon_until, path, tmp_path, "Serving", SECRET_FLAGS, 8)
        )
        while not daemon.done():
            await asyncio.sleep(1)
            proxy.cut_all()
        output = await daemon
    assert proxy.connections >= 2, output
    assert_no_secrets(output, control_plane)
