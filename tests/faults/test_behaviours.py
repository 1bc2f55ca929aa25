"""Every traitor behaviour, with f = 1 and f = 2 and at most f traitors: honest replicas
agree, clients get correct results, and the run is live once the network is healthy."""

from __future__ import annotations

import pytest

from faults.traitors.base import Traitor, Trigger
from faults.traitors.behaviours import BEHAVIOURS, BehaviourError, make_behaviour
from faults.traitors.clients import ByzantineClient
from pbft import service as kv
from pbft.config import ProtocolParams
from pbft.replica import Replica
from pbft.simnet import SimCluster, make_cluster
from tests.conftest import assert_agreement, assert_same_state

PARAMS = ProtocolParams(
    batch_size=2, checkpoint_interval=4, log_window=8, view_change_timeout_ticks=300
)
#: Parameters that make each behaviour bite in a short run.
SETTINGS: dict[str, dict] = {
    "stall": {"ms": 2000},
    "crash": {"restart_ms": 1500},
    "flood": {"count": 5},
    "mutate": {"rate": 0.5},
}


def with_traitors(
    f: int, behaviour: str, traitors: list[int], seed: int, trigger: Trigger | None = None
) -> SimCluster:
    cluster = make_cluster(f=f, clients=3, seed=seed, params=PARAMS, scheme="keyed-hash")
    network = cluster.network
    for replica_id in traitors:

        def rebuild(replica_id: int = replica_id) -> Replica:
            return Replica(
                replica_id, cluster.config, cluster.replica_signers[replica_id], cluster.params
            )

        traitor = Traitor(
            cluster.replicas[replica_id],
            [make_behaviour(behaviour, trigger, **SETTINGS.get(behaviour, {}))],
            seed=seed + replica_id,
            clock=lambda: network.now,
            rebuild=rebuild,
        )
        network.replace(("replica", replica_id), traitor)
    return cluster


def run_workload(cluster: SimCluster) -> dict[str, str]:
    """Puts to distinct keys, then gets of them; returns what was written."""
    written: dict[str, str] = {}
    for client in cluster.clients:
        puts = [(f"k{client}-{i}", f"v{client}-{i}") for i in range(6)]
        written.update(puts)
        operations = [kv.put(key, value) for key, value in puts]
        operations += [kv.get(key) for key, _ in puts]
        cluster.network.submit(client, operations)
    return written


def check_run(cluster: SimCluster, traitors: list[int], written: dict[str, str]) -> None:
    network = cluster.network
    assert network.run_until_idle(max_ticks=300_000), "the run is not live"
    honest = [r for r in cluster.replicas if r not in traitors]
    assert_agreement(cluster, honest)
    for operation in network.operations:
        name, args = kv.decode_operation(operation.operation)
        result = kv.decode_result(operation.result)
        assert result == (True if name == "put" else written[args[0]]), (name, args, result)
    network.run(3_000)
    top = max(cluster.replicas[r].last_executed for r in honest)
    caught_up = [r for r in honest if cluster.replicas[r].last_executed == top]
    assert len(caught_up) >= cluster.config.quorum - len(traitors)
    assert_same_state(cluster, caught_up)


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
@pytest.mark.parametrize("f", [1, 2])
def test_primary_traitor(behaviour: str, f: int) -> None:
    """The primary of view 0 is the traitor (and, for f = 2, one backup too)."""
    traitors = [0] if f == 1 else [0, 4]
    cluster = with_traitors(f, behaviour, traitors, seed=100 + f)
    written = run_workload(cluster)
    check_run(cluster, traitors, written)


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_backup_traitor_from_a_sequence_number_on(behaviour: str) -> None:
    """A backup turns traitor at seq 5, only towards replicas 1 and 2."""
    trigger = Trigger(from_seq=5, targets=frozenset({1, 2}))
    cluster = with_traitors(1, behaviour, [3], seed=7, trigger=trigger)
    written = run_workload(cluster)
    check_run(cluster, [3], written)


def test_equivocating_primary_forces_a_view_change() -> None:
    """Backups 1 and 2 get one batch, backup 3 another: no batch gathers 2f+1 COMMITs,
    requests wait, and the backups replace the primary (§4.4)."""
    from pbft.events import NewViewEntered

    split = Trigger(targets=frozenset({1, 2}))
    cluster = with_traitors(1, "equivocate", [0], seed=11, trigger=split)
    written = run_workload(cluster)
    check_run(cluster, [0], written)
    assert any(type(n) is NewViewEntered for _, _, n in cluster.network.notices)


def test_stalled_primary_forces_a_view_change() -> None:
    cluster = with_traitors(1, "stall", [0], seed=12)
    written = run_workload(cluster)
    check_run(cluster, [0], written)
    assert all(cluster.replicas[r].view >= 1 for r in (1, 2, 3))


@pytest.mark.parametrize("mode", ["reuse-timestamp", "split", "impersonate"])
def test_byzantine_clients_do_not_hurt_honest_ones(mode: str) -> None:
    cluster = make_cluster(f=1, clients=3, seed=13, params=PARAMS, scheme="keyed-hash")
    liar = ByzantineClient(cluster.clients[2], mode)
    cluster.network.replace(("client", 2), liar)
    for client in (0, 1):
        cluster.network.submit(client, [kv.put(f"k{client}-{i}", "v") for i in range(6)])
    cluster.network.submit(2, [kv.put("liar", "x"), kv.put("liar", "y")])
    honest_done = lambda: all(  # noqa: E731
        op.return_tick is not None for op in cluster.network.operations if op.client != 2
    )
    assert cluster.network.run_until(honest_done, max_ticks=100_000)
    cluster.network.run(2_000)
    assert_agreement(cluster)
    for replica in cluster.replicas.values():
        assert all(replica.service.data.get(f"k{c}-{i}") == "v" for c in (0, 1) for i in range(6))


def test_unknown_behaviours_and_parameters_are_refused_clearly() -> None:
    with pytest.raises(BehaviourError, match="unknown behaviour 'sulk'"):
        make_behaviour("sulk")
    with pytest.raises(BehaviourError, match="has no parameter 'loudness'"):
        make_behaviour("flood", loudness=3)
    with pytest.raises(BehaviourError, match="count must be int"):
        make_behaviour("flood", count="many")
