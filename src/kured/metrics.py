"""``/metrics`` and ``/healthz``: what kured exposes over HTTP.

:class:`Metrics` holds every metric the daemon publishes, in a registry of its own (so
tests and sandboxes can run several daemons in one process) that still carries the
``process_*`` series Go kured users get from Go's default registry.
New metrics are one line in ``Metrics.__init__`` plus a setter.

:class:`Health` is the liveness signal Go kured lacks: the agent loop calls
:meth:`Health.beat` as it goes and wraps slow external steps in
:meth:`Health.operation`; ``/healthz`` turns 503 when the loop stops beating or an
operation overruns its timeout, so a kubelet liveness probe can restart a wedged daemon.

The metrics are prometheus_client's, in the classic text format Go kured's promhttp serves
(or OpenMetrics to a scraper that asks for it). prometheus_client has no server for asyncio
(an ASGI app would need an ASGI server besides), so the two endpoints are a WSGI app served
the way its own ``start_wsgi_server`` serves one: the standard library's WSGI server, a
thread per request, on a daemon thread of its own. Both endpoints only read: the metrics
under prometheus_client's locks, the health signal by copying the loop's state.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

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

# Go's client library has no ``*_created`` series, and kured's dashboards and alerts use none.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The daemon's metrics for one node, in their own registry.

    Every family is labelled by ``node``; the attributes are the node's own
    series, so the agent sets them without repeating the label.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self.registry = registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)  # the process_* and python_* series
        self._reboot_required = Gauge(
            "kured_reboot_required",
            "OS requires reboot due to software updates.",
            ["node"],
            registry=registry,
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
        self._phase = Gauge(
            "kured_phase",
            "1 for the node's current activity.",
            ["node", "phase"],
            registry=registry,
        )
        self._reason = Gauge(
            "kured_reboot_reason",
            "1 for what asks for this node's reboot: sentinel or max-node-age.",
            ["node", "reason"],
            registry=registry,
        )
        self._blocked = Gauge(
            "kured_reboot_blocked",
            "1 while a reboot is blocked, by reason.",
            ["node", "reason"],
            registry=registry,
        )

    def _gauge(self, name: str, documentation: str) -> Gauge:
        """This node's series of a family labelled by ``node``, as all of kured's are."""
        return Gauge(name, documentation, ["node"], registry=self.registry).labels(self.node)

    def _counter(self, name: str, documentation: str) -> Counter:
        """A counter family (prometheus_client names it ``<name>_total``), this node's series."""
        return Counter(name, documentation, ["node"], registry=self.registry).labels(self.node)

    def _seconds(self, name: str, documentation: str) -> Histogram:
        family = Histogram(
            name, documentation, ["node"], registry=self.registry, buckets=SECONDS_BUCKETS
        )
        return family.labels(self.node)

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
        return generate_latest(self.registry)


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
        for op in list(self._operations.values()):  # a copy: /healthz asks from its thread
            if now - op.started > op.timeout:
                return f"{op.name} running for {now - op.started:.0f}s (timeout {op.timeout:g}s)"
        if self._operations:
            return None  # busy with a step that is still within its time
        idle = now - self._last_beat
        if idle > self.stuck_after:
            return f"main loop stuck: no progress for {idle:.0f}s (last stage: {self._stage})"
        return None


REQUEST_TIMEOUT_SECONDS = 10.0  # a client that sends nothing for this long is dropped
Answer = tuple[str, list[tuple[str, str]], bytes]  # status line, headers, body


class _QuietHandler(WSGIRequestHandler):
    """One request per connection, bounded in time, without a log line for each scrape."""

    timeout = REQUEST_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: object) -> None:  # the base class names it so
        pass


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` on ``host:port`` (``""`` = all interfaces)."""

    def __init__(self, metrics: Metrics, health: Health, host: str = "", port: int = 8080):
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._health = health
        self._host = host
        self.port = port
        self._server: ThreadingWSGIServer | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = server = _listen(self._host, self.port, self._app)
        self.port = server.server_port
        threading.Thread(target=server.serve_forever, name="kured-metrics", daemon=True).start()
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)  # waits for serve_forever to end
            self._server.server_close()
            self._server = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI app: routes, methods, and HEAD (which prometheus_client's app refuses)."""
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path not in {"/metrics", "/healthz"}:
            status, headers, body = _text("404 Not Found", "not found")
        elif method not in {"GET", "HEAD"}:
            status, headers, body = _text("405 Method Not Allowed", "method not allowed")
            headers.append(("Allow", "GET, HEAD"))
        elif path == "/metrics":
            return self._metrics(environ, start_response)
        elif (problem := self._health.problem()) is None:
            status, headers, body = _text("200 OK", "ok")
        else:
            status, headers, body = _text("503 Service Unavailable", problem)
        start_response(status, headers)
        return [b"" if method == "HEAD" else body]

    def _metrics(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = b"".join(self._metrics_app({**environ, "REQUEST_METHOD": "GET"}, start_response))
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]


def _text(status: str, text: str) -> Answer:
    return status, [("Content-Type", "text/plain; charset=utf-8")], f"{text}\n".encode()


def _listen(host: str, port: int, app: Callable[..., Iterable[bytes]]) -> ThreadingWSGIServer:
    """A WSGI server bound to ``host``; for ``""`` both IPv6 and IPv4, as Go's ``:port``
    (IPv4 alone on a kernel without IPv6)."""
    if host:
        return _bind(host, port, app)
    try:
        return _bind("::", port, app)
    except OSError:
        return _bind("0.0.0.0", port, app)


def _bind(address: str, port: int, app: Callable[..., Iterable[bytes]]) -> ThreadingWSGIServer:
    family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("Server", (ThreadingWSGIServer,), {"address_family": family})
    server: ThreadingWSGIServer = make_server(
        address, port, app, server_class=server_class, handler_class=_QuietHandler
    )
    return server
