"""The text format kured's /metrics speaks (prometheus_client's): buckets, labels, escaping,
the runtime series, and what Prometheus' own checker says about a whole exposition."""

from __future__ import annotations

import os

import pytest

from kured.metrics import Metrics
from tests.conftest import run_promtool


def exposed(metrics: Metrics) -> str:
    return metrics.exposition().decode()


def test_a_full_exposition_passes_promtool() -> None:
    metrics = Metrics("n1")
    metrics.set_reboot_required(True)
    metrics.set_activity("draining")
    metrics.set_blocked("pods")
    metrics.reboots.inc()
    metrics.drain_duration.observe(7)
    metrics.last_reboot.set_to_current_time()
    run_promtool("check", "metrics", stdin=exposed(metrics))


def test_buckets_are_cumulative_and_a_bound_counts_in_its_own_bucket() -> None:
    metrics = Metrics("n1")
    for value in (0.5, 1, 3, 5, 100):
        metrics.drain_duration.observe(value)
    text = exposed(metrics)
    for bound, count in (("1.0", 2), ("5.0", 4), ("60.0", 4), ("120.0", 5), ("+Inf", 5)):
        assert f'kured_drain_duration_seconds_bucket{{le="{bound}",node="n1"}} {count}.0' in text
    assert 'kured_drain_duration_seconds_count{node="n1"} 5.0' in text
    assert 'kured_drain_duration_seconds_sum{node="n1"} 109.5' in text


def test_histogram_time_observes_a_block_that_raises() -> None:
    metrics = Metrics("n1")
    with pytest.raises(RuntimeError), metrics.drain_duration.time():
        raise RuntimeError
    assert 'kured_drain_duration_seconds_count{node="n1"} 1.0' in exposed(metrics)


def test_counters_get_total_and_never_go_down() -> None:
    metrics = Metrics("a")
    metrics.errors.inc()
    metrics.errors.inc(2)
    with pytest.raises(ValueError, match="non-negative"):
        metrics.errors.inc(-1)
    text = exposed(metrics)
    assert '# TYPE kured_errors_total counter\nkured_errors_total{node="a"} 3.0\n' in text
    assert "_created" not in text  # Go's client has no such series, and the dashboards use none


def test_label_values_are_escaped() -> None:
    metrics = Metrics('a "quoted" \\ path\n')
    metrics.set_reboot_required(True)
    assert 'kured_reboot_required{node="a \\"quoted\\" \\\\ path\\n"} 1.0\n' in exposed(metrics)


def test_a_family_without_series_still_says_what_it_is() -> None:
    text = exposed(Metrics("n1"))
    help_line = "# HELP kured_reboot_required OS requires reboot due to software updates.\n"
    assert f"{help_line}# TYPE kured_reboot_required gauge\n# HELP" in text


def test_process_series_read_this_process() -> None:
    lines = exposed(Metrics("n1")).splitlines()
    values = {
        line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("process_")
    }
    assert values["process_open_fds"] >= 3
    assert values["process_resident_memory_bytes"] > 1 << 20
    assert values["process_start_time_seconds"] > 1.6e9
    assert values["process_max_fds"] == float(os.sysconf("SC_OPEN_MAX"))
