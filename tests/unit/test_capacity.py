"""--max-unavailable: counting down nodes, and the tie-break between racing lock holders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kured.capacity import MaxUnavailable, NodeState, others_down, over_budget


@pytest.mark.parametrize(
    ("text", "total", "limit"),
    [("1", 10, 1), ("3", 2, 3), ("25%", 10, 2), ("25%", 3, 1), ("100%", 7, 7), ("1%", 50, 1)],
)
def test_limits(text: str, total: int, limit: int) -> None:
    assert MaxUnavailable.parse(text).limit(total) == limit


@pytest.mark.parametrize("text", ["0", "0%", "101%", "-1", "1.5", "x", "", "5 %"])
def test_bad_values(text: str) -> None:
    with pytest.raises(ValueError, match="use"):
        MaxUnavailable.parse(text)


def up(name: str) -> NodeState:
    return NodeState(name, ready=True, unschedulable=False)


def test_any_reason_counts() -> None:
    nodes = [up("a"), NodeState("b", False, False), NodeState("c", True, True), up("me")]
    assert others_down(nodes, "me", [], holding=False) == ["b", "c"]
    assert over_budget(MaxUnavailable(2), nodes, "me", [], holding=False).startswith(
        "max-unavailable 2: 2 of 4 nodes down (b, c)"
    )
    assert over_budget(MaxUnavailable(3), nodes, "me", [], holding=False) == ""


def test_holders_count_before_taking_a_slot_and_only_those_ahead_after() -> None:
    nodes = [up("a"), up("m"), up("z")]
    assert others_down(nodes, "m", ["a", "z"], holding=False) == ["a", "z"]
    assert others_down(nodes, "m", ["a", "m", "z"], holding=True) == ["a"]
    draining_z = [up("a"), up("m"), NodeState("z", True, False, draining=True)]
    assert others_down(draining_z, "m", ["m", "z"], holding=True) == ["z"]


names = st.lists(st.sampled_from("abcdefgh"), min_size=2, max_size=6, unique=True)


@given(names, st.integers(1, 3))
def test_racing_holders_never_exceed_the_budget(holders: list[str], limit: int) -> None:
    """Holders that all took slots at once, none draining yet: those allowed to go ahead
    never exceed the budget, and at least one goes ahead when the budget has room."""
    nodes = [up(name) for name in [*holders, "x", "y"]]
    budget = MaxUnavailable(limit)
    going = [h for h in holders if not over_budget(budget, nodes, h, holders, holding=True)]
    assert len(going) <= limit
    assert going


@given(names, st.integers(1, 3))
def test_later_checkers_see_earlier_drainers(holders: list[str], limit: int) -> None:
    """Holders check one after another, each marking itself draining when it goes ahead."""
    states = {name: up(name) for name in [*holders, "x"]}
    budget = MaxUnavailable(limit)
    going = []
    for holder in holders:
        if not over_budget(budget, list(states.values()), holder, holders, holding=True):
            going.append(holder)
            states[holder] = NodeState(holder, True, False, draining=True)
    assert 1 <= len(going) <= limit
