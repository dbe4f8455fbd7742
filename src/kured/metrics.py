"""``/metrics`` and ``/healthz``: what kured exposes over HTTP.

:class:`Metrics` holds every metric the daemon publishes, in a registry of its own (so
tests and sandboxes can run several daemons in one process) that still carries the
``process_*`` series Go kured users get from Go's default registry.
New metrics are one line in ``Metrics.__init__`` plus a setter.

:class:`Health` is the liveness signal Go kured lacks: the agent loop calls
:meth:`Health.beat` as it goes and wraps slow external steps in
:meth:`Health.operation`; ``/healthz`` turns 503 when the loop stops beating or an
operation overruns its timeout, so a kubelet liveness probe can restart a wedged daemon.

The metrics themselves are :mod:`kured.promtext`'s (why not ``prometheus_client``: there).
The HTTP server is a few dozen lines of asyncio rather than a framework: two read-only
endpoints do not justify a dependency, and it runs on the daemon's own event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

from kured.promtext import CONTENT_TYPE, Counter, Gauge, Histogram, Registry

log = logging.getLogger(__name__)

ACTIVITIES = (
    "idle",
    "waiting-for-window",
    "blocked",
    "paused",
    "waiting-for-lock",
    "draining",
    "rebooting",
    "gate",
    "reboot-loop",
    "dry-run",
)
REBOOT_REASONS = ("sentinel", "max-node-age")
BLOCK_KINDS = ("prometheus", "pods", "query", "pause", "reboot-loop", "max-unavailable")
SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))


class Metrics:
    """The daemon's metrics for one node, in their own registry.

    Every family is labelled by ``node``; the attributes are the node's own
    series, so the agent sets them without repeating the label.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self.registry = registry = Registry()
        self._reboot_required = registry.gauge(
            "kured_reboot_required", "OS requires reboot due to software updates.", ["node"]
        )
        self.lock_held = self._gauge("kured_lock_held", "1 while this node holds the lock.")
        self.window_open = self._gauge(
            "kured_window_open", "1 while the maintenance window is open."
        )
        self.reboots = self._counter("kured_reboots", "Reboots completed by kured.")
        self.last_reboot = self._gauge(
            "kured_last_successful_reboot_timestamp_seconds",
            "When this node last came back healthy from a kured reboot (Unix time).",
        )
        self.reboot_loop = self._gauge(
            "kured_reboot_loop", "1 while the reboot-loop guard holds this node."
        )
        self.gate_timeouts = self._counter(
            "kured_gate_timeout", "Post-reboot health gates that timed out."
        )
        self.errors = self._counter("kured_errors", "Evaluations that failed and were retried.")
        self.stale_locks = self._counter(
            "kured_stale_locks_reclaimed", "Stale lock holders released by this node."
        )
        self.drain_duration = self._seconds(
            "kured_drain_duration_seconds", "Time to cordon and drain the node."
        )
        self.lock_latency = self._seconds(
            "kured_lock_acquire_latency_seconds",
            "From needing a reboot (window open, not blocked) to holding the lock.",
        )
        self._phase = registry.gauge(
            "kured_phase", "1 for the node's current activity.", ["node", "phase"]
        )
        self._reason = registry.gauge(
            "kured_reboot_reason",
            "1 for what asks for this node's reboot: sentinel or max-node-age.",
            ["node", "reason"],
        )
        self._blocked = registry.gauge(
            "kured_reboot_blocked", "1 while a reboot is blocked, by reason.", ["node", "reason"]
        )

    def _gauge(self, name: str, documentation: str) -> Gauge:
        """This node's series of a family labelled by ``node``, as all of kured's are."""
        return self.registry.gauge(name, documentation, ["node"]).labels(node=self.node)

    def _counter(self, name: str, documentation: str) -> Counter:
        return self.registry.counter(name, documentation, ["node"]).labels(node=self.node)

    def _seconds(self, name: str, documentation: str) -> Histogram:
        family = self.registry.histogram(name, documentation, ["node"], SECONDS_BUCKETS)
        return family.labels(node=self.node)

    def set_reboot_required(self, required: bool) -> None:
        """Go kured's only metric: 1 while the sentinel says a reboot is needed.

        Like Go kured, the series appears at the first check, not at start-up, so a
        scrape never reports a "0" nobody has measured.
        """
        self._reboot_required.labels(node=self.node).set(1 if required else 0)

    def set_reboot_reason(self, kind: str) -> None:
        """``kind`` is one of :data:`REBOOT_REASONS`, or "" when no reboot is needed."""
        for name in REBOOT_REASONS:
            self._reason.labels(node=self.node, reason=name).set(1 if name == kind else 0)

    def set_activity(self, activity: str) -> None:
        for name in ACTIVITIES:
            self._phase.labels(node=self.node, phase=name).set(1 if name == activity else 0)

    def set_blocked(self, kind: str) -> None:
        """``kind`` is one of :data:`BLOCK_KINDS`, or "" when nothing blocks."""
        for name in BLOCK_KINDS:
            self._blocked.labels(node=self.node, reason=name).set(1 if name == kind else 0)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return self.registry.render()


@dataclass
class _Operation:
    name: str
    started: float
    timeout: float


class Health:
    """Is the agent loop still making progress?

    Unhealthy when no :meth:`beat` arrived within ``stuck_after`` seconds (outside any
    operation), or while an operation registered with :meth:`operation` runs past its own
    timeout. A daemon that
    sleeps for a long ``--period`` must keep beating while it waits.
    """

    def __init__(self, stuck_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stuck_after = stuck_after
        self._clock = clock
        self._last_beat = clock()
        self._stage = "starting"
        self._operations: dict[int, _Operation] = {}
        self._ids = itertools.count()

    def beat(self, stage: str) -> None:
        """Record progress; ``stage`` names where the loop is, for the 503 reason."""
        self._last_beat = self._clock()
        self._stage = stage

    @contextmanager
    def operation(self, name: str, timeout: float) -> Iterator[None]:
        """Mark a step that may legitimately take up to ``timeout`` seconds."""
        key = next(self._ids)
        self._operations[key] = _Operation(name, self._clock(), timeout)
        try:
            yield
        finally:
            del self._operations[key]

    def problem(self) -> str | None:
        """Why the daemon is unhealthy, or None when it is fine."""
        now = self._clock()
        for op in self._operations.values():
            if now - op.started > op.timeout:
                return f"{op.name} running for {now - op.started:.0f}s (timeout {op.timeout:g}s)"
        if self._operations:
            return None  # busy with a step that is still within its time
        idle = now - self._last_beat
        if idle > self.stuck_after:
            return f"main loop stuck: no progress for {idle:.0f}s (last stage: {self._stage})"
        return None


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_REQUEST_TIMEOUT = 10.0  # seconds a client gets to send its request head
_MAX_HEADER_LINES = 100


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` on ``host:port`` (``""`` = all interfaces)."""

    def __init__(self, metrics: Metrics, health: Health, host: str = "", port: int = 8080):
        self._metrics = metrics
        self._health = health
        self._host = host or None
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, self._host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        if method not in {"GET", "HEAD"}:
            return 405, "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE, self._metrics.exposition()
        if path == "/healthz":
            problem = self._health.problem()
            if problem is None:
                return 200, "text/plain", b"ok\n"
            return 503, "text/plain", f"{problem}\n".encode()
        return 404, "text/plain", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                method, path = await _read_request_head(reader)
            status, content_type, body = self._respond(method, path)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                + ("Allow: GET, HEAD\r\n" if status == 405 else "")
                + "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError) as err:
            log.debug("metrics: dropped a request: %r", err)
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """(method, path) of an HTTP/1.x request; headers are read and ignored."""
    request_line = (await reader.readline()).decode("latin-1").split()
    if len(request_line) != 3:
        raise ValueError(f"bad request line {request_line!r}")
    for _ in range(_MAX_HEADER_LINES):
        if (await reader.readline()).strip() == b"":
            return request_line[0].upper(), urlsplit(request_line[1]).path
    raise ValueError("too many header lines")
