"""Counters, gauges and histograms, rendered in Prometheus' text format (version 0.0.4).

kured's metrics are a dozen labelled series that one event loop updates, scraped over
the daemon's own small HTTP server. ``prometheus_client`` was 1.35 MiB of each daemon's
RSS for that (its package imports http.server, wsgiref, html.entities and urllib's client
to offer servers and pushers kured does not use; bench/README.md, ``rss_mib``), so this
module does the part kured needs: labelled families, cumulative histogram buckets, and the
``process_*`` series every Prometheus client library (Go kured's too) exposes, plus the
``python_*`` ones of Python's clients.

Single-threaded by design: every update happens on the daemon's event loop.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels, float]  # name suffix, extra labels, value


class Gauge:
    """A value that goes up and down."""

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def set_to_current_time(self) -> None:
        self.value = time.time()

    def samples(self) -> Iterator[Sample]:
        yield "", (), self.value


class Counter:
    """A count that only goes up (from 0 at the process's start)."""

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"a counter only goes up, not by {amount}")
        self.value += amount

    def samples(self) -> Iterator[Sample]:
        yield "", (), self.value


class Histogram:
    """Observations counted into buckets by upper bound (the last bound is +Inf)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if not bounds or bounds[-1] != float("inf") or list(bounds) != sorted(bounds):
            raise ValueError(f"bucket bounds must rise to +Inf, got {bounds}")
        self._bounds = tuple(bounds)
        self._counts = [0] * len(bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe how long the block took (also when it raises)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.observe(time.monotonic() - started)

    def samples(self) -> Iterator[Sample]:
        cumulative = 0
        for bound, count in zip(self._bounds, self._counts, strict=True):
            cumulative += count
            yield "_bucket", (("le", _number(bound)),), cumulative
        yield "_count", (), cumulative
        yield "_sum", (), self._sum


S = TypeVar("S", Gauge, Counter, Histogram)


class Family(Generic[S]):
    """A metric name with its help and type, and one series per combination of label values."""

    def __init__(
        self,
        name: str,
        documentation: str,
        kind: str,
        label_names: Sequence[str],
        new_series: Callable[[], S],
    ) -> None:
        self.name, self.documentation, self.kind = name, documentation, kind
        self._label_names = tuple(label_names)
        self._new_series: Callable[[], S] = new_series
        self._series: dict[tuple[str, ...], S] = {}

    def labels(self, **values: str) -> S:
        """The series for these label values (every label named), made at first use."""
        if set(values) != set(self._label_names):
            raise ValueError(f"{self.name} takes labels {self._label_names}, got {tuple(values)}")
        key = tuple(values[name] for name in self._label_names)
        if (series := self._series.get(key)) is None:
            series = self._series[key] = self._new_series()
        return series

    def samples(self) -> Iterator[Sample]:
        for key, series in self._series.items():
            labels = tuple(zip(self._label_names, key, strict=True))
            for suffix, extra, value in series.samples():
                yield suffix, labels + extra, value


class Registry:
    """The families one daemon (or one simulated node) exposes, in the order made."""

    def __init__(self) -> None:
        self._families: list[Family[Gauge] | Family[Counter] | Family[Histogram]] = []

    def gauge(self, name: str, documentation: str, labels: Sequence[str]) -> Family[Gauge]:
        family = Family(name, documentation, "gauge", labels, Gauge)
        self._families.append(family)
        return family

    def counter(self, name: str, documentation: str, labels: Sequence[str]) -> Family[Counter]:
        """A counter family; its name gets the ``_total`` suffix, as client libraries do."""
        family = Family(f"{name}_total", documentation, "counter", labels, Counter)
        self._families.append(family)
        return family

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str], bounds: Sequence[float]
    ) -> Family[Histogram]:
        family = Family(name, documentation, "histogram", labels, lambda: Histogram(bounds))
        self._families.append(family)
        return family

    def render(self) -> bytes:
        """Every family in the text format, then the process and Python runtime series."""
        parts = [_render(f.name, f.documentation, f.kind, f.samples()) for f in self._families]
        parts += [_render(*family) for family in runtime_families()]
        return "".join(parts).encode()


def runtime_families() -> Iterator[tuple[str, str, str, Iterable[Sample]]]:
    """(name, help, type, samples) of the process (from /proc, on Linux) and Python runtime."""
    version = sys.version_info
    info = (
        ("implementation", sys.implementation.name),
        ("major", str(version.major)),
        ("minor", str(version.minor)),
        ("patchlevel", str(version.micro)),
        ("version", f"{version.major}.{version.minor}.{version.micro}"),
    )
    yield "python_info", "Python platform information", "gauge", [("", info, 1.0)]
    stats = gc.get_stats()
    for key, name, documentation in (
        ("collected", "python_gc_objects_collected_total", "Objects collected during gc"),
        ("uncollectable", "python_gc_objects_uncollectable_total", "Uncollectable objects found"),
        ("collections", "python_gc_collections_total", "Times this generation was collected"),
    ):
        samples = [("", (("generation", str(g)),), float(s[key])) for g, s in enumerate(stats)]
        yield name, documentation, "counter", samples
    yield from _process_families()


def _process_families() -> Iterator[tuple[str, str, str, Iterable[Sample]]]:
    try:
        with open("/proc/self/stat", "rb") as stat_file:
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = stat_file.read().rpartition(b")")[2].split()
        boot_time = _boot_time()
        open_fds = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        return  # not Linux, or no /proc: no process series, as in other client libraries
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    for name, documentation, kind, value in (
        ("process_cpu_seconds_total", "Total user and system CPU time in seconds.", "counter", cpu),
        ("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", int(fields[20])),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            int(fields[21]) * page,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            boot_time + int(fields[19]) / ticks,
        ),
        ("process_open_fds", "Number of open file descriptors.", "gauge", open_fds),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        ),
    ):
        yield name, documentation, kind, [("", (), float(value))]


def _boot_time() -> float:
    with open("/proc/stat", "rb") as stat_file:
        for line in stat_file:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def _render(name: str, documentation: str, kind: str, samples: Iterable[Sample]) -> str:
    help_text = documentation.replace("\\", "\\\\").replace("\n", "\\n")
    lines = [f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"]
    for suffix, labels, value in samples:
        if labels:
            pairs = ",".join(f'{key}="{_escape(text)}"' for key, text in labels)
            lines.append(f"{name}{suffix}{{{pairs}}} {_number(value)}\n")
        else:
            lines.append(f"{name}{suffix} {_number(value)}\n")
    return "".join(lines)


def _escape(label_value: str) -> str:
    return label_value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Python's shortest round-trip form (``1.0``, ``1.5e-07``), which Prometheus parses;
    infinities and NaN as the format spells them."""
    if value != value:  # noqa: PLR0124  # NaN is the one value unequal to itself
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
