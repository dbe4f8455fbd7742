"""The pure policy: every observation, every safety property."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from kured.policy import (
    Decision,
    HolderFacts,
    Observation,
    Phase,
    Progress,
    Step,
    decide,
    in_reboot_loop,
    reclaim_reason,
)

progress = st.builds(
    Progress,
    phase=st.sampled_from(Phase),
    boot_id=st.sampled_from(["boot-a", "boot-b"]),
    unschedulable_before=st.booleans(),
    consecutive_reboots=st.integers(0, 5),
)
observations = st.builds(
    Observation,
    reboot_required=st.booleans(),
    window_open=st.booleans(),
    holds_lock=st.booleans(),
    lock_available=st.booleans(),
    boot_id=st.sampled_from(["boot-a", "boot-b"]),
    progress=progress,
    blocked_by=st.sampled_from(["", "2 blocking pods: a/b, c/d"]),
    node_unschedulable=st.booleans(),
    unschedulable_before=st.booleans(),
    paused=st.sampled_from(["", "cluster-wide: change freeze"]),
    gate=st.sampled_from(["", "node not Ready"]),
    gate_timed_out=st.booleans(),
    max_consecutive_reboots=st.integers(0, 4),
    reboot_reason=st.sampled_from(["", "/var/run/reboot-required exists"]),
)


@given(observations)
def test_never_drains_or_reboots_without_the_lock(obs: Observation) -> None:
    if decide(obs).step in (Step.DRAIN, Step.REBOOT):
        assert obs.holds_lock


@given(observations)
def test_never_uncordons_a_node_someone_else_cordoned(obs: Observation) -> None:
    decision = decide(obs)
    if decision.uncordon:
        assert obs.node_unschedulable and not obs.unschedulable_before
        assert decision.step in (Step.FINISH, Step.ABANDON)


@given(observations)
def test_lock_is_never_released_with_our_cordon_left_behind(obs: Observation) -> None:
    decision = decide(obs)
    if decision.step in (Step.FINISH, Step.ABANDON) and obs.node_unschedulable:
        assert decision.uncordon or obs.unschedulable_before


@given(observations)
def test_only_a_new_boot_id_counts_as_rebooted(obs: Observation) -> None:
    if decide(obs).step is Step.FINISH:
        assert obs.progress.phase is Phase.REBOOTING
        assert obs.boot_id != obs.progress.boot_id


@given(observations)
def test_a_restart_mid_reboot_resumes_instead_of_releasing(obs: Observation) -> None:
    same_boot = obs.boot_id == obs.progress.boot_id
    mid_reboot = obs.progress.phase in (Phase.DRAINING, Phase.REBOOTING)
    if obs.holds_lock and same_boot and mid_reboot:
        assert decide(obs).step in (Step.DRAIN, Step.REBOOT)


@given(observations)
def test_the_lock_passes_on_only_after_the_health_gate(obs: Observation) -> None:
    step = decide(obs).step
    if step is Step.RELEASE:
        assert obs.progress.phase is Phase.GATING
        assert obs.gate == "" or not obs.holds_lock
    if obs.progress.phase is Phase.GATING and obs.gate and obs.holds_lock:
        assert step in (Step.GATE_WAIT, Step.GATE_TIMEOUT)


@given(observations)
def test_reboot_loop_guard_stops_new_reboots(obs: Observation) -> None:
    if in_reboot_loop(obs) and obs.progress.phase is Phase.IDLE and not obs.holds_lock:
        assert decide(obs).step in (Step.NOTHING, Step.LOOP_GUARD)


@given(observations)
def test_pause_stops_new_drains_but_not_a_running_reboot(obs: Observation) -> None:
    step = decide(obs).step
    if obs.paused and obs.progress.phase is Phase.IDLE:
        assert step not in (Step.DRAIN, Step.REBOOT, Step.ACQUIRE_LOCK)
    if obs.progress.phase is Phase.REBOOTING and obs.holds_lock:
        assert step in (Step.REBOOT, Step.FINISH)


@given(observations)
def test_idle_nodes_follow_go_kured_order(obs: Observation) -> None:
    if obs.holds_lock or obs.progress.phase is not Phase.IDLE:
        return
    step = decide(obs).step
    if not obs.reboot_required or not obs.window_open:
        assert step is Step.NOTHING
    elif in_reboot_loop(obs):
        assert step is Step.LOOP_GUARD
    elif obs.paused or obs.blocked_by:
        assert step is Step.BLOCKED
    else:
        assert step is (Step.ACQUIRE_LOCK if obs.lock_available else Step.WAIT_FOR_LOCK)


def test_go_kured_holder_after_its_reboot_is_finished_not_rebooted_again() -> None:
    # A Go kured pod took the lock and rebooted; our image starts with no progress record.
    obs = Observation(
        reboot_required=False,
        window_open=True,
        holds_lock=True,
        lock_available=True,
        boot_id="new",
        node_unschedulable=True,
        unschedulable_before=False,
    )
    assert decide(obs) == Decision(Step.ABANDON, "holding the lock without a reboot to do", True)


def test_progress_record_round_trip_and_garbage() -> None:
    record = Progress(Phase.REBOOTING, "boot-a", True, "2026-11-22T03:00:00Z")
    assert Progress.from_json(record.to_json()) == record
    assert Progress.from_json("not json") == Progress()
    assert Progress.from_json('{"phase":"exploding"}') == Progress()
    assert Progress.from_json(None) == Progress()


holders = st.builds(
    HolderFacts,
    node_exists=st.booleans(),
    hand_set=st.booleans(),
    expired=st.booleans(),
    phase=st.sampled_from(Phase),
    boot_changed=st.booleans(),
    ready=st.booleans(),
    condition_age=st.floats(0, 10_000),
)


@given(holders, st.floats(1, 5_000))
def test_a_live_holder_is_never_robbed(holder: HolderFacts, bound: float) -> None:
    reason = reclaim_reason(holder, bound)
    if holder.hand_set or (holder.node_exists and not holder.expired):
        assert reason == ""


@given(holders, st.floats(1, 5_000))
def test_an_expired_ttl_never_frees_a_node_mid_reboot(holder: HolderFacts, bound: float) -> None:
    mid_reboot = holder.phase is not Phase.IDLE and not holder.boot_changed and holder.ready
    if holder.node_exists and mid_reboot:
        assert reclaim_reason(holder, bound) == ""
    if holder.node_exists and holder.phase is not Phase.IDLE and holder.condition_age < bound:
        assert reclaim_reason(holder, bound) == ""


def test_deleted_holder_is_reclaimed_at_once() -> None:
    gone = HolderFacts(node_exists=False, hand_set=False, expired=False)
    assert reclaim_reason(gone, 600) == "holder node deleted"


# --- --dry-run ---------------------------------------------------------------------------

dry_observations = observations.map(lambda obs: replace(obs, dry_run=True))


@given(dry_observations)
def test_a_dry_run_never_locks_drains_or_reboots(obs: Observation) -> None:
    step = decide(obs).step
    assert step not in (Step.ACQUIRE_LOCK, Step.WAIT_FOR_LOCK, Step.DRAIN, Step.REBOOT)


@given(dry_observations)
def test_a_dry_run_reports_where_the_lock_would_be_taken(obs: Observation) -> None:
    real = decide(replace(obs, dry_run=False))
    dry = decide(obs)
    if real.step in (Step.ACQUIRE_LOCK, Step.WAIT_FOR_LOCK):
        assert dry.step is Step.DRY_RUN
        assert (obs.reboot_reason or "Reboot required") in dry.reason
    elif real.step in (Step.DRAIN, Step.REBOOT):
        assert dry.step is Step.ABANDON  # left over from before the switch: let go of it
    else:
        assert dry == real


@given(dry_observations)
def test_a_dry_run_keeps_the_uncordon_rule(obs: Observation) -> None:
    decision = decide(obs)
    if decision.uncordon:
        assert obs.node_unschedulable and not obs.unschedulable_before


def test_a_dry_run_names_the_reason() -> None:
    obs = Observation(
        reboot_required=True,
        window_open=True,
        holds_lock=False,
        lock_available=True,
        boot_id="b",
        reboot_reason="node up 800h0m0s, longer than --max-node-age 720h0m0s",
        dry_run=True,
    )
    assert decide(obs) == Decision(
        Step.DRY_RUN,
        "dry run: would drain and reboot (node up 800h0m0s, longer than --max-node-age 720h0m0s)",
    )
