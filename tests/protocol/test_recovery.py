"""Crash and restart: a replica rebuilt from its journal never contradicts what it signed
and catches up (restart amnesia is a classic PBFT bug; see PBFT-NOTES.md)."""

from __future__ import annotations

import hashlib

import attrs
import pytest

from pbft import service as kv
from pbft.config import ProtocolParams
from pbft.encoding import encode_signed
from pbft.events import Receive
from pbft.journal import MemoryJournal
from pbft.messages import (
    Commit,
    FetchState,
    NewView,
    PrePrepare,
    Request,
    StateSnapshot,
    batch_digest,
)
from pbft.replica import Replica
from pbft.replica_recovery import DurableState
from pbft.simnet import SimCluster, make_cluster
from tests.conftest import assert_agreement, assert_same_state, completed_all, submit_puts


def journaled(cluster: SimCluster) -> dict[int, MemoryJournal]:
    journals = {replica: MemoryJournal() for replica in cluster.replicas}

    def record(address, effects):  # type: ignore[no-untyped-def]
        if address[0] == "replica":
            journals[address[1]].record(cluster.network.nodes[address], effects)

    cluster.network.on_step = record
    return journals


def no_commits(source, destination, message):  # type: ignore[no-untyped-def]
    """A network intercept: requests prepare everywhere, commit nowhere."""
    return type(message.message) is not Commit


def restart(cluster: SimCluster, replica_id: int, journal: MemoryJournal) -> Replica:
    return cluster.restart(replica_id, journal)


def test_a_restarted_backup_does_not_sign_a_conflicting_prepare() -> None:
    """After a restart, a PRE-PREPARE for (v, n) with another digest than the PREPARE the
    replica sent before the crash is refused."""
    cluster = make_cluster(f=1, clients=2, seed=80)
    journals = journaled(cluster)

    cluster.network.intercept = no_commits
    cluster.network.invoke(0, kv.put("k", "A"))
    cluster.network.run(20)
    assert cluster.replicas[3].slots[1].prepares[3].message.view == 0
    fresh = restart(cluster, 3, journals[3])
    other = cluster.clients[1].auth.sign(Request(1, 1, kv.put("k", "B")))
    batch = (other,)
    conflicting = cluster.replicas[0].auth.sign(PrePrepare(0, 1, batch_digest(batch), batch, 0))
    effects = fresh.step(Receive(encode_signed(conflicting)))
    assert fresh.counters.dropped[("PRE-PREPARE", "conflicting-pre-prepare")] == 1
    assert not any(type(e).__name__ == "SendToReplicas" for e in effects)
    # Without its journal, the same replica would have signed the conflicting PREPARE.
    amnesiac = Replica(3, cluster.config, cluster.replica_signers[3], cluster.params)
    effects = amnesiac.step(Receive(encode_signed(conflicting)))
    assert any(type(e).__name__ == "SendToReplicas" for e in effects)


def test_a_restarted_replica_keeps_its_prepared_certificates_for_the_next_view_change() -> None:
    cluster = make_cluster(f=1, clients=1, seed=81)
    journals = journaled(cluster)

    cluster.network.intercept = no_commits
    cluster.network.invoke(0, kv.put("k", "A"))
    cluster.network.run(50)
    fresh = restart(cluster, 2, journals[2])
    assert 1 in fresh.prepared_certificates
    cluster.network.intercept = None
    cluster.network.crash(("replica", 0))
    assert cluster.network.run_until_idle(50_000)
    assert completed_all(cluster)
    assert_agreement(cluster, [1, 2, 3])


def test_a_replica_restarted_mid_run_catches_up_and_takes_part() -> None:
    params = ProtocolParams(batch_size=2, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=3, seed=82, params=params)
    journals = journaled(cluster)
    submit_puts(cluster, per_client=5, prefix="a")
    cluster.network.run(10)
    cluster.network.crash(("replica", 1))
    submit_puts(cluster, per_client=15, prefix="b")
    assert cluster.network.run_until_idle(200_000)
    restart(cluster, 1, journals[1])
    assert cluster.replicas[1].last_executed < cluster.replicas[0].last_executed
    # Take another replica away: progress now needs the restarted one, which must
    # learn of the stable checkpoints it missed and fetch the state.
    cluster.network.crash(("replica", 3))
    submit_puts(cluster, per_client=15, prefix="c")
    assert cluster.network.run_until_idle(200_000)
    assert completed_all(cluster)
    assert_agreement(cluster, [0, 1, 2])
    assert_same_state(cluster, [0, 1, 2])


def test_all_replicas_restarted_keep_every_acknowledged_write() -> None:
    """Every write a client saw acknowledged is still there after all 3f+1 restart."""
    params = ProtocolParams(batch_size=3, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=2, seed=83, params=params)
    journals = journaled(cluster)
    submit_puts(cluster, per_client=11)
    assert cluster.network.run_until_idle(50_000)
    acknowledged = {
        kv.decode_operation(op.operation)[1][0]: kv.decode_operation(op.operation)[1][1]
        for op in cluster.network.operations
        if op.return_tick is not None
    }
    assert len(acknowledged) == 22
    for replica in list(cluster.replicas):
        cluster.network.crash(("replica", replica))
    for replica in list(cluster.replicas):
        restart(cluster, replica, journals[replica])
    for replica in cluster.replicas.values():
        assert replica.service.data == acknowledged
    cluster.network.submit(0, [kv.get(key) for key in sorted(acknowledged)])
    assert cluster.network.run_until_idle(50_000)
    reads = [kv.decode_result(op.result) for op in cluster.network.operations[-22:]]
    assert reads == [acknowledged[key] for key in sorted(acknowledged)]


def test_a_restarted_new_primary_does_not_propose_again_a_request_of_its_new_view() -> None:
    """Issue 8, hole 4: a new primary restarted after its NEW-VIEW rebuilt O's slots from
    its journal but not which requests they carry, so a client's retransmission made it
    propose the same request again at a fresh sequence number."""
    cluster = make_cluster(f=1, clients=1, seed=85)
    journals = journaled(cluster)

    cluster.network.intercept = no_commits
    cluster.network.invoke(0, kv.put("k", "A"))
    cluster.network.run(20)
    request = cluster.replicas[2].slots[1].pre_prepare.message.batch[0]
    cluster.network.crash(("replica", 0))
    assert cluster.network.run_until(lambda: cluster.replicas[1].view_active
                                     and cluster.replicas[1].view == 1, 20_000)  # fmt: skip
    new_view = cluster.replicas[1].last_new_view
    assert new_view is not None
    assert [p.message.batch for p in new_view.message.pre_prepares] == [(request,)]
    fresh = restart(cluster, 1, journals[1])
    assert fresh.view == 1 and fresh.view_active
    # O's PRE-PREPAREs are back in their slots, byte for byte, before anything arrives.
    o_payloads = [p.payload for p in new_view.message.pre_prepares]
    assert [fresh.slots[1].pre_prepare.payload] == o_payloads and fresh.next_seq == 2
    effects = fresh.step(Receive(encode_signed(request)))
    proposed = [
        e.message.message
        for e in effects
        if type(e).__name__ == "SendToReplicas" and type(e.message.message) is PrePrepare
    ]
    assert all(p.seq == 1 for p in proposed), proposed
    assert fresh.assigned[(request.message.client, request.message.timestamp)] == 1


class UnprunedJournal(MemoryJournal):
    """A journal that never forgets: what is at or below a stable checkpoint, and the
    VIEW-CHANGEs and NEW-VIEWs of past views, all stay (a journal that crashed half-way
    through pruning, or was written by an older version, looks like this)."""

    def _discard_up_to(self, seq: int) -> None:
        pass

    def record(self, replica, effects):  # type: ignore[no-untyped-def]
        kept = dict(self._sent)
        super().record(replica, effects)
        self._sent = {**kept, **self._sent}


def fingerprint(replica: Replica) -> tuple[object, ...]:
    """Everything recovery rebuilds."""
    return (
        replica.view, replica.view_active, replica.low_watermark, replica.last_executed,
        replica.next_seq, replica.checkpoint_state(),
        sorted(
            (seq, None if s.pre_prepare is None else s.pre_prepare.payload,
             sorted(s.prepares), sorted(s.commits), s.prepared)
            for seq, s in replica.slots.items()
        ),
        sorted((seq, c.view) for seq, c in replica.prepared_certificates.items()),
        sorted(replica.committed),
        {seq: sorted(votes) for seq, votes in replica.checkpoint_votes.items()},
        {view: sorted(senders) for view, senders in replica.view_changes.items()},
        None if replica.last_new_view is None else replica.last_new_view.payload,
        sorted(replica.assigned.items()),
    )  # fmt: skip


def test_recovery_ignores_what_a_journal_failed_to_prune() -> None:
    """Entries at or below the stable checkpoint, or of views before the current one,
    bind nothing: a replica recovered from a journal that kept them is the replica
    recovered from one that pruned them."""
    params = ProtocolParams(batch_size=2, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=2, seed=86, params=params)
    pruned = {r: MemoryJournal() for r in cluster.replicas}
    unpruned = {r: UnprunedJournal() for r in cluster.replicas}

    def record(address, effects):  # type: ignore[no-untyped-def]
        if address[0] == "replica":
            node = cluster.network.nodes[address]
            pruned[address[1]].record(node, effects)
            unpruned[address[1]].record(node, effects)

    cluster.network.on_step = record
    submit_puts(cluster, per_client=9, prefix="a")
    assert cluster.network.run_until_idle(100_000)

    cluster.network.intercept = no_commits  # a request prepared, not committed: O holds it
    cluster.network.invoke(0, kv.put("o", "1"))
    cluster.network.run(20)
    cluster.network.intercept = None
    cluster.network.crash(("replica", 0))  # a view change, then more checkpoints
    submit_puts(cluster, per_client=9, prefix="b")
    assert cluster.network.run_until_idle(200_000)
    assert cluster.replicas[1].view >= 1 and cluster.replicas[1].low_watermark >= 8
    new_view = cluster.replicas[1].last_new_view
    assert new_view is not None and new_view.message.pre_prepares
    assert (
        max(p.message.seq for p in new_view.message.pre_prepares)
        <= cluster.replicas[1].low_watermark
    )
    for replica in (1, 2, 3):
        full, kept = unpruned[replica].load(), pruned[replica].load()
        assert len(full.sent) > len(kept.sent) and len(full.committed) > len(kept.committed)
        one, two = cluster.fresh_replica(replica), cluster.fresh_replica(replica)
        effects_one, effects_two = one.recover(kept), two.recover(full)
        assert fingerprint(one) == fingerprint(two), replica
        for recovered in (one, two):  # slots hold (h, h + L] only
            assert all(seq > recovered.low_watermark for seq in recovered.slots), replica
        assert [repr(e) for e in effects_one] == [repr(e) for e in effects_two]


def test_recovered_slots_hold_only_the_current_views_pre_prepares() -> None:
    """A certificate prepared in an older view goes back into the certificates kept for
    the next view change, not into a slot of the current view as if prepared there."""
    cluster = make_cluster(f=1, clients=1, seed=87)
    journals = journaled(cluster)

    cluster.network.intercept = no_commits
    cluster.network.invoke(0, kv.put("k", "A"))
    cluster.network.run(20)
    state = journals[2].load()
    assert [c.view for c in state.certificates] == [0]
    later = attrs.evolve(state, view=1, view_active=True, sent=())
    fresh = cluster.fresh_replica(2)
    fresh.recover(later)
    assert 1 in fresh.prepared_certificates
    assert all(
        s.pre_prepare is None or s.pre_prepare.message.view == 1 for s in fresh.slots.values()
    )


def test_recovery_mid_view_change_ignores_view_changes_for_earlier_views() -> None:
    """A replica restarted while changing view to v + 1 re-records its VIEW-CHANGE for
    v + 1 only: the one it sent for v, which a journal may still hold, binds nothing."""
    cluster = make_cluster(f=1, clients=1, seed=88)
    pruned = {r: MemoryJournal() for r in cluster.replicas}
    unpruned = {r: UnprunedJournal() for r in cluster.replicas}

    def record(address, effects):  # type: ignore[no-untyped-def]
        if address[0] == "replica":
            node = cluster.network.nodes[address]
            pruned[address[1]].record(node, effects)
            unpruned[address[1]].record(node, effects)

    def no_new_views(source, destination, message):  # type: ignore[no-untyped-def]
        return type(message.message) is not NewView

    cluster.network.on_step = record
    cluster.network.intercept = no_new_views
    cluster.network.crash(("replica", 0))
    cluster.network.invoke(0, kv.put("k", "A"))
    replica = cluster.replicas[2]
    assert cluster.network.run_until(lambda: replica.view >= 2 and not replica.view_active, 50_000)
    full, kept = unpruned[2].load(), pruned[2].load()
    views = sorted(
        s.message.new_view for s in full.sent if type(s.message).__name__ == "ViewChange"
    )
    assert views[0] < replica.view == views[-1]
    one, two = cluster.fresh_replica(2), cluster.fresh_replica(2)
    one.recover(kept)
    two.recover(full)
    assert fingerprint(one) == fingerprint(two)
    assert sorted(two.view_changes) == [replica.view]


def test_recovery_from_an_empty_journal_is_a_fresh_replica() -> None:
    cluster = make_cluster(f=1, clients=1, seed=89)
    for empty in (MemoryJournal().load(), DurableState()):
        recovered = cluster.fresh_replica(2)
        recovered.recover(empty)
        assert fingerprint(recovered) == fingerprint(cluster.fresh_replica(2))


@pytest.mark.parametrize(("interval", "requests"), [(32, 3), (4, 5)])
def test_a_restarted_primary_goes_on_with_the_next_sequence_number(
    interval: int, requests: int
) -> None:
    """Also after a stable checkpoint, whatever h is."""
    params = ProtocolParams(checkpoint_interval=interval, log_window=2 * interval)
    cluster = make_cluster(f=1, clients=1, seed=90, params=params)
    journals = journaled(cluster)
    cluster.network.submit(0, [kv.put(f"k{i}", "v") for i in range(requests)])
    assert cluster.network.run_until_idle(50_000)
    assert cluster.replicas[0].last_executed == requests
    fresh = restart(cluster, 0, journals[0])
    signed = cluster.clients[0].auth.sign(Request(0, 10, kv.put("k", "w")))
    effects = fresh.step(Receive(encode_signed(signed)))
    proposed = [
        e.message.message.seq
        for e in effects
        if type(e).__name__ == "SendToReplicas" and type(e.message.message) is PrePrepare
    ]
    assert proposed == [requests + 1]


def test_a_restarted_replica_serves_the_state_of_its_stable_checkpoint() -> None:
    params = ProtocolParams(checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=1, seed=91, params=params)
    journals = journaled(cluster)
    cluster.network.submit(0, [kv.put(f"k{i}", "v") for i in range(6)])
    assert cluster.network.run_until_idle(50_000)
    fresh = restart(cluster, 0, journals[0])
    assert fresh.low_watermark == 4
    effects = fresh.step(Receive(encode_signed(cluster.replicas[3].auth.sign(FetchState(4, 3)))))
    states = [e.message.message for e in effects if type(e.message.message) is StateSnapshot]
    assert [s.seq for s in states] == [4]
    assert hashlib.sha256(states[0].snapshot).digest() == fresh.stable_digest


def test_recovery_keeps_the_highest_view_certificate_per_seq() -> None:
    """Two certificates for one seq in a journal (views 0 and 1, in either order): the
    one of the later view is the one a VIEW-CHANGE must carry (§4.4)."""
    cluster = make_cluster(f=1, clients=1, seed=92)
    journals = journaled(cluster)

    cluster.network.intercept = no_commits
    cluster.network.invoke(0, kv.put("k", "A"))
    cluster.network.run(20)
    state = journals[2].load()
    (old,) = state.certificates
    pre_prepare = cluster.replicas[1].auth.sign(attrs.evolve(old.pre_prepare.message, view=1,
                                                             sender=1))  # fmt: skip
    newer = attrs.evolve(old, pre_prepare=pre_prepare)
    for certificates in ((old, newer), (newer, old)):
        fresh = cluster.fresh_replica(2)
        fresh.recover(attrs.evolve(state, view=1, view_active=False, certificates=certificates))
        assert fresh.prepared_certificates[1].view == 1


def test_a_restarted_replica_keeps_the_prepares_of_its_prepared_slots() -> None:
    cluster = make_cluster(f=1, clients=1, seed=93)
    journals = journaled(cluster)

    cluster.network.intercept = no_commits
    cluster.network.invoke(0, kv.put("k", "A"))
    cluster.network.run(20)
    (certificate,) = journals[2].load().certificates
    fresh = restart(cluster, 2, journals[2])
    assert fresh.slots[1].prepared
    assert {p.message.sender for p in certificate.prepares} <= set(fresh.slots[1].prepares)


def test_a_restarted_backup_never_prepares_two_digests_for_one_slot() -> None:
    """The crash came after the backup's PREPARE and before it saw a quorum (so no
    PRE-PREPARE is kept, only its own PREPARE): a PRE-PREPARE with another digest, above
    or below the prepared one, is refused after the restart."""
    cluster = make_cluster(f=1, clients=3, seed=94)
    journals = journaled(cluster)

    def only_requests_and_pre_prepares_to_3(source, destination, message):  # type: ignore[no-untyped-def]
        kind = type(message.message)
        return kind is Request or (destination == ("replica", 3) and kind is PrePrepare)

    cluster.network.intercept = only_requests_and_pre_prepares_to_3
    cluster.network.invoke(0, kv.put("k", "A"))
    cluster.network.run(20)
    held = cluster.replicas[3].slots[1].prepares[3].message.digest
    candidates = [(cluster.clients[1].auth.sign(Request(1, 1, kv.put("k", f"B{i}"))),)
                  for i in range(16)]  # fmt: skip
    below = next(b for b in candidates if batch_digest(b) < held)
    above = next(b for b in candidates if batch_digest(b) > held)
    for batch in (below, above):
        fresh = restart(cluster, 3, journals[3])
        assert 1 not in fresh.slots or fresh.slots[1].pre_prepare is None
        pre_prepare = cluster.replicas[0].auth.sign(PrePrepare(0, 1, batch_digest(batch), batch, 0))
        effects = fresh.step(Receive(encode_signed(pre_prepare)))
        assert fresh.counters.dropped[("PRE-PREPARE", "conflicting-pre-prepare")] == 1
        assert not any(type(e).__name__ == "SendToReplicas" for e in effects)


def test_a_restart_at_a_checkpoint_of_interval_one_restores_the_state() -> None:
    params = ProtocolParams(checkpoint_interval=1, log_window=4)
    cluster = make_cluster(f=1, clients=1, seed=95, params=params)
    journals = journaled(cluster)
    cluster.network.submit(0, [kv.put("k", "v"), kv.put("j", "w")])
    assert cluster.network.run_until_idle(50_000)
    replica = cluster.replicas[2]
    assert replica.low_watermark >= 1
    fresh = restart(cluster, 2, journals[2])
    assert fresh.service.data == replica.service.data
    assert fresh.last_executed == replica.last_executed
