"""The normal-case protocol (Castro & Liskov §4.2) through the in-memory network."""

from __future__ import annotations

import pytest

from pbft import service as kv
from pbft.config import ConfigError, ProtocolParams
from pbft.encoding import encode_signed
from pbft.events import Executed, Receive, SendToReplicas
from pbft.messages import PrePrepare, Request
from pbft.simnet import make_cluster
from tests.conftest import (
    assert_agreement,
    assert_same_state,
    completed_all,
    executed_requests,
    submit_puts,
)


@pytest.mark.parametrize("f", [1, 2])
def test_many_requests_from_several_clients_commit_everywhere(f: int) -> None:
    """n = 4 and n = 7: all honest replicas execute the same sequence with the same state."""
    cluster = make_cluster(f=f, clients=3, seed=f)
    submit_puts(cluster, per_client=40)
    assert cluster.network.run_until_idle(max_ticks=100_000)
    assert completed_all(cluster)
    assert_agreement(cluster)
    assert_same_state(cluster, cluster.replicas)
    for replica in cluster.replicas.values():
        assert replica.view == 0
        assert len(executed_requests(cluster, replica.id)) == 120


def test_results_are_those_of_the_key_value_store() -> None:
    """§4.1: the client accepts the result f+1 replicas agree on: the service's result."""
    cluster = make_cluster(f=1, clients=1, seed=3)
    operations = [
        kv.put("a", "1"),
        kv.get("a"),
        kv.cas("a", "1", "2"),
        kv.cas("a", "1", "3"),
        kv.get("a"),
        kv.delete("a"),
        kv.get("a"),
        kv.cas("a", None, "4"),
    ]
    cluster.network.submit(0, operations)
    assert cluster.network.run_until_idle(max_ticks=10_000)
    results = [kv.decode_result(op.result) for op in cluster.network.operations]
    assert results == [True, "1", True, False, "2", True, None, True]


def test_batch_size_one_assigns_one_request_per_sequence_number() -> None:
    """Batching is configurable and 1 must work: one request per PRE-PREPARE."""
    params = ProtocolParams(batch_size=1, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=4, seed=4, params=params)
    submit_puts(cluster, per_client=10)
    assert cluster.network.run_until_idle(max_ticks=50_000)
    for entry in cluster.network.executed[0]:
        assert len(entry.requests) == 1
    assert cluster.replicas[0].last_executed == 40
    assert_agreement(cluster)


def test_primary_batches_requests_when_the_window_is_full() -> None:
    """§4.2: requests that arrive while the window is full travel together in one batch."""
    params = ProtocolParams(batch_size=8, checkpoint_interval=1, log_window=1)
    cluster = make_cluster(f=1, clients=8, seed=5, params=params)
    submit_puts(cluster, per_client=5)
    assert cluster.network.run_until_idle(max_ticks=50_000)
    sizes = [len(entry.requests) for entry in cluster.network.executed[0]]
    assert sum(sizes) == 40
    assert max(sizes) > 1
    assert_agreement(cluster)


def test_execution_is_strictly_in_sequence_order_despite_reordering() -> None:
    """§4.2: a replica executes n only after every lower sequence number.

    A replica that falls behind a stable checkpoint skips ahead by state
    transfer (§4.3) instead, so the executed numbers rise strictly and every
    gap ends at a stable checkpoint.
    """
    from pbft.simnet import LinkFaults

    faults = LinkFaults(min_delay_ticks=1, max_delay_ticks=40)
    cluster = make_cluster(f=1, clients=4, seed=6, faults=faults)
    submit_puts(cluster, per_client=15)
    assert cluster.network.run_until_idle(max_ticks=100_000)
    for replica in cluster.replicas:
        seqs = [entry.seq for entry in cluster.network.executed[replica]]
        interval = cluster.params.checkpoint_interval
        for before, after in zip([0, *seqs], seqs, strict=False):
            assert after > before
            if after != before + 1:
                assert (after - 1) % interval == 0, f"gap {before}->{after} not at a checkpoint"
    assert_agreement(cluster)


def test_each_request_executes_at_most_once_and_duplicates_get_the_cached_reply() -> None:
    """§4.1: replicas execute (client, timestamp) at most once and resend the last reply."""
    cluster = make_cluster(f=1, clients=1, seed=7)
    cluster.network.submit(0, [kv.put("x", "1")])
    assert cluster.network.run_until_idle(max_ticks=10_000)
    client = cluster.clients[0]
    # Replay the client's request (same timestamp) to every replica.
    from pbft.encoding import encode_signed
    from pbft.messages import Request

    old = client.auth.sign(Request(0, client.timestamp, kv.put("x", "1")))
    replies_before = sum(1 for _ in cluster.network.notices)
    for replica in cluster.replicas:
        effects = cluster.replicas[replica].step(_receive(encode_signed(old)))
        # The cached REPLY, and the timer of the period in which copies get no other.
        kinds = [type(e).__name__ for e in effects]
        assert kinds.count("SendToClient") == 1 and set(kinds) <= {"SendToClient", "SetTimer"}
        reply = next(e for e in effects if type(e).__name__ == "SendToClient")
        assert kv.decode_result(reply.message.message.result) is True
    for replica in cluster.replicas:
        assert executed_requests(cluster, replica) == [(0, client.timestamp)]
    assert replies_before == len(cluster.network.notices)


def test_a_conflicting_pre_prepare_for_the_same_view_and_seq_is_refused() -> None:
    """§4.2: a backup accepts no PRE-PREPARE for (v, n) with another digest than the first."""
    cluster = make_cluster(f=1, clients=2, seed=8)
    primary = cluster.replicas[0]
    from pbft.encoding import encode_signed
    from pbft.messages import PrePrepare, Request, batch_digest

    requests = [cluster.clients[c].auth.sign(Request(c, 1, kv.put("k", str(c)))) for c in range(2)]
    first = primary.auth.sign(PrePrepare(0, 1, batch_digest((requests[0],)), (requests[0],), 0))
    second = primary.auth.sign(PrePrepare(0, 1, batch_digest((requests[1],)), (requests[1],), 0))
    backup = cluster.replicas[1]
    backup.step(_receive(encode_signed(first)))
    backup.step(_receive(encode_signed(second)))
    assert backup.slots[1].pre_prepare is not None
    assert backup.slots[1].pre_prepare.message.digest == first.message.digest
    assert backup.counters.dropped[("PRE-PREPARE", "conflicting-pre-prepare")] == 1


def test_a_pre_prepare_whose_digest_is_not_that_of_its_batch_is_refused() -> None:
    """§4.2: d must be the digest of the batch actually carried."""
    cluster = make_cluster(f=1, clients=2, seed=9)
    from pbft.encoding import encode_signed
    from pbft.messages import PrePrepare, Request, batch_digest

    requests = [cluster.clients[c].auth.sign(Request(c, 1, kv.put("k", str(c)))) for c in range(2)]
    lying = cluster.replicas[0].auth.sign(
        PrePrepare(0, 1, batch_digest((requests[1],)), (requests[0],), 0)
    )
    backup = cluster.replicas[1]
    effects = backup.step(_receive(encode_signed(lying)))
    assert 1 not in backup.slots
    assert backup.counters.dropped[("PRE-PREPARE", "bad-digest")] == 1
    assert not any(type(e).__name__ == "SendToReplicas" for e in effects)


def test_pre_prepare_outside_the_watermarks_is_refused() -> None:
    """§4.2: the sequence number must lie in (h, h+L]."""
    params = ProtocolParams(checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=1, seed=10, params=params)
    from pbft.encoding import encode_signed
    from pbft.messages import PrePrepare, Request, batch_digest

    request = cluster.clients[0].auth.sign(Request(0, 1, kv.put("k", "v")))
    far = cluster.replicas[0].auth.sign(PrePrepare(0, 9, batch_digest((request,)), (request,), 0))
    backup = cluster.replicas[1]
    backup.step(_receive(encode_signed(far)))
    assert 9 not in backup.slots
    assert backup.counters.dropped[("PRE-PREPARE", "outside-watermarks")] == 1


def test_pre_prepare_from_a_backup_is_refused() -> None:
    """§4.1: only the primary of the view (v mod n) assigns sequence numbers."""
    cluster = make_cluster(f=1, clients=1, seed=11)
    from pbft.encoding import encode_signed
    from pbft.messages import PrePrepare, Request, batch_digest

    request = cluster.clients[0].auth.sign(Request(0, 1, kv.put("k", "v")))
    usurper = cluster.replicas[2].auth.sign(
        PrePrepare(0, 1, batch_digest((request,)), (request,), 2)
    )
    backup = cluster.replicas[1]
    backup.step(_receive(encode_signed(usurper)))
    assert 1 not in backup.slots
    assert backup.counters.dropped[("PRE-PREPARE", "not-primary")] == 1


def test_executed_notices_carry_view_seq_and_digest() -> None:
    cluster = make_cluster(f=1, clients=1, seed=12)
    cluster.network.submit(0, [kv.put("a", "b")])
    assert cluster.network.run_until_idle(max_ticks=10_000)
    (entry,) = cluster.network.executed[1]
    assert isinstance(entry, Executed)
    assert (entry.seq, entry.view, len(entry.digest)) == (1, 0, 32)


def _receive(data: bytes):  # type: ignore[no-untyped-def]
    from pbft.events import Receive

    return Receive(data)


def test_oversized_requests_are_refused_everywhere() -> None:
    """A request above max_request_bytes is refused by the client, by replicas, and inside
    a PRE-PREPARE, so one faulty client cannot make PRE-PREPAREs too large to accept."""
    from pbft.encoding import encode_signed
    from pbft.events import Invoke
    from pbft.messages import PrePrepare, Request, batch_digest

    cluster = make_cluster(f=1, clients=1, seed=13)
    big = b"x" * cluster.params.max_request_bytes
    with pytest.raises(ValueError, match="at most"):
        cluster.clients[0].step(Invoke(big))
    signed = cluster.clients[0].auth.sign(Request(0, 1, big))
    replica = cluster.replicas[1]
    replica.step(_receive(encode_signed(signed)))
    assert replica.counters.dropped[("REQUEST", "request-too-large")] == 1
    carrier = cluster.replicas[0].auth.sign(PrePrepare(0, 1, batch_digest((signed,)), (signed,), 0))
    replica.step(_receive(encode_signed(carrier)))
    assert replica.counters.dropped[("PRE-PREPARE", "request-too-large")] == 1
    # A request of exactly the limit is one a client may send, alone or in a batch.
    operation = big
    while len(cluster.clients[0].auth.sign(Request(0, 2, operation)).payload) > len(big):
        operation = operation[:-1]
    largest = cluster.clients[0].auth.sign(Request(0, 2, operation))
    assert len(largest.payload) == cluster.params.max_request_bytes
    batch = (largest,)
    carrier = cluster.replicas[0].auth.sign(PrePrepare(0, 1, batch_digest(batch), batch, 0))
    other = cluster.replicas[2]
    other.step(_receive(encode_signed(carrier)))
    assert other.slots[1].pre_prepare is not None
    assert other.counters.dropped_for("request-too-large") == 0


def test_a_cluster_larger_than_3f_plus_1_uses_larger_quorums() -> None:
    """With n = 5 and f = 1 a quorum is ceil((n+f+1)/2) = 4, so any two quorums share
    f+1 replicas; the cluster still commits with f replicas crashed."""
    cluster = make_cluster(f=1, n=5, clients=2, seed=14)
    assert cluster.config.quorum == 4
    cluster.network.crash(("replica", 4))
    submit_puts(cluster, per_client=10)
    assert cluster.network.run_until_idle(max_ticks=50_000)
    assert_agreement(cluster, [0, 1, 2, 3])
    assert_same_state(cluster, [0, 1, 2, 3])


def _requests_to_primary(params: ProtocolParams, clients: list[int]) -> list[list[int]]:
    """Deliver one request from each client to the primary in turn; the batch sizes of
    the PRE-PREPAREs each delivery sends (nothing executes: no backup is stepped)."""
    cluster = make_cluster(f=1, clients=max(clients) + 1, seed=6, params=params)
    primary = cluster.replicas[0]
    sizes = []
    for client in clients:
        request = cluster.clients[client].auth.sign(Request(client, 1, kv.put(f"k{client}", "v")))
        effects = primary.step(Receive(encode_signed(request)))
        sizes.append(
            [
                len(effect.message.message.batch)
                for effect in effects
                if type(effect) is SendToReplicas and type(effect.message.message) is PrePrepare
            ]
        )
    return sizes


def test_adaptive_batching_holds_partial_batches_while_one_is_in_flight() -> None:
    """A lone request goes out at once; while it is in flight, requests gather until a
    batch is full, and a full batch goes out without waiting (up to max_inflight_batches)."""
    params = ProtocolParams(batch_size=3, max_inflight_batches=4)
    assert _requests_to_primary(params, [0, 1, 2, 3, 4, 5, 6]) == [
        [1], [], [], [3], [], [], [3],
    ]  # fmt: skip


def test_without_adaptive_batching_every_request_takes_a_free_slot() -> None:
    params = ProtocolParams(batch_size=3, max_inflight_batches=4, partial_batches_in_flight=4)
    assert _requests_to_primary(params, [0, 1, 2, 3, 4]) == [[1], [1], [1], [1], []]


def test_held_requests_go_out_together_once_the_batch_in_flight_executes() -> None:
    """End to end: 6 clients at once with batch_size 8: the first request alone, then the
    other five in one batch, and every operation completes."""
    params = ProtocolParams(batch_size=8)
    cluster = make_cluster(f=1, clients=6, seed=7, params=params)
    for client in cluster.clients:
        cluster.network.invoke(client, kv.put(f"k{client}", "v"))
    assert cluster.network.run_until_idle(max_ticks=20_000)
    assert completed_all(cluster)
    assert [len(entry.requests) for entry in cluster.network.executed[0]] == [1, 5]
    assert_agreement(cluster)


def test_partial_batches_in_flight_is_checked() -> None:
    with pytest.raises(ConfigError, match="partial_batches_in_flight"):
        ProtocolParams(max_inflight_batches=2, partial_batches_in_flight=3)
    with pytest.raises(ConfigError, match="partial_batches_in_flight"):
        ProtocolParams(partial_batches_in_flight=0)
