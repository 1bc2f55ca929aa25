"""Checkpoints, garbage collection and state transfer (Castro & Liskov §4.3)."""

from __future__ import annotations

from pbft import service as kv
from pbft.config import ProtocolParams
from pbft.encoding import encode_signed
from pbft.events import CheckpointStable, Receive, StateTransferred
from pbft.messages import Checkpoint, StateSnapshot
from pbft.simnet import make_cluster
from tests.conftest import assert_agreement, assert_same_state, completed_all, submit_puts


def test_checkpoint_becomes_stable_with_2f_plus_1_matching_messages() -> None:
    """§4.3: a CHECKPOINT every K; 2f+1 matching ones make it stable and move h."""
    params = ProtocolParams(batch_size=1, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=1, seed=50, params=params)
    cluster.network.submit(0, [kv.put("k", str(i)) for i in range(9)])
    assert cluster.network.run_until_idle(max_ticks=20_000)
    for replica in cluster.replicas.values():
        assert replica.low_watermark == 8
        assert len(replica.stable_proof) == cluster.config.quorum
        senders = {signed.message.sender for signed in replica.stable_proof}
        assert len(senders) == cluster.config.quorum
        assert all(s.message.state_digest == replica.stable_digest for s in replica.stable_proof)
    stable = [n for _, _, n in cluster.network.notices if type(n) is CheckpointStable]
    assert sorted({n.seq for n in stable}) == [4, 8]


def test_log_stays_bounded_over_thousands_of_requests() -> None:
    """§4.3: the log below the stable checkpoint is discarded, so memory stays bounded:
    each replica holds no more than about two checkpoint intervals."""
    interval = 8
    params = ProtocolParams(batch_size=1, checkpoint_interval=interval, log_window=2 * interval)
    cluster = make_cluster(f=1, clients=4, seed=51, params=params, scheme="keyed-hash")
    submit_puts(cluster, per_client=500)
    largest = {"slots": 0, "certificates": 0, "votes": 0}
    network = cluster.network

    def measure() -> bool:
        for replica in cluster.replicas.values():
            largest["slots"] = max(largest["slots"], len(replica.slots))
            largest["certificates"] = max(
                largest["certificates"], len(replica.prepared_certificates)
            )
            largest["votes"] = max(largest["votes"], len(replica.checkpoint_votes))
        return network.idle

    assert network.run_until(measure, max_ticks=500_000)
    assert all(replica.last_executed == 2000 for replica in cluster.replicas.values())
    assert largest["slots"] <= 2 * interval
    assert largest["certificates"] <= 2 * interval
    assert largest["votes"] <= 4
    assert_same_state(cluster, cluster.replicas)


def test_checkpoint_votes_from_one_liar_stay_bounded() -> None:
    """A faulty replica sending CHECKPOINTs for ever higher numbers cannot fill memory."""
    params = ProtocolParams(checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=1, seed=52, params=params)
    liar = cluster.replicas[3]
    replica = cluster.replicas[0]
    for seq in range(4, 4 * 1000, 4):
        signed = liar.auth.sign(Checkpoint(seq, b"x" * 32, 3))
        replica.step(Receive(encode_signed(signed)))
    assert len(replica.checkpoint_votes) <= 8 // 4 + 2
    assert replica.low_watermark == 0


def test_a_cut_off_replica_catches_up_by_state_transfer_and_takes_part_again() -> None:
    """§4.3: a replica behind a stable checkpoint fetches the state, checks it against
    the digest proven by 2f+1 CHECKPOINTs, and then takes part in the protocol again."""
    params = ProtocolParams(batch_size=2, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=2, seed=53, params=params)
    network = cluster.network
    network.isolate(3)
    submit_puts(cluster, per_client=20, prefix="a")
    assert network.run_until_idle(max_ticks=50_000)
    lagging = cluster.replicas[3]
    assert lagging.last_executed == 0
    assert cluster.replicas[0].low_watermark >= 3 * params.checkpoint_interval
    network.heal(3)
    # With replica 3 back and replica 2 gone, progress needs replica 3: it must catch up.
    network.crash(("replica", 2))
    submit_puts(cluster, per_client=20, prefix="b")
    assert network.run_until_idle(max_ticks=100_000)
    assert completed_all(cluster)
    transferred = [n for _, a, n in network.notices if type(n) is StateTransferred and a[1] == 3]
    assert transferred
    assert lagging.last_executed == cluster.replicas[0].last_executed
    assert_same_state(cluster, [0, 1, 3])
    assert_agreement(cluster, [0, 1, 3])
    assert network.executed[3], "the caught-up replica executes requests again"


def test_state_whose_digest_is_not_proven_is_refused() -> None:
    """State transfer accepts a snapshot only if 2f+1 CHECKPOINTs prove its digest."""
    params = ProtocolParams(batch_size=1, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=1, seed=54, params=params)
    network = cluster.network
    network.isolate(3)
    network.submit(0, [kv.put("k", str(i)) for i in range(10)])
    assert network.run_until_idle(max_ticks=50_000)
    honest = cluster.replicas[0]
    lagging = cluster.replicas[3]
    # Let the lagging replica learn the stable checkpoint, so it starts fetching.
    for signed in honest.stable_proof:
        lagging.step(Receive(encode_signed(signed)))
    assert lagging.fetching == honest.low_watermark
    forged_state = kv.KeyValueStore()
    forged_state.execute(kv.put("k", "forged"))
    import msgpack

    forged = msgpack.packb([forged_state.snapshot(), []])
    liar = cluster.replicas[1]
    lie = liar.auth.sign(StateSnapshot(honest.low_watermark, forged, honest.stable_proof, 1))
    lagging.step(Receive(encode_signed(lie)))
    assert lagging.counters.dropped[("STATE", "bad-proof")] == 1
    assert lagging.fetching is not None
    assert lagging.service.data == {}
    truth = liar.auth.sign(
        StateSnapshot(honest.low_watermark, honest.stable_snapshot, honest.stable_proof, 1)
    )
    lagging.step(Receive(encode_signed(truth)))
    assert lagging.fetching is None
    assert lagging.last_executed == honest.low_watermark
    assert lagging.service.data["k"] == "7"


def test_checkpoint_with_a_wrong_sequence_number_is_ignored() -> None:
    params = ProtocolParams(checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=1, seed=55, params=params)
    signed = cluster.replicas[1].auth.sign(Checkpoint(5, b"x" * 32, 1))
    cluster.replicas[0].step(Receive(encode_signed(signed)))
    assert cluster.replicas[0].checkpoint_votes == {}
