"""Network faults (faults.traitors.network): the rules alone, then in the simulator and over
real TCP.

The requirement: "partitions that heal at a given time, per-link delay and
jitter, loss, duplication, reordering", for the in-memory network and the
runtime. PBFT must stay safe through all of them (Castro & Liskov §4: safety
holds whatever the network does) and live again once the network behaves
(§4.4: liveness needs only that delays do not grow faster than timeouts).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import trio

from faults.traitors.network import (
    DEFAULT_REORDER_WINDOW_MS,
    NetworkFaultError,
    NetworkFaults,
    NetworkRule,
)
from pbft import service as kv
from pbft.crypto import KEYED_HASH
from pbft.runtime.client import RemoteClient
from pbft.runtime.files import ClusterFiles, free_loopback_ports, init_cluster
from pbft.runtime.node import ReplicaNode
from pbft.simnet import SimCluster, make_cluster
from tests.conftest import assert_agreement, completed_all, submit_puts

DRAWS = 10_000
#: About five standard deviations of a rate estimated from DRAWS draws.
RATE_TOLERANCE = 0.025


def faults(*rules: NetworkRule, seed: int = 0) -> NetworkFaults:
    return NetworkFaults(rules, random.Random(seed))


def fraction(count: int) -> float:
    return count / DRAWS


# ------------------------------------------------------------------ partitions


def test_a_partition_drops_messages_between_groups_only_while_it_lasts() -> None:
    """Active for at_ms <= now < until_ms; at until_ms the partition has healed."""
    model = faults(NetworkRule("partition", groups=((0, 1), (2, 3)), at_ms=500, until_ms=1500))
    for source, destination in [(0, 2), (2, 0), (1, 3), (3, 1), (0, 3), (2, 1)]:
        assert model.decide(499, source, destination) == [0]
        assert model.decide(500, source, destination) == []
        assert model.decide(1499, source, destination) == []
        assert model.decide(1500, source, destination) == [0]
    for source, destination in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        assert model.decide(1000, source, destination) == [0]


def test_a_replica_in_no_group_is_alone() -> None:
    """groups=[[0, 1, 2]] isolates replica 3 of four: it is in a group of its own."""
    model = faults(NetworkRule("partition", groups=[[0, 1, 2]], until_ms=100))
    assert model.decide(0, 0, 1) == [0]
    for other in (0, 1, 2):
        assert model.decide(0, 3, other) == []
        assert model.decide(0, other, 3) == []
    assert model.active_partition(50) == [((0, 1, 2),)]
    assert model.active_partition(100) == []


def test_a_partition_without_end_never_heals_and_two_partitions_combine() -> None:
    model = faults(
        NetworkRule("partition", groups=[[0, 1], [2, 3]]),
        NetworkRule("partition", groups=[[0, 2], [1, 3]], at_ms=10, until_ms=20),
    )
    assert model.decide(10**9, 0, 2) == []
    assert model.decide(0, 0, 1) == [0]
    assert model.decide(15, 0, 1) == []
    assert model.decide(15, 2, 3) == []


def test_a_message_to_oneself_crosses_no_network() -> None:
    model = faults(NetworkRule("partition", groups=[[0], [1]]), NetworkRule("loss", rate=1.0))
    assert model.decide(0, 2, 2) == [0]


# --------------------------------------------------------- loss and duplication


def test_loss_drops_about_rate_of_the_messages_on_its_links_only() -> None:
    model = faults(NetworkRule("loss", rate=0.3, links=[[0, 1]]), seed=1)
    dropped = sum(model.decide(0, 0, 1) == [] for _ in range(DRAWS))
    assert fraction(dropped) == pytest.approx(0.3, abs=RATE_TOLERANCE)
    # The link is directed: the way back, and other links, lose nothing.
    assert all(model.decide(0, 1, 0) == [0] for _ in range(1000))
    assert all(model.decide(0, 2, 3) == [0] for _ in range(1000))


def test_loss_of_rate_one_drops_everything_and_only_while_active() -> None:
    model = faults(NetworkRule("loss", rate=1.0, at_ms=100, until_ms=200))
    assert model.decide(99, 0, 1) == [0]
    assert model.decide(100, 0, 1) == []
    assert model.decide(199, 3, 2) == []
    assert model.decide(200, 0, 1) == [0]


def test_duplicate_adds_one_copy_with_probability_rate() -> None:
    model = faults(NetworkRule("duplicate", rate=0.25), seed=2)
    decisions = [model.decide(0, 1, 2) for _ in range(DRAWS)]
    assert {len(delays) for delays in decisions} == {1, 2}
    duplicated = sum(len(delays) == 2 for delays in decisions)
    assert fraction(duplicated) == pytest.approx(0.25, abs=RATE_TOLERANCE)
    assert all(delay == 0 for delays in decisions for delay in delays)


# ------------------------------------------------------ delay, jitter, reorder


def test_delay_adds_ms_plus_a_jitter_between_zero_and_jitter_ms() -> None:
    model = faults(NetworkRule("delay", ms=20, jitter_ms=10, links=[[0, 1], [1, 0]]), seed=3)
    delays = [delay for _ in range(DRAWS) for delay in model.decide(0, 0, 1)]
    assert min(delays) == 20
    assert max(delays) == 30
    assert sum(delays) / len(delays) == pytest.approx(25, abs=0.3)
    assert model.decide(0, 0, 2) == [0]


def test_delay_without_jitter_is_exact_and_applies_to_every_copy() -> None:
    model = faults(NetworkRule("delay", ms=7), NetworkRule("duplicate", rate=1.0))
    assert model.decide(0, 0, 1) == [7, 7]


def test_reorder_delays_about_rate_of_the_copies_by_up_to_ms() -> None:
    window_ms = 40
    model = faults(NetworkRule("reorder", rate=0.5, ms=window_ms), seed=4)
    delays = [delay for _ in range(DRAWS) for delay in model.decide(0, 2, 1)]
    assert min(delays) == 0
    assert max(delays) == window_ms
    # A reordered copy draws uniformly from 0..ms, so a few are "delayed" by 0.
    late = sum(delay > 0 for delay in delays)
    assert fraction(late) == pytest.approx(0.5 * window_ms / (window_ms + 1), abs=RATE_TOLERANCE)


def test_reorder_overtakes_messages_sent_one_millisecond_apart() -> None:
    model = faults(NetworkRule("reorder", rate=0.3), seed=5)
    arrivals = [(sent + delay, sent) for sent in range(1000) for delay in model.decide(sent, 0, 1)]
    order = [sent for _, sent in sorted(arrivals)]
    assert order != sorted(order)
    assert max(arrival - sent for arrival, sent in arrivals) <= DEFAULT_REORDER_WINDOW_MS


# ---------------------------------------------------------------- determinism


def scenario_rules() -> list[dict[str, Any]]:
    return [
        {"kind": "loss", "rate": 0.1},
        {"kind": "duplicate", "rate": 0.2, "links": [[0, 1], [2, 3]]},
        {"kind": "delay", "ms": 3, "jitter_ms": 4},
        {"kind": "reorder", "rate": 0.3, "ms": 30, "at_ms": 100},
    ]


def decisions(model: NetworkFaults) -> list[list[int]]:
    return [model.decide(now, now % 4, (now + 1) % 4) for now in range(2000)]


def test_the_same_seed_gives_the_same_decisions() -> None:
    first = decisions(NetworkFaults.from_rules(scenario_rules(), seed=7))
    assert first == decisions(NetworkFaults.from_rules(scenario_rules(), seed=7))
    assert first != decisions(NetworkFaults.from_rules(scenario_rules(), seed=8))


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ({"kind": "flood"}, "unknown network fault kind 'flood'"),
        ({"kind": "loss", "rate": 1.5}, "rate must be a probability in [0, 1], got 1.5"),
        ({"kind": "loss", "rate": -0.1}, "rate must be a probability"),
        ({"kind": "loss"}, "rate must be above 0"),
        ({"kind": "delay", "ms": -5}, "ms must be a whole number of milliseconds >= 0, got -5"),
        ({"kind": "delay", "ms": 5, "jitter_ms": -1}, "jitter_ms must be"),
        ({"kind": "delay"}, "needs ms or jitter_ms above 0"),
        ({"kind": "loss", "rate": 0.1, "at_ms": -1}, "at_ms must be"),
        ({"kind": "loss", "rate": 0.1, "at_ms": 500, "until_ms": 500}, "must be later than"),
        ({"kind": "loss", "rate": 0.1, "at_ms": 500, "until_ms": 100}, "must be later than"),
        ({"kind": "partition"}, "groups must be a non-empty list"),
        ({"kind": "partition", "groups": [[0, 1], []]}, "non-empty list of replica ids"),
        ({"kind": "partition", "groups": [[0, 1], [1, 2]]}, "replica 1 is in more than one"),
        ({"kind": "partition", "groups": [[0, "a"]]}, "replica ids are whole numbers"),
        ({"kind": "delay", "ms": 5, "links": [[1, 1]]}, "names replica 1 twice"),
        ({"kind": "delay", "ms": 5, "links": [[0, 1], [0, 1]]}, "is listed twice"),
        ({"kind": "delay", "ms": 5, "links": [[0, 1, 2]]}, "is a [source, destination] pair"),
        ({"kind": "delay", "ms": 5, "groups": [[0], [1]]}, "'groups' does not apply to a delay"),
        ({"kind": "partition", "groups": [[0], [1]], "rate": 0.5}, "'rate' does not apply"),
        ({"kind": "partition", "groups": [[0], [1]], "links": [[0, 1]]}, "'links' does not"),
        ({"kind": "loss", "rate": 0.5, "ms": 10}, "'ms' does not apply to a loss rule"),
        ({"kind": "reorder", "rate": 0.5, "jitter_ms": 10}, "'jitter_ms' does not apply"),
    ],
)
def test_a_bad_rule_is_refused_with_a_clear_message(table: dict[str, Any], complaint: str) -> None:
    with pytest.raises(NetworkFaultError, match="network rule 1: ") as error:
        NetworkFaults.from_rules([table])
    assert complaint in str(error.value)


def test_from_rules_names_an_unknown_key_and_the_rule_it_is_in() -> None:
    with pytest.raises(NetworkFaultError, match=r"network rule 2: unknown key 'delay_ms'"):
        NetworkFaults.from_rules([{"kind": "loss", "rate": 0.1}, {"kind": "delay", "delay_ms": 3}])
    with pytest.raises(NetworkFaultError, match="network rule 1: needs a kind"):
        NetworkFaults.from_rules([{"rate": 0.1}])


def test_validate_names_a_replica_that_does_not_exist() -> None:
    model = NetworkFaults.from_rules(
        [
            {"kind": "partition", "groups": [[0, 1], [2, 3]]},
            {"kind": "loss", "rate": 0.1, "links": [[0, 4]]},
        ]
    )
    model.validate(5)
    with pytest.raises(NetworkFaultError, match=r"replica 4 does not exist \(replicas are 0..3\)"):
        model.validate(4)
    with pytest.raises(NetworkFaultError, match="replica -1 does not exist"):
        NetworkRule("partition", groups=[[-1], [0]]).validate(4)


def test_rules_accept_lists_as_written_in_toml_and_compare_as_tuples() -> None:
    table = {"kind": "partition", "groups": [[0, 1], [2, 3]], "at_ms": 500, "until_ms": 1500}
    rule = NetworkFaults.from_rules([table]).rules[0]
    assert rule.groups == ((0, 1), (2, 3))
    assert rule == NetworkRule("partition", groups=((0, 1), (2, 3)), at_ms=500, until_ms=1500)


# ------------------------------------------------------ the in-memory network


def simulated(seed: int, rules: list[dict[str, Any]], clients: int = 2) -> SimCluster:
    cluster = make_cluster(f=1, clients=clients, seed=seed, scheme=KEYED_HASH)
    cluster.network.fault_model = NetworkFaults.from_rules(rules, seed=seed)
    return cluster


def test_simnet_makes_no_progress_in_a_partition_without_quorum_and_finishes_after_it() -> None:
    """[[0, 1], [2, 3]]: no side holds 2f+1 = 3 replicas, so nothing commits (§4.2) until
    the partition heals at 2000 ms; then view changes (§4.4) bring every request through."""
    cluster = simulated(1, [{"kind": "partition", "groups": [[0, 1], [2, 3]], "until_ms": 2000}])
    submit_puts(cluster, per_client=10)
    cluster.network.run(1999)
    assert all(executed == [] for executed in cluster.network.executed.values())
    assert not any(op.return_tick is not None for op in cluster.network.operations)
    assert cluster.network.run_until_idle(max_ticks=60_000)
    assert completed_all(cluster)
    assert min(op.return_tick or 0 for op in cluster.network.operations) >= 2000
    assert_agreement(cluster)


def test_simnet_delay_slows_the_three_phases_between_replicas() -> None:
    """PRE-PREPARE, PREPARE and COMMIT cross replica links; REQUEST and REPLY do not."""
    cluster = simulated(2, [{"kind": "delay", "ms": 100}], clients=1)
    cluster.network.invoke(0, kv.put("a", "1"))
    assert cluster.network.run_until_idle(max_ticks=10_000)
    assert (cluster.network.operations[0].return_tick or 0) >= 300


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_simnet_completes_and_agrees_through_loss_duplication_and_reordering(seed: int) -> None:
    rules = [
        {"kind": "loss", "rate": 0.1},
        {"kind": "duplicate", "rate": 0.2},
        {"kind": "reorder", "rate": 0.3, "ms": 30},
        {"kind": "delay", "ms": 2, "jitter_ms": 5},
    ]
    cluster = simulated(seed, rules, clients=3)
    submit_puts(cluster, per_client=20)
    assert cluster.network.run_until_idle(max_ticks=200_000)
    assert completed_all(cluster)
    assert_agreement(cluster)


def test_simnet_same_seed_same_trace() -> None:
    rules = [
        {"kind": "partition", "groups": [[0, 1, 2]], "at_ms": 50, "until_ms": 400},
        {"kind": "loss", "rate": 0.1},
        {"kind": "duplicate", "rate": 0.1},
        {"kind": "reorder", "rate": 0.3},
    ]
    traces = []
    for seed in (6, 6, 7):
        cluster = simulated(seed, rules)
        submit_puts(cluster, per_client=10)
        assert cluster.network.run_until_idle(max_ticks=100_000)
        traces.append(cluster.network.trace_hash)
    assert traces[0] == traces[1]
    assert traces[0] != traces[2]


# --------------------------------------------------------------- over real TCP

#: Fast view changes, so that a healed partition finds its way back quickly.
RUNTIME_PROTOCOL = {"view_change_timeout_ticks": 600}


async def run_cluster(
    tmp_path: Path,
    nursery: trio.Nursery,
    rules: list[NetworkRule],
) -> tuple[ClusterFiles, list[ReplicaNode], RemoteClient, float]:
    """Four replicas and one client in this Trio process; returns the ms clock's origin."""
    files = init_cluster(
        tmp_path / "cluster",
        f=1,
        clients=1,
        ports=free_loopback_ports(4),
        protocol=RUNTIME_PROTOCOL,
    )
    origin = trio.current_time()
    nodes = [
        ReplicaNode(
            files,
            i,
            tmp_path / f"r{i}",
            network_faults=NetworkFaults(rules, random.Random(i)),
            clock_origin=origin,
        )
        for i in range(4)
    ]
    for node in nodes:
        await nursery.start(node.run)
    client = RemoteClient(files, 0, retransmit_ticks=300)
    await nursery.start(client.run)
    await client.wait_connected(timeout=10)
    return files, nodes, client, origin


async def test_runtime_requests_complete_while_one_replica_is_partitioned_away(
    tmp_path: Path,
) -> None:
    """{0, 1, 2} | {3} for 1500 ms: three replicas are a quorum of 2f+1, so the
    cluster goes on; replica 3 executes nothing while it hears no one."""
    rules = [NetworkRule("partition", groups=[[0, 1, 2], [3]], until_ms=1500)]
    async with trio.open_nursery() as nursery:
        _, nodes, client, origin = await run_cluster(tmp_path, nursery, rules)
        for i in range(5):
            assert kv.decode_result(await client.execute(kv.put(f"k{i}", "v"), timeout=5))
        assert trio.current_time() - origin < 1.5, "the puts should finish inside the partition"
        assert nodes[3].replica.last_executed == 0
        assert nodes[0].replica.last_executed >= 1
        assert 0 <= nodes[3].now_ms() < 1500
        await trio.sleep_until(origin + 1.5)
        assert kv.decode_result(await client.execute(kv.put("after", "heal"), timeout=5))
        nursery.cancel_scope.cancel()


async def test_runtime_request_inside_a_partition_completes_only_after_it_heals(
    tmp_path: Path,
) -> None:
    """[[0, 1], [2, 3]] for 1000 ms: no side holds a quorum, so the put started
    inside the window cannot commit before the heal (§4.2), and does after it."""
    heal_seconds = 1.0
    rules = [NetworkRule("partition", groups=[[0, 1], [2, 3]], until_ms=1000)]
    async with trio.open_nursery() as nursery:
        _, nodes, client, origin = await run_cluster(tmp_path, nursery, rules)
        started = trio.current_time()
        assert started - origin < heal_seconds, "the put must start inside the partition"
        assert kv.decode_result(await client.execute(kv.put("k", "v"), timeout=10))
        assert trio.current_time() >= origin + heal_seconds
        assert max(node.replica.last_executed for node in nodes) >= 1
        nursery.cancel_scope.cancel()
