"""What to do next: a pure function from what the agent observed to one step.

The agent observes (sentinel, window, blockers, lock, node, boot id, and the
progress it recorded on its Node), asks :func:`decide`, applies the step and
records the new phase in the cluster, then asks again. Because the recorded
phase lives in the cluster and the decision depends on nothing else, a daemon
killed at any line resumes where it was when it starts again.

A restart of the daemon is not a reboot: only a boot id different from the one
recorded when the reboot was commanded proves the host went down. That fixes
Go kured's worst failure, where a pod restart while holding the lock was taken
as "rebooted" and the node was uncordoned and released mid-drain.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    """Where a node is in its reboot, recorded on the Node (see :data:`PROGRESS_ANNOTATION`)."""

    IDLE = "idle"
    DRAINING = "draining"  # holds the lock; cordoning and evicting
    REBOOTING = "rebooting"  # drained; reboot commanded (or about to be) from ``boot_id``
    GATING = "gating"  # back and uncordoned; holding the lock until the node is healthy


PROGRESS_ANNOTATION = "kured.dev/progress"
PAUSED_ANNOTATION = "kured.dev/paused"  # on the DaemonSet (everywhere) or on a Node
STATUS_ANNOTATION = "kured.dev/status"  # what the agent last saw (for kuredctl, humans)
# On a Node from its drain until its slot is given back: the nodes waiting for a slot watch
# the Nodes with it, to hear at once when a holder's Node is deleted.
HOLDER_LABEL = "kured.dev/lock-holder"


@dataclass(frozen=True)
class PauseNote:
    """Who paused kured, when and why (the value of ``kured.dev/paused``).

    kuredctl writes JSON, but the daemon only looks at the key's presence, so an
    operator's ``kubectl annotate node n1 kured.dev/paused="disk swap"`` is just as
    valid: free text is read back as the reason.
    """

    by: str = ""
    at: str = ""
    reason: str = ""

    def render(self) -> str:
        return json.dumps(self.to_json())

    @classmethod
    def parse(cls, text: str) -> PauseNote:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            return cls(reason=text)
        if not isinstance(raw, dict):
            return cls(reason=text)
        return cls(
            by=str(raw.get("by", "")), at=str(raw.get("at", "")), reason=str(raw.get("reason", ""))
        )

    def describe(self) -> str:
        """``by alice at 2026-11-02T10:00:00Z: kernel rollout on hold`` (parts may be missing)."""
        fields = (("by", self.by), ("at", self.at))
        who = " ".join(f"{word} {value}" for word, value in fields if value)
        return ": ".join(part for part in (who, self.reason) if part) or "(no details)"

    def to_json(self) -> dict[str, str]:
        return {"by": self.by, "at": self.at, "reason": self.reason}


@dataclass(frozen=True)
class Progress:
    """The agent's own record of its node, stored as JSON in a Node annotation."""

    phase: Phase = Phase.IDLE
    boot_id: str = ""  # the boot id when the phase was entered
    unschedulable_before: bool = False  # the node was cordoned by someone else before us
    since: str = ""  # RFC3339 time the phase was entered (for humans and kuredctl)
    # Reboots in a row after which the sentinel was still there (the reboot-loop guard).
    consecutive_reboots: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Progress:
        """An unreadable or missing record counts as idle: the lock still protects the fleet."""
        if not text:
            return cls()
        try:
            raw: Any = json.loads(text)
            return cls(
                phase=Phase(raw.get("phase", "idle")),
                boot_id=str(raw.get("boot_id", "")),
                unschedulable_before=bool(raw.get("unschedulable_before", False)),
                since=str(raw.get("since", "")),
                consecutive_reboots=int(raw.get("consecutive_reboots", 0)),
            )
        except (ValueError, AttributeError, TypeError):
            return cls()


class Step(StrEnum):
    """The next thing the agent does."""

    NOTHING = "nothing"  # no reboot needed, or not now (window closed)
    BLOCKED = "blocked"  # a blocker (pods, alerts) says not now
    WAIT_FOR_LOCK = "wait-for-lock"  # every slot is held by other nodes
    ACQUIRE_LOCK = "acquire-lock"
    DRAIN = "drain"  # cordon and evict (idempotent, so a crash mid-drain resumes)
    REBOOT = "reboot"  # command the reboot (again, if the host did not go down)
    FINISH = "finish"  # back from a reboot: uncordon (if we cordoned), then the health gate
    GATE_WAIT = "gate-wait"  # holding the lock until the node passes the health gate
    GATE_TIMEOUT = "gate-timeout"  # the gate did not pass in time: keep the lock, stop the roll
    RELEASE = "release"  # healthy after its reboot: release the lock
    ABANDON = "abandon"  # stop without rebooting: uncordon (if we cordoned), release
    LOOP_GUARD = "loop-guard"  # the sentinel survives reboot after reboot: stop rebooting
    DRY_RUN = "dry-run"  # --dry-run: say what would be drained and rebooted, touch nothing


@dataclass(frozen=True)
class Observation:
    """Everything :func:`decide` may look at, gathered by the agent."""

    reboot_required: bool
    window_open: bool
    holds_lock: bool
    lock_available: bool  # a slot is free for this node (or it already holds one)
    boot_id: str
    progress: Progress = Progress()
    blocked_by: str = ""  # why a blocker says no ("" = not blocked, or not asked)
    node_unschedulable: bool = False
    paused: str = ""  # why reboots are paused (DaemonSet or Node annotation), "" if not
    # Cordoned by someone else before kured took the lock (from the progress record,
    # or from the lock entry's metadata when the lock was taken by Go kured).
    unschedulable_before: bool = False
    gate: str = ""  # GATING: why the health gate has not passed yet ("" = passed)
    gate_timed_out: bool = False  # GATING: --post-reboot-gate-timeout has run out
    max_consecutive_reboots: int = 3  # 0 = no guard
    reboot_reason: str = ""  # why a reboot is required (sentinel and its packages, node age)
    dry_run: bool = False  # --dry-run: never lock, drain or reboot


@dataclass(frozen=True)
class Decision:
    step: Step
    reason: str
    uncordon: bool = False  # FINISH/ABANDON: make the node schedulable again


def decide(obs: Observation) -> Decision:
    """The one place that says what happens next."""
    decision = _decide(obs)
    if obs.dry_run:
        decision = _dry_run(decision, obs)
    if decision.step in (Step.FINISH, Step.ABANDON):
        ours = obs.node_unschedulable and not obs.unschedulable_before
        return Decision(decision.step, decision.reason, uncordon=ours)
    return decision


def _decide(obs: Observation) -> Decision:
    phase = obs.progress.phase
    if phase is Phase.REBOOTING:
        return _after_reboot_command(obs)
    if phase is Phase.GATING:
        return _gating(obs)
    if phase is Phase.DRAINING:
        if not obs.holds_lock:
            return Decision(Step.ABANDON, "lost the lock while draining")
        return Decision(Step.DRAIN, "resuming drain")
    if obs.holds_lock:
        if obs.reboot_required and obs.window_open and not obs.paused:
            return Decision(Step.DRAIN, "holding the lock")
        return Decision(Step.ABANDON, "holding the lock without a reboot to do")
    return _idle(obs)


def _dry_run(decision: Decision, obs: Observation) -> Decision:
    """``--dry-run``: where a lock would be taken, say what would happen instead; a drain
    or reboot left over from before the switch to dry-run is given up (uncordon, release)."""
    if decision.step in (Step.ACQUIRE_LOCK, Step.WAIT_FOR_LOCK):
        why = obs.reboot_reason or "Reboot required"
        return Decision(Step.DRY_RUN, f"dry run: would drain and reboot ({why})")
    if decision.step in (Step.DRAIN, Step.REBOOT):
        return Decision(Step.ABANDON, f"dry run: not going on ({decision.reason})")
    return decision


def _after_reboot_command(obs: Observation) -> Decision:
    if obs.boot_id != obs.progress.boot_id:
        return Decision(Step.FINISH, "boot id changed: the node rebooted")
    if obs.holds_lock:
        return Decision(Step.REBOOT, "reboot commanded but the host has not gone down yet")
    return Decision(Step.ABANDON, "lost the lock before the reboot happened")


def _gating(obs: Observation) -> Decision:
    if not obs.gate or not obs.holds_lock:
        return Decision(Step.RELEASE, "node healthy after its reboot")
    if obs.gate_timed_out:
        return Decision(Step.GATE_TIMEOUT, f"post-reboot gate timed out: {obs.gate}")
    return Decision(Step.GATE_WAIT, obs.gate)


def in_reboot_loop(obs: Observation) -> bool:
    limit = obs.max_consecutive_reboots
    return limit > 0 and obs.progress.consecutive_reboots >= limit


def _idle(obs: Observation) -> Decision:
    if not obs.reboot_required:
        return Decision(Step.NOTHING, "Reboot not required")
    if not obs.window_open:
        return Decision(Step.NOTHING, "outside the maintenance window")
    if in_reboot_loop(obs):
        count = obs.progress.consecutive_reboots
        return Decision(
            Step.LOOP_GUARD, f"reboot loop: still required after {count} reboots in a row"
        )
    if obs.paused:
        return Decision(Step.BLOCKED, f"paused: {obs.paused}")
    if obs.blocked_by:
        return Decision(Step.BLOCKED, obs.blocked_by)
    if obs.lock_available:
        return Decision(Step.ACQUIRE_LOCK, "Reboot required")
    return Decision(Step.WAIT_FOR_LOCK, "every lock slot is held")


@dataclass(frozen=True)
class HolderFacts:
    """What another agent can see of a lock holder, to decide whether its slot is stale."""

    node_exists: bool
    hand_set: bool  # the entry has no creation time: an operator's `kubectl annotate`
    expired: bool  # TTL (annotation) or lease duration ran out
    phase: Phase = Phase.IDLE  # the holder's recorded progress
    boot_changed: bool = False  # kubelet-reported boot id differs from the recorded one
    ready: bool = True
    condition_age: float = 0.0  # seconds since the holder's Ready condition last changed


def reclaim_reason(holder: HolderFacts, bound_seconds: float) -> str:
    """Why another node may take this holder's slot ("" = it may not).

    * a hand-set lock is the operator's brake: never taken;
    * a holder whose Node is gone will never release: taken at once;
    * an unexpired holder keeps its slot;
    * an expired holder that is not mid-reboot is free (Go kured's TTL);
    * an expired holder mid-drain or mid-reboot keeps its slot while the reboot
      may still be under way: until it has been NotReady for ``bound_seconds``
      (the host died), or back Ready with a new boot id for ``bound_seconds``
      (its daemon never came back to finish). A TTL that runs out during a
      reboot therefore never lets a second node go down beside it.
    """
    if holder.hand_set:
        return ""
    if not holder.node_exists:
        return "holder node deleted"
    if not holder.expired:
        return ""
    if holder.phase is Phase.IDLE:
        return "lock expired"
    if holder.condition_age < bound_seconds:
        return ""
    if not holder.ready:
        return f"holder NotReady for over {bound_seconds:g}s"
    if holder.boot_changed:
        return f"holder back from reboot for over {bound_seconds:g}s without finishing"
    return ""
