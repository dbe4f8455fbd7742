"""The text format kured's /metrics speaks: buckets, labels, escaping, and what
Prometheus' own checker says about a whole exposition."""

from __future__ import annotations

import os

import pytest

from kured.metrics import Metrics
from kured.promtext import Histogram, Registry
from tests.conftest import run_promtool


def test_a_full_exposition_passes_promtool() -> None:
    metrics = Metrics("n1")
    metrics.set_reboot_required(True)
    metrics.set_activity("draining")
    metrics.set_blocked("pods")
    metrics.reboots.inc()
    metrics.drain_duration.observe(7)
    metrics.last_reboot.set_to_current_time()
    run_promtool("check", "metrics", stdin=metrics.exposition().decode())


def test_buckets_are_cumulative_and_a_bound_counts_in_its_own_bucket() -> None:
    histogram = Histogram((1, 5, float("inf")))
    for value in (0.5, 1, 3, 5, 100):
        histogram.observe(value)
    assert list(histogram.samples()) == [
        ("_bucket", (("le", "1.0"),), 2),
        ("_bucket", (("le", "5.0"),), 4),
        ("_bucket", (("le", "+Inf"),), 5),
        ("_count", (), 5),
        ("_sum", (), 109.5),
    ]


def test_histogram_time_observes_a_block_that_raises() -> None:
    histogram = Histogram((60, float("inf")))
    with pytest.raises(RuntimeError), histogram.time():
        raise RuntimeError
    assert ("_count", (), 1) in list(histogram.samples())


@pytest.mark.parametrize("bounds", [(), (1, 5), (5, 1, float("inf"))])
def test_histogram_bounds_must_rise_to_infinity(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="rise to"):
        Histogram(bounds)


def test_counters_get_total_and_never_go_down() -> None:
    registry = Registry()
    errors = registry.counter("x_errors", "Errors.", ["node"]).labels(node="a")
    errors.inc()
    errors.inc(2)
    with pytest.raises(ValueError, match="only goes up"):
        errors.inc(-1)
    text = registry.render().decode()
    assert '# TYPE x_errors_total counter\nx_errors_total{node="a"} 3.0\n' in text


def test_label_values_and_help_are_escaped() -> None:
    registry = Registry()
    family = registry.gauge("x_info", "Help with \\ and\na newline.", ["why"])
    family.labels(why='a "quoted" \\ path\n').set(1)
    text = registry.render().decode()
    assert "# HELP x_info Help with \\\\ and\\na newline.\n" in text
    assert 'x_info{why="a \\"quoted\\" \\\\ path\\n"} 1.0\n' in text


def test_every_label_is_needed() -> None:
    family = Registry().gauge("x_phase", "Phase.", ["node", "phase"])
    with pytest.raises(ValueError, match="takes labels"):
        family.labels(node="a")


def test_a_family_without_series_still_says_what_it_is() -> None:
    registry = Registry()
    registry.gauge("x_unset", "Not set yet.", ["node"])
    assert "# TYPE x_unset gauge\n# HELP" in registry.render().decode()


def test_process_series_read_this_process() -> None:
    lines = Registry().render().decode().splitlines()
    values = {
        line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("process_")
    }
    assert values["process_open_fds"] >= 3
    assert values["process_resident_memory_bytes"] > 1 << 20
    assert values["process_start_time_seconds"] > 1.6e9
    assert values["process_max_fds"] == float(os.sysconf("SC_OPEN_MAX"))
