"""The benchmark's arithmetic, apart from any I/O so that every rule is unit-tested.

A roll is measured from outside the daemons (:mod:`kured_testbed.rollwatch`): per node, when
it was cordoned, went NotReady, came back Ready with a new boot id, and was uncordoned. From
those this module derives the phases (drain, reboot, ready), the makespan and the physical
limit it is compared with, and the idle request rates (bench/README.md defines each figure).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kured_testbed.audit_check import timestamp
from kured_testbed.rollwatch import NodeTimeline

REQUEST_COUNTER = "apiserver_request_total"
HOUR = 3600.0
DERIVED = ("rounds", "limit", "strict_limit", "mean_limit", "ratio", "strict_ratio", "mean_ratio")


class IncompleteRoll(ValueError):
    """A node's reboot was not seen from start to end, so its phases are unknown."""


@dataclass(frozen=True)
class NodePhases:
    """One node's reboot as the cluster showed it, in seconds since the roll was triggered."""

    node: str
    cordon: float
    down: float
    up: float
    uncordon: float

    @property
    def drain(self) -> float:
        """Cordoned → NotReady: evictions, pods stopping, the reboot command."""
        return self.down - self.cordon

    @property
    def reboot(self) -> float:
        """NotReady → Ready with a new boot id: the machine's own time."""
        return self.up - self.down

    @property
    def ready(self) -> float:
        """Ready again → schedulable again: kured noticing the new boot and uncordoning."""
        return self.uncordon - self.up


def node_phases(timelines: dict[str, NodeTimeline], began: float) -> list[NodePhases]:
    """Every node's phases relative to `began` (the trigger), in the order they were cordoned."""
    phases = []
    for node, line in timelines.items():
        cordon, down, up, uncordon = line.cordoned, line.down, line.up, line.uncordoned
        if cordon is None or down is None or up is None or uncordon is None:
            steps = (cordon, down, up, uncordon)
            raise IncompleteRoll(f"{node}: cordon/down/up/uncordon seen as {steps}")
        phases.append(NodePhases(node, cordon - began, down - began, up - began, uncordon - began))
    return sorted(phases, key=lambda p: p.cordon)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), interpolating linearly between the closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def handoffs(phases: Sequence[NodePhases], concurrency: int) -> list[float]:
    """How long each lock slot stood idle between two nodes: the j-th uncordon frees the slot
    that the (concurrency + j)-th cordon takes (both in time order). This gap (the gate, the
    lock release, the next node noticing and starting) is kured's own overhead in a roll."""
    cordons = sorted(p.cordon for p in phases)
    uncordons = sorted(p.uncordon for p in phases)
    return [cordon - freed for cordon, freed in zip(cordons[concurrency:], uncordons, strict=False)]


@dataclass(frozen=True)
class RollFigures:
    """One roll against its physical limit (medians of the per-node phases)."""

    nodes: int
    concurrency: int
    makespan: float  # trigger → last uncordon
    first_cordon: float  # trigger → first cordon: detection
    drain: float
    reboot: float
    ready: float
    handoff: float  # median idle time of a lock slot between two nodes (0 when none)
    mean_cycle: float  # mean of drain + reboot + ready over the nodes
    most_cordoned: int  # the most nodes unschedulable at once, as the Node watch saw

    @property
    def rounds(self) -> int:
        return math.ceil(self.nodes / self.concurrency)

    @property
    def limit(self) -> float:
        """The issue's physical limit: ceil(N/c) × (drain + reboot + ready)."""
        return self.rounds * (self.drain + self.reboot + self.ready)

    @property
    def strict_limit(self) -> float:
        """ceil(N/c) × (drain + reboot): as if nodes were schedulable the moment they are up."""
        return self.rounds * (self.drain + self.reboot)

    @property
    def mean_limit(self) -> float:
        """ceil(N/c) × the mean cycle: unlike medians, counts the slow drains too (with c=1,
        the sum of every node's cycle), so its ratio is kured's coordination overhead alone."""
        return self.rounds * self.mean_cycle

    @property
    def ratio(self) -> float:
        return self.makespan / self.limit

    @property
    def mean_ratio(self) -> float:
        return self.makespan / self.mean_limit

    @property
    def strict_ratio(self) -> float:
        return self.makespan / self.strict_limit

    def to_json(self) -> dict[str, Any]:
        figures = {key: _round(value) for key, value in asdict(self).items()}
        return figures | {key: _round(getattr(self, key)) for key in DERIVED}


def roll_figures(phases: Sequence[NodePhases], concurrency: int, most_cordoned: int) -> RollFigures:
    gaps = handoffs(phases, concurrency)
    return RollFigures(
        nodes=len(phases),
        concurrency=concurrency,
        makespan=max(p.uncordon for p in phases),
        first_cordon=min(p.cordon for p in phases),
        drain=statistics.median(p.drain for p in phases),
        reboot=statistics.median(p.reboot for p in phases),
        ready=statistics.median(p.ready for p in phases),
        handoff=statistics.median(gaps) if gaps else 0.0,
        mean_cycle=statistics.mean(p.uncordon - p.cordon for p in phases),
        most_cordoned=most_cordoned,
    )


def phases_json(phases: Iterable[NodePhases]) -> list[dict[str, Any]]:
    return [{key: _round(value) for key, value in asdict(p).items()} for p in phases]


def distribution(samples: Sequence[float]) -> dict[str, Any]:
    """Median and p95 of samples (seconds), with the samples themselves."""
    return {
        "median": _round(statistics.median(samples)),
        "p95": _round(percentile(samples, 95)),
        "samples": [_round(s) for s in samples],
    }


def requests_total(metrics_text: str) -> float:
    """The sum of kube-apiserver's ``apiserver_request_total`` over all its series."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == REQUEST_COUNTER
    )


def audit_requests(
    events: Iterable[dict[str, Any]], user: str, start: float, end: float
) -> Counter[str]:
    """Requests by `user` received in [start, end) (Unix seconds), counted per "verb resource".

    A request has one audit event per stage (a watch: ResponseStarted and ResponseComplete),
    so requests are told apart by their auditID.
    """
    seen: dict[str, str] = {}
    for event in events:
        if (event.get("user") or {}).get("username") != user:
            continue
        if not start <= timestamp(event["requestReceivedTimestamp"]) < end:
            continue
        ref = event.get("objectRef") or {}
        what = "/".join(filter(None, (ref.get("resource"), ref.get("subresource"))))
        seen[event["auditID"]] = f"{event.get('verb', '?')} {what or event.get('requestURI')}"
    return Counter(seen.values())


def per_node_hour(requests: float, nodes: int, seconds: float) -> float:
    """A request count over a window, as requests per node per hour."""
    return requests / nodes / (seconds / HOUR)


def _round(value: float) -> float:
    return round(value, 3) if isinstance(value, float) else value


# --- the API server's own counters (the scale scenario) ----------------------------------------

WATCH_EVENTS_COUNTER = "apiserver_watch_events_total"
CPU_COUNTER = "process_cpu_seconds_total"
LOCK_KIND = "DaemonSet"  # the lock's home: the watch events every lock change sends


@dataclass(frozen=True)
class ApiCounters:
    """kube-apiserver's counters from its /metrics at one moment, or the change between two."""

    requests: float  # apiserver_request_total, every series
    watch_events: float  # apiserver_watch_events_total, every kind
    lock_watch_events: float  # apiserver_watch_events_total of kind DaemonSet
    cpu_seconds: float  # process_cpu_seconds_total: the API server's own CPU

    def __sub__(self, other: ApiCounters) -> ApiCounters:
        return ApiCounters(
            *(getattr(self, key) - getattr(other, key) for key in COUNTER_KEYS),
        )

    def scaled(self, factor: float) -> ApiCounters:
        return ApiCounters(*(getattr(self, key) * factor for key in COUNTER_KEYS))

    def per(self, count: float) -> dict[str, float]:
        """Each counter divided by count (rounded for the report)."""
        return {key: round(getattr(self, key) / count, 3) for key in COUNTER_KEYS}


COUNTER_KEYS = ("requests", "watch_events", "lock_watch_events", "cpu_seconds")


def api_counters(metrics_text: str) -> ApiCounters:
    """The counters :class:`ApiCounters` holds, from kube-apiserver's /metrics text."""
    requests = watch_events = lock_watch_events = cpu = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == REQUEST_COUNTER:
                requests += sample.value
            elif sample.name == WATCH_EVENTS_COUNTER:
                watch_events += sample.value
                if sample.labels.get("kind") == LOCK_KIND:
                    lock_watch_events += sample.value
            elif sample.name == CPU_COUNTER:
                cpu += sample.value
    return ApiCounters(requests, watch_events, lock_watch_events, cpu)


@dataclass(frozen=True)
class Window:
    """What the counters moved by over a window of `seconds`."""

    moved: ApiCounters
    seconds: float

    def above(self, baseline: Window) -> ApiCounters:
        """The movement minus what the baseline window's rate accounts for over this window:
        the controllers', the scheduler's and the simulated kubelets' share, which the
        counters (no user label) cannot tell apart from kured's."""
        return self.moved - baseline.moved.scaled(self.seconds / baseline.seconds)


def growth(by_nodes: dict[int, float]) -> float | None:
    """The figure at the largest fleet over the figure at the smallest (None: fewer than two
    sizes, or zero at the smallest)."""
    if len(by_nodes) < 2 or not by_nodes[min(by_nodes)]:
        return None
    return round(by_nodes[max(by_nodes)] / by_nodes[min(by_nodes)], 3)
