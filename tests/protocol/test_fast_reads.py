"""Fast reads (§5.1.3): READs answered at once by every replica, 2f+1 matching replies.

And the rule they rely on: a replica that changed views alone keeps catching up on
what the others commit in the view it left, so writes that need all 2f+1 honest
replies (with one faulty replica silent) still complete.
"""

from __future__ import annotations

import pytest

from pbft import service as kv
from pbft.client import RETRANSMIT_TIMER, Client
from pbft.config import ProtocolParams
from pbft.encoding import encode_message, encode_signed
from pbft.events import Completed, Invoke, Receive, SendToClient, SendToReplicas, TimerFired
from pbft.messages import PrePrepare, Read, Reply, Request, Signed
from pbft.simnet import SimCluster, make_cluster
from tests.conftest import assert_agreement, completed_all

FAST = ProtocolParams(fast_reads=1)


def _fast_client(cluster: SimCluster) -> Client:
    return Client(0, cluster.config, cluster.client_signers[0], read_only=kv.is_read_only)


def _reply(cluster: SimCluster, sender: int, timestamp: int, result: bytes) -> bytes:
    return encode_signed(cluster.replicas[sender].auth.sign(Reply(0, timestamp, 0, sender, result)))


def _completed(effects: list[object]) -> list[Completed]:
    return [effect for effect in effects if type(effect) is Completed]


def test_a_read_goes_to_every_replica_and_needs_2f_plus_1_matching_replies() -> None:
    cluster = make_cluster(f=1, clients=1, seed=700)
    client = _fast_client(cluster)
    sent = client.step(Invoke(kv.get("k")))[0]
    assert type(sent) is SendToReplicas and type(sent.message.message) is Read
    assert sent.replicas == (0, 1, 2, 3)
    timestamp = client.timestamp
    assert client.step(Receive(_reply(cluster, 0, timestamp, b"\xc0"))) == []
    assert client.step(Receive(_reply(cluster, 1, timestamp, b"\xc0"))) == []  # f+1: not enough
    assert _completed(client.step(Receive(_reply(cluster, 2, timestamp, b"\xc0"))))


def test_with_fast_reads_writes_need_2f_plus_1_replies_too() -> None:
    cluster = make_cluster(f=1, clients=1, seed=701)
    client = _fast_client(cluster)
    sent = client.step(Invoke(kv.put("k", "v")))[0]
    assert type(sent.message.message) is Request and sent.replicas == (0,)  # ordered, as usual
    timestamp = client.timestamp
    client.step(Receive(_reply(cluster, 0, timestamp, b"\xc3")))
    assert not _completed(client.step(Receive(_reply(cluster, 1, timestamp, b"\xc3"))))
    assert _completed(client.step(Receive(_reply(cluster, 3, timestamp, b"\xc3"))))


def test_a_read_whose_replies_cannot_agree_falls_back_to_an_ordered_request_at_once() -> None:
    cluster = make_cluster(f=1, clients=1, seed=702)
    client = _fast_client(cluster)
    client.step(Invoke(kv.get("k")))
    timestamp = client.timestamp
    assert client.step(Receive(_reply(cluster, 0, timestamp, b"a"))) == []
    assert client.step(Receive(_reply(cluster, 1, timestamp, b"b"))) == []
    # a, b, c: even if the last reply matches one of them, 2f+1 = 3 cannot agree.
    effects = client.step(Receive(_reply(cluster, 2, timestamp, b"c")))
    resent = [effect for effect in effects if type(effect) is SendToReplicas]
    assert len(resent) == 1 and type(resent[0].message.message) is Request
    assert resent[0].message.message.timestamp == timestamp  # the same timestamp, ordered
    assert client.read_fallbacks == 1
    # The ordered replies count afresh.
    for sender in (0, 1):
        assert not _completed(client.step(Receive(_reply(cluster, sender, timestamp, b"b"))))
    assert _completed(client.step(Receive(_reply(cluster, 2, timestamp, b"b"))))


def test_a_read_still_unanswered_when_the_timer_fires_is_ordered() -> None:
    cluster = make_cluster(f=1, clients=1, seed=703)
    client = _fast_client(cluster)
    client.step(Invoke(kv.get("k")))
    effects = client.step(TimerFired(RETRANSMIT_TIMER))
    assert [type(e.message.message) for e in effects if type(e) is SendToReplicas] == [Request]
    assert client.read_fallbacks == 1


def test_a_replica_answers_a_read_at_once_and_refuses_a_write_sent_as_one() -> None:
    cluster = make_cluster(f=1, clients=1, seed=704)
    replica = cluster.replicas[1]
    signer = cluster.clients[0].auth
    read = encode_signed(signer.sign(Read(0, 1, kv.get("k"))))
    effects = replica.step(Receive(read, channel=("client", 0)))
    replies = [effect for effect in effects if type(effect) is SendToClient]
    assert len(replies) == 1 and replies[0].message.message.timestamp == 1
    assert replica.client_table == {}  # the timestamp may still be ordered
    write = encode_signed(signer.sign(Read(0, 2, kv.put("k", "v"))))
    effects = replica.step(Receive(write, channel=("client", 0)))
    assert [effect.reason for effect in effects if hasattr(effect, "reason")] == ["not-read-only"]
    assert replica.service.execute(kv.get("k")) == kv.KeyValueStore().execute(kv.get("k"))


def test_a_cluster_with_fast_reads_answers_reads_without_ordering_them() -> None:
    cluster = make_cluster(f=1, clients=2, seed=705, params=FAST)
    proposed: list[int] = []

    def count(address, effects):  # type: ignore[no-untyped-def]
        for effect in effects:
            if type(effect) is SendToReplicas and type(effect.message.message) is PrePrepare:
                proposed.extend(r.message.client for r in effect.message.message.batch)

    cluster.network.on_step = count
    cluster.network.submit(0, [kv.put("a", "1"), kv.get("a"), kv.get("a"), kv.put("a", "2")])
    cluster.network.submit(1, [kv.get("b")] * 5)
    assert cluster.network.run_until_idle(20_000)
    assert completed_all(cluster)
    assert proposed.count(1) == 0  # client 1 only read: nothing of it was ordered
    results = [op.result for op in cluster.network.operations if op.client == 0]
    assert [kv.decode_result(r) for r in results] == [True, "1", "1", True]
    assert_agreement(cluster)


@pytest.mark.parametrize("lost", [("Commit",), ("PrePrepare", "Prepare", "Commit")])
def test_a_replica_that_changed_views_alone_catches_up_on_the_old_view(
    lost: tuple[str, ...],
) -> None:
    """Regression (explorer seed 198 with fast reads): replica 2 lost the COMMITs of seq 1,
    its timer fired and it started a view change alone, which cleared its log; it then
    dropped every message of the view the others stayed in, and, with the primary mute,
    a write needing 2f+1 replies waited for it for ever. In a view change a replica now
    keeps asking for commit certificates of its window, and executes what they prove,
    whether or not it knew of a gap (it heard nothing of seq 1 in the second case)."""
    cluster = make_cluster(f=1, clients=1, seed=706, params=FAST)
    network = cluster.network

    def lose_commits_to_2(source, destination, message):  # type: ignore[no-untyped-def]
        return not (destination == ("replica", 2) and type(message.message).__name__ in lost)

    network.intercept = lose_commits_to_2
    stranded = cluster.replicas[2]
    network.submit(0, [kv.put("k", "1")])
    network.run(50)
    network._step(("replica", 2), TimerFired("view-change"))  # as if its timer fired first
    assert not stranded.view_active and stranded.last_executed == 0
    network.intercept = None
    network.submit(0, [kv.put("k", str(i)) for i in range(2, 5)])
    assert network.run_until_idle(20_000)
    assert completed_all(cluster)
    network.run(1_000)  # a few catch-up periods
    assert stranded.view == 1 and not stranded.view_active  # still alone in its view change
    assert stranded.last_executed == cluster.replicas[0].last_executed
    assert stranded.counters.accepted["COMMIT-CERTIFICATE"] >= 1
    assert_agreement(cluster)


def _unsigned_read(client: int, timestamp: int, operation: bytes) -> bytes:
    read = Read(client, timestamp, operation)
    return encode_signed(Signed(read, b"", encode_message(read)))


def test_an_unsigned_read_counts_only_on_its_clients_own_channel() -> None:
    """A READ is point-to-point: its client's channel vouches for it. Relayed over a
    replica's channel it needs the client's signature, or a faulty replica could make
    every honest replica answer a client's outstanding write with the result of a read
    it chose (the reply's timestamp is all the client matches on)."""
    cluster = make_cluster(f=1, clients=1, seed=707)
    replica = cluster.replicas[1]
    own = replica.step(Receive(_unsigned_read(0, 1, kv.get("k")), channel=("client", 0)))
    assert [type(effect) for effect in own] == [SendToClient]
    relayed = replica.step(Receive(_unsigned_read(0, 2, kv.get("k")), channel=("replica", 3)))
    assert [effect.reason for effect in relayed if hasattr(effect, "reason")] == ["bad-signature"]
    assert replica.step(Receive(_unsigned_read(0, 3, kv.get("k")))) != own  # no channel
    assert replica.counters.dropped_for("bad-signature") == 2


def test_with_every_message_signed_a_read_needs_its_signature_on_any_channel() -> None:
    cluster = make_cluster(f=1, clients=1, seed=708, params=ProtocolParams(signed_replies=1))
    replica = cluster.replicas[1]
    effects = replica.step(Receive(_unsigned_read(0, 1, kv.get("k")), channel=("client", 0)))
    assert [effect.reason for effect in effects if hasattr(effect, "reason")] == ["bad-signature"]
    client = Client(
        0,
        cluster.config,
        cluster.client_signers[0],
        signed_replies=True,
        read_only=kv.is_read_only,
    )
    sent = client.step(Invoke(kv.get("k")))[0]
    assert type(sent.message.message) is Read and len(sent.message.signature) == 64
