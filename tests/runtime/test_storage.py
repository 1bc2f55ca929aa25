"""The SQLite journal: a replica rebuilt from its database file after a 'crash' (the
journal object is dropped and the file reopened) behaves as with the in-memory journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbft import service as kv
from pbft.config import ProtocolParams
from pbft.encoding import encode_signed
from pbft.events import Receive
from pbft.messages import Commit, PrePrepare, Request, batch_digest
from pbft.replica import Replica
from pbft.runtime.storage import SqliteJournal, StorageError, read_history
from pbft.simnet import SimCluster, make_cluster
from tests.conftest import assert_agreement, assert_same_state, completed_all, submit_puts


def journaled(cluster: SimCluster, folder: Path) -> dict[int, SqliteJournal]:
    journals = {
        r: SqliteJournal(folder / f"replica-{r}.db", cluster.config.cluster_id, r)
        for r in cluster.replicas
    }

    def record(address, effects):  # type: ignore[no-untyped-def]
        if address[0] == "replica":
            journals[address[1]].record(cluster.network.nodes[address], effects)

    cluster.network.on_step = record
    return journals


def restart(cluster: SimCluster, journals: dict[int, SqliteJournal], replica_id: int) -> Replica:
    old = journals[replica_id]
    old.close()
    journal = journals[replica_id] = SqliteJournal(old.path, cluster.config.cluster_id, replica_id)
    return cluster.restart(replica_id, journal)


def test_restarted_backup_refuses_a_conflicting_pre_prepare(tmp_path: Path) -> None:
    cluster = make_cluster(f=1, clients=2, seed=90)
    journals = journaled(cluster, tmp_path)
    cluster.network.intercept = lambda s, d, m: type(m.message) is not Commit
    cluster.network.invoke(0, kv.put("k", "A"))
    cluster.network.run(20)
    fresh = restart(cluster, journals, 3)
    other = cluster.clients[1].auth.sign(Request(1, 1, kv.put("k", "B")))
    conflicting = cluster.replicas[0].auth.sign(
        PrePrepare(0, 1, batch_digest((other,)), (other,), 0)
    )
    fresh.step(Receive(encode_signed(conflicting)))
    assert fresh.counters.dropped[("PRE-PREPARE", "conflicting-pre-prepare")] == 1
    assert 1 in fresh.prepared_certificates or fresh.slots[1].prepares[3].message.seq == 1


def test_all_replicas_restarted_from_disk_keep_every_acknowledged_write(tmp_path: Path) -> None:
    params = ProtocolParams(batch_size=3, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=2, seed=91, params=params)
    journals = journaled(cluster, tmp_path)
    submit_puts(cluster, per_client=11)
    assert cluster.network.run_until_idle(50_000)
    acknowledged = {
        kv.decode_operation(op.operation)[1][0]: kv.decode_operation(op.operation)[1][1]
        for op in cluster.network.operations
    }
    for replica in list(cluster.replicas):
        cluster.network.crash(("replica", replica))
    for replica in list(cluster.replicas):
        restart(cluster, journals, replica)
    for replica in cluster.replicas.values():
        assert replica.service.data == acknowledged
    history = read_history(tmp_path / "replica-0.db")
    assert [seq for seq, _, _ in history] == list(range(1, cluster.replicas[0].last_executed + 1))


def test_replica_restarted_from_disk_mid_run_catches_up(tmp_path: Path) -> None:
    params = ProtocolParams(batch_size=2, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=3, seed=92, params=params)
    journals = journaled(cluster, tmp_path)
    submit_puts(cluster, per_client=5, prefix="a")
    cluster.network.run(10)
    cluster.network.crash(("replica", 1))
    submit_puts(cluster, per_client=15, prefix="b")
    assert cluster.network.run_until_idle(200_000)
    restart(cluster, journals, 1)
    cluster.network.crash(("replica", 3))
    submit_puts(cluster, per_client=15, prefix="c")
    assert cluster.network.run_until_idle(200_000)
    assert completed_all(cluster)
    assert_agreement(cluster, [0, 1, 2])
    assert_same_state(cluster, [0, 1, 2])


def test_a_database_of_another_replica_is_refused(tmp_path: Path) -> None:
    SqliteJournal(tmp_path / "r.db", "cluster-a", 0).close()
    with pytest.raises(StorageError, match="belongs to replica 0"):
        SqliteJournal(tmp_path / "r.db", "cluster-a", 1)
    with pytest.raises(StorageError, match="cluster-a"):
        SqliteJournal(tmp_path / "r.db", "cluster-b", 0)


def test_group_commit_keeps_what_one_transaction_per_step_keeps(tmp_path: Path) -> None:
    """The runtime journals a burst of steps in one transaction (their effects
    together, after the last step). Through checkpoints, garbage collection and a view
    change, that keeps exactly what recording every step on its own keeps."""
    params = ProtocolParams(batch_size=2, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=3, seed=93, params=params)
    config = cluster.config
    single = {r: SqliteJournal(tmp_path / f"s{r}.db", config.cluster_id, r) for r in range(4)}
    grouped = {r: SqliteJournal(tmp_path / f"g{r}.db", config.cluster_id, r) for r in range(4)}
    bursts: dict[int, list] = {r: [] for r in range(4)}  # type: ignore[type-arg]
    steps = [0]

    def record(address, effects):  # type: ignore[no-untyped-def]
        if address[0] != "replica":
            return
        replica = cluster.network.nodes[address]
        single[address[1]].record(replica, effects)
        bursts[address[1]].extend(effects)
        steps[0] += 1
        if steps[0] % (1 + steps[0] % 5) == 0:  # bursts of irregular length
            grouped[address[1]].record(replica, bursts[address[1]])
            bursts[address[1]].clear()

    cluster.network.on_step = record
    submit_puts(cluster, per_client=8, prefix="a")
    cluster.network.run(150)
    cluster.network.crash(("replica", 0))  # the primary: a view change follows
    submit_puts(cluster, per_client=8, prefix="b")
    assert cluster.network.run_until_idle(200_000)
    assert completed_all(cluster)
    for r in (1, 2, 3):
        grouped[r].record(cluster.replicas[r], bursts[r])
        assert cluster.replicas[r].view >= 1 and cluster.replicas[r].low_watermark >= 4
        assert grouped[r].load() == single[r].load()
        assert grouped[r].history() == single[r].history()


def test_a_journalled_message_above_the_decoder_s_default_limit_is_recovered(
    tmp_path: Path,
) -> None:
    """Found by mutation sample D: load() decoded with the 4 MiB default limit, while a
    VIEW-CHANGE may take about 4.1 MiB and a NEW-VIEW about 16 MiB with the default
    parameters (pbft.bounds). A replica that journalled one could not restart."""
    from pbft.bounds import message_bounds
    from pbft.encoding import DEFAULT_MAX_MESSAGE_BYTES
    from pbft.events import SendToReplicas

    cluster = make_cluster(f=1, clients=5, seed=94)
    assert message_bounds(cluster.config, cluster.params).new_view > DEFAULT_MAX_MESSAGE_BYTES
    primary = cluster.replicas[0]
    requests = tuple(
        cluster.clients[c].auth.sign(Request(c, 1, kv.put(f"k{c}", "v" * (1 << 20))))
        for c in range(5)
    )
    big = primary.auth.sign(PrePrepare(0, 1, batch_digest(requests), requests, 0))
    assert len(encode_signed(big)) > DEFAULT_MAX_MESSAGE_BYTES
    journal = SqliteJournal(tmp_path / "r0.db", cluster.config.cluster_id, 0)
    journal.record(primary, [SendToReplicas((1, 2, 3), big)])
    journal.close()
    state = SqliteJournal(tmp_path / "r0.db", cluster.config.cluster_id, 0).load()
    assert [signed.payload for signed in state.sent] == [big.payload]
