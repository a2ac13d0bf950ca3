"""How the fires of a burst are shared out among live nodes (`policy.owner`): every node works out
the same owner, shares follow free slots, placement is respected, and a node that leaves hands
its share to the others without moving anyone else's."""

from __future__ import annotations

import collections

from taskd.config.schema import PlacementLabels, PlacementNodes
from taskd.engine.policy import Claimant, owner


def shares(nodes: list[Claimant], tasks: int = 900, instant: float = 1_800_000_000.0) -> collections.Counter[str]:
    return collections.Counter(owner(f"task-{i}", instant, "any", nodes) for i in range(tasks))


def test_idle_nodes_get_a_fair_share_of_a_burst() -> None:
    nodes = [Claimant(name, {}, 10) for name in ("a", "b", "c")]
    for instant in (1_800_000_000.0, 1_800_000_001.0, 1_800_000_002.0):
        counted = shares(nodes, instant=instant)
        assert sum(counted.values()) == 900
        assert all(abs(n - 300) <= 45 for n in counted.values()), counted  # within 15% of a third


def test_every_node_works_out_the_same_owner_whatever_the_order_it_lists_the_nodes_in() -> None:
    nodes = [Claimant(name, {}, 10) for name in ("a", "b", "c")]
    for i in range(200):
        assert owner(f"t{i}", 5.0, "any", nodes) == owner(f"t{i}", 5.0, "any", list(reversed(nodes)))


def test_less_loaded_nodes_get_more() -> None:
    counted = shares([Claimant("busy", {}, 0), Claimant("half", {}, 4), Claimant("idle", {}, 9)], tasks=3000)
    assert counted["idle"] > counted["half"] > counted["busy"] > 0, counted
    assert abs(counted["idle"] / 3000 - 10 / 16) < 0.05  # in proportion to free slots + 1


def test_a_node_that_leaves_hands_only_its_own_share_on() -> None:
    three = [Claimant(name, {}, 10) for name in ("a", "b", "c")]
    before = {f"t{i}": owner(f"t{i}", 7.0, "any", three) for i in range(600)}
    after = {key: owner(key, 7.0, "any", three[:2]) for key in before}
    moved = [key for key in before if before[key] != after[key]]
    assert moved and all(before[key] == "c" for key in moved)


def test_placement_limits_the_owners() -> None:
    nodes = [Claimant("a", {"zone": "x"}, 10), Claimant("b", {"zone": "y"}, 10), Claimant("c", {"zone": "y"}, 10)]
    assert {owner(f"t{i}", 1.0, PlacementNodes(nodes=("a",)), nodes) for i in range(50)} == {"a"}
    assert {owner(f"t{i}", 1.0, PlacementLabels(labels={"zone": "y"}), nodes) for i in range(50)} == {"b", "c"}
    assert owner("t", 1.0, PlacementNodes(nodes=("z",)), nodes) is None
