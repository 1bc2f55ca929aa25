"""View changes (Castro & Liskov §4.4, TOCS §4.5) through the in-memory network."""

from __future__ import annotations

import attrs
import pytest

from pbft import service as kv
from pbft.config import ProtocolParams
from pbft.encoding import encode_signed
from pbft.events import NewViewEntered, Receive, TimerFired, ViewChangeStarted
from pbft.messages import ViewChange
from pbft.simnet import make_cluster
from tests.conftest import (
    assert_agreement,
    assert_same_state,
    completed_all,
    executed_requests,
    submit_puts,
)


def notices(cluster, kind):  # type: ignore[no-untyped-def]
    return [(tick, address, n) for tick, address, n in cluster.network.notices if type(n) is kind]


@pytest.mark.parametrize("f", [1, 2])
def test_f_crashed_backups_do_not_stop_the_cluster(f: int) -> None:
    """§4: with at most f faulty replicas the remaining 2f+1 still commit."""
    cluster = make_cluster(f=f, clients=2, seed=20 + f)
    crashed = list(range(cluster.config.n - f, cluster.config.n))
    for replica in crashed:
        cluster.network.crash(("replica", replica))
    submit_puts(cluster, per_client=20)
    assert cluster.network.run_until_idle(max_ticks=100_000)
    honest = [r for r in cluster.replicas if r not in crashed]
    assert_agreement(cluster, honest)
    assert_same_state(cluster, honest)
    assert all(cluster.replicas[r].view == 0 for r in honest)


@pytest.mark.parametrize("f", [1, 2])
def test_crashed_primary_causes_a_view_change_and_requests_keep_committing(f: int) -> None:
    """§4.4: backups whose requests wait too long move to view 1; the new primary takes over."""
    cluster = make_cluster(f=f, clients=3, seed=30 + f)
    submit_puts(cluster, per_client=20)
    cluster.network.run(40)
    cluster.network.crash(("replica", 0))
    assert cluster.network.run_until_idle(max_ticks=200_000)
    assert completed_all(cluster)
    honest = list(range(1, cluster.config.n))
    assert_agreement(cluster, honest)
    assert_same_state(cluster, honest)
    assert all(cluster.replicas[r].view >= 1 for r in honest)
    assert notices(cluster, NewViewEntered)
    for replica in honest:
        requests = executed_requests(cluster, replica)
        assert len(requests) == len(set(requests)) == 60


def test_primary_cut_off_is_replaced_and_the_cluster_goes_on() -> None:
    cluster = make_cluster(f=1, clients=2, seed=40)
    cluster.network.isolate(0)
    submit_puts(cluster, per_client=10)
    assert cluster.network.run_until_idle(max_ticks=100_000)
    assert all(cluster.replicas[r].view == 1 for r in (1, 2, 3))
    assert_agreement(cluster, [1, 2, 3])


def test_request_prepared_before_the_view_change_executes_exactly_once_after_it() -> None:
    """§4.4: a request prepared in view v survives into v+1 through NEW-VIEW's O, and
    executes once. Here the primary's COMMITs and every replica's COMMITs are lost in
    view 0, so the request is prepared everywhere but committed nowhere."""
    cluster = make_cluster(f=1, clients=1, seed=41)
    network = cluster.network

    def lose_commits_of_view_zero(source, destination, message):  # type: ignore[no-untyped-def]
        inner = message.message
        return not (type(inner).__name__ == "Commit" and inner.view == 0)

    network.intercept = lose_commits_of_view_zero
    network.submit(0, [kv.put("survivor", "1")])
    network.run(200)
    assert all(1 in r.prepared_certificates for r in cluster.replicas.values())
    assert all(r.last_executed == 0 for r in cluster.replicas.values())
    network.crash(("replica", 0))
    network.intercept = None
    assert network.run_until_idle(max_ticks=50_000)
    entered = notices(cluster, NewViewEntered)
    assert entered and all(n.reissued == 1 for _, _, n in entered)
    for replica in (1, 2, 3):
        assert executed_requests(cluster, replica) == [(0, 1)]
        assert cluster.network.executed[replica][0].view == 1
    assert kv.decode_result(network.operations[0].result) is True


def test_new_view_fills_gaps_with_null_requests() -> None:
    """§4.4: sequence numbers between min-s and max-s with no certificate get a null request."""
    # Seq 2 must go out while seq 1 is in flight: no adaptive batching here.
    params = ProtocolParams(partial_batches_in_flight=4)
    cluster = make_cluster(f=1, clients=2, seed=42, params=params)
    network = cluster.network

    # Seq 1 (client 0's request) never gets its PREPAREs through; seq 2 (client 1's) prepares.
    def block_first_prepares(source, destination, message):  # type: ignore[no-untyped-def]
        inner = message.message
        name = type(inner).__name__
        if name == "Prepare" and inner.seq == 1:
            return False
        return not (name == "Commit" and inner.view == 0)

    network.intercept = block_first_prepares
    network.invoke(0, kv.put("a", "1"))
    network.run(5)
    network.invoke(1, kv.put("b", "2"))
    network.run(200)
    assert all(
        2 in r.prepared_certificates and 1 not in r.prepared_certificates
        for r in cluster.replicas.values()
    )
    network.crash(("replica", 0))
    network.intercept = None
    assert network.run_until_idle(max_ticks=50_000)
    entered = notices(cluster, NewViewEntered)
    assert entered and all((n.reissued, n.null_requests) == (1, 1) for _, _, n in entered)
    assert completed_all(cluster)
    assert_agreement(cluster, [1, 2, 3])
    assert_same_state(cluster, [1, 2, 3])


def test_view_change_timeout_doubles_for_each_further_view_change() -> None:
    """§4.5.2: if the NEW-VIEW for v+1 does not come in T, move to v+2 and wait 2T.

    Replica 0 of a 7-replica cluster is fed 2f VIEW-CHANGEs for each view it
    enters (so its timer starts) but no NEW-VIEW ever comes.
    """
    params = ProtocolParams(view_change_timeout_ticks=100)
    cluster = make_cluster(f=2, clients=1, seed=43, params=params)
    replica = cluster.replicas[0]
    timeouts = []
    for new_view in range(1, 6):
        effects = replica.step(TimerFired("view-change"))
        assert replica.view == new_view
        assert not replica.view_active
        others = [r for r in range(1, 7) if r != cluster.config.primary(new_view)][:4]
        for other in others:
            view_change = cluster.replicas[other].auth.sign(ViewChange(new_view, 0, (), (), other))
            effects += replica.step(Receive(encode_signed(view_change)))
        timers = [
            e.ticks for e in effects if type(e).__name__ == "SetTimer" and e.name == "view-change"
        ]
        timeouts.append(timers[-1])
    assert timeouts == [100, 200, 400, 800, 1600]


def test_f_plus_one_view_changes_for_higher_views_pull_a_replica_along() -> None:
    """§4.5.2: on f+1 VIEW-CHANGEs for views above its own, a replica joins the smallest."""
    cluster = make_cluster(f=1, clients=1, seed=44)
    replica = cluster.replicas[3]
    for sender, view in ((1, 5), (2, 3)):
        signed = cluster.replicas[sender].auth.sign(ViewChange(view, 0, (), (), sender))
        replica.step(Receive(encode_signed(signed)))
    assert replica.view == 3
    assert not replica.view_active


def test_a_single_view_change_for_a_far_higher_view_moves_nobody() -> None:
    """§4.5.2: one replica (possibly faulty) alone cannot push others into a view change."""
    cluster = make_cluster(f=1, clients=1, seed=45)
    signed = cluster.replicas[2].auth.sign(ViewChange(1_000_000, 0, (), (), 2))
    for replica in (0, 1, 3):
        cluster.replicas[replica].step(Receive(encode_signed(signed)))
        assert cluster.replicas[replica].view == 0
        assert cluster.replicas[replica].view_active
    cluster.network.submit(0, [kv.put("a", "1")])
    assert cluster.network.run_until_idle(max_ticks=10_000)


def test_messages_of_a_higher_view_are_not_processed_before_its_new_view() -> None:
    """A PREPARE for view 1 arriving in view 0 is buffered, never counted in view 0 (and
    one from the primary of view 1, which never sends PREPAREs in it, is not kept)."""
    cluster = make_cluster(f=1, clients=1, seed=46)
    from pbft.messages import Prepare

    replica = cluster.replicas[3]
    for sender in (0, 1, 2):
        prepare = cluster.replicas[sender].auth.sign(Prepare(1, 1, b"d" * 32, sender))
        replica.step(Receive(encode_signed(prepare)))
    assert replica.slots == {}
    assert sorted(replica.future) == [0, 2]
    assert replica.counters.dropped[("PREPARE", "prepare-from-primary")] == 1


def test_lost_view_change_messages_are_resent() -> None:
    """A VIEW-CHANGE lost on the way is sent again while the view change is incomplete."""
    cluster = make_cluster(f=1, clients=2, seed=47)
    network = cluster.network
    dropped = {"count": 0}

    def lose_first_view_changes(source, destination, message):  # type: ignore[no-untyped-def]
        if type(message.message).__name__ == "ViewChange" and dropped["count"] < 4:
            dropped["count"] += 1
            return False
        return True

    network.intercept = lose_first_view_changes
    network.crash(("replica", 0))
    submit_puts(cluster, per_client=5)
    assert network.run_until_idle(max_ticks=100_000)
    assert dropped["count"] == 4
    assert notices(cluster, ViewChangeStarted)
    assert_agreement(cluster, [1, 2, 3])


def test_a_sender_going_back_to_a_lower_view_is_not_counted_twice() -> None:
    """One faulty replica sending VIEW-CHANGE for view 5 and then view 3 is still one
    replica: it must not satisfy the f+1 rule alone (§4.5.2)."""
    cluster = make_cluster(f=1, clients=1, seed=48)
    replica = cluster.replicas[3]
    for view in (5, 3):
        signed = cluster.replicas[2].auth.sign(ViewChange(view, 0, (), (), 2))
        replica.step(Receive(encode_signed(signed)))
    assert (replica.view, replica.view_active) == (0, True)
    assert replica.counters.dropped[("VIEW-CHANGE", "superseded")] == 1


def test_one_faulty_replica_cannot_fill_the_future_view_buffer_for_others() -> None:
    """Each sender gets its share of the buffer; messages for views beyond the next are
    dropped, so early honest messages of the next view are still kept."""
    from pbft.messages import Prepare

    cluster = make_cluster(f=1, clients=1, seed=49)
    replica = cluster.replicas[3]
    faulty = cluster.replicas[2]
    for seq in range(1, 2000):
        spam = faulty.auth.sign(Prepare(1, seq % 64 + 1, seq.to_bytes(32, "big"), 2))
        replica.step(Receive(encode_signed(spam)))
    far = faulty.auth.sign(Prepare(10**9, 1, b"d" * 32, 2))
    replica.step(Receive(encode_signed(far)))
    assert replica.counters.dropped[("PREPARE", "future-view")] == 1
    honest = cluster.replicas[0].auth.sign(Prepare(1, 1, b"e" * 32, 0))
    replica.step(Receive(encode_signed(honest)))
    assert replica.future[0] == [honest]
    assert len(replica.future[2]) == cluster.params.future_buffer_messages // 4


def test_the_future_view_buffer_is_bounded_in_bytes_per_sender() -> None:
    """Hole 3 of issue 8: one replica could pin ~200 MB with big PRE-PREPAREs for the
    next view, kept by count. Now each sender's share is bounded in bytes, a
    PRE-PREPARE is kept only from the primary of its view, and one bigger than any
    honest PRE-PREPARE is refused before its signature is checked."""
    from pbft import service as kv
    from pbft.messages import PrePrepare, Request, batch_digest

    params = ProtocolParams(future_buffer_bytes=400_000)
    cluster = make_cluster(f=1, clients=1, seed=51, params=params)
    replica = cluster.replicas[3]
    next_primary = cluster.replicas[1]
    client = cluster.clients[0]
    batch = tuple(client.auth.sign(Request(0, t, kv.put("k", "v" * 3000))) for t in range(16))
    for seq in range(1, 60):
        pre_prepare = PrePrepare(1, seq, batch_digest(batch), batch, 1)
        replica.step(Receive(encode_signed(next_primary.auth.sign(pre_prepare))))
    held = replica.store_bytes()["future"]
    share = max(params.future_buffer_bytes // 4, replica.bounds.pre_prepare)
    assert 0 < held <= share <= replica.store_limits()["future"] // 4
    assert replica.counters.dropped[("PRE-PREPARE", "future-view-buffer-full")] > 0
    # Not from the primary of view 1: not kept at all.
    impostor = cluster.replicas[2].auth.sign(PrePrepare(1, 1, batch_digest(batch), batch, 2))
    replica.step(Receive(encode_signed(impostor)))
    assert 2 not in replica.future
    assert replica.counters.dropped[("PRE-PREPARE", "not-primary")] == 1
    # Bigger than any honest PRE-PREPARE: refused on its size, signature unchecked.
    huge = (client.auth.sign(Request(0, 99, b"x" * replica.bounds.pre_prepare)),)
    oversized = next_primary.auth.sign(PrePrepare(1, 70, batch_digest(huge), huge, 1))
    forged = attrs.evolve(oversized, signature=bytes(64))
    replica.step(Receive(encode_signed(forged)))
    assert replica.counters.dropped[("PRE-PREPARE", "too-large")] == 1
    assert replica.counters.dropped[("PRE-PREPARE", "bad-signature")] == 0


def test_a_replica_changing_view_stops_proposing() -> None:
    """A primary that starts a view change drops its queue: a stale queue must never
    yield a PRE-PREPARE that conflicts with the next NEW-VIEW's O."""
    params = ProtocolParams(checkpoint_interval=1, log_window=1)
    cluster = make_cluster(f=1, clients=3, seed=50, params=params)
    cluster.network.crash(("replica", 1))
    cluster.network.crash(("replica", 2))
    for client in range(3):
        cluster.network.invoke(client, kv.put(f"k{client}", "v"))
    cluster.network.run(5)
    primary = cluster.replicas[0]
    assert primary.queue, "the window is full, so requests wait in the primary's queue"
    primary.step(TimerFired("view-change"))
    assert primary.queue == {}


def test_a_backup_relays_the_new_view_over_its_own_authenticated_channel() -> None:
    """Every NEW-VIEW from the new primary (replica 1) to replica 3 is lost; replica 2's
    copy, signed by replica 1, reaches replica 3 on replica 2's authenticated connection
    and counts. Until the channel rule admitted relayed signed messages this was
    channel-mismatch, so in the runtime (every connection authenticated) only the new
    primary itself could resend a NEW-VIEW."""
    cluster = make_cluster(f=1, clients=1, seed=291)
    network = cluster.network
    assert network.channels

    def lose_new_view_to_3(source, destination, message):  # type: ignore[no-untyped-def]
        return not (destination == ("replica", 3) and type(message.message).__name__ == "NewView")

    network.intercept = lose_new_view_to_3
    network.crash(("replica", 0))
    submit_puts(cluster, per_client=1)
    network.run_until(lambda: cluster.replicas[2].last_new_view is not None, 10_000)
    stranded = cluster.replicas[3]
    assert stranded.view == 1 and not stranded.view_active
    relayed = encode_signed(cluster.replicas[2].last_new_view)
    network._step(("replica", 3), Receive(relayed, channel=("replica", 2)))
    assert stranded.view == 1 and stranded.view_active
    assert stranded.counters.accepted["NEW-VIEW"] == 1
    assert stranded.counters.dropped_for("channel-mismatch") == 0
