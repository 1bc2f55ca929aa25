"""Digest replies (§5.1.1): the designated replier sends the result, the others its digest."""

from __future__ import annotations

from pbft import service as kv
from pbft.client import Client
from pbft.config import ProtocolParams
from pbft.encoding import encode_message, encode_signed
from pbft.events import Completed, Invoke, Receive, SendToClient
from pbft.messages import Reply, ReplyDigest, Signed, designated_replier, result_digest
from pbft.simnet import make_cluster
from tests.conftest import assert_agreement, completed_all

DIGESTS = ProtocolParams(digest_replies=1)


def _client_with_a_put_outstanding(seed: int) -> tuple[Client, int]:
    """A lone client core (f = 1) that has sent one put; and that put's timestamp."""
    cluster = make_cluster(f=1, clients=1, seed=seed)
    client = Client(0, cluster.config, cluster.client_signers[0])
    client.step(Invoke(kv.put("k", "v")))
    return client, client.timestamp


def _unsigned(message: Reply | ReplyDigest) -> bytes:
    """A reply as it travels on its replica's MAC'd channel (replies are unsigned)."""
    return encode_signed(Signed(message, b"", encode_message(message)))


def _receive(client: Client, message: Reply | ReplyDigest) -> list[object]:
    return client.step(Receive(_unsigned(message), channel=("replica", message.sender)))


def _completed(effects: list[object]) -> list[Completed]:
    return [effect for effect in effects if type(effect) is Completed]


def test_only_the_designated_replier_sends_the_result() -> None:
    cluster = make_cluster(f=1, clients=1, seed=720, params=DIGESTS)
    sent: dict[int, list[object]] = {}

    def record(address, effects):  # type: ignore[no-untyped-def]
        for effect in effects:
            if type(effect) is SendToClient and address[0] == "replica":
                sent.setdefault(address[1], []).append(effect.message.message)

    cluster.network.on_step = record
    cluster.network.submit(0, [kv.put("k", "v" * 500), kv.get("k")])
    assert cluster.network.run_until_idle(10_000)
    assert completed_all(cluster)
    assert kv.decode_result(cluster.network.operations[1].result) == "v" * 500
    for timestamp in (1, 2):
        designated = designated_replier(0, timestamp, cluster.config.n)
        for replica, replies in sent.items():
            (reply,) = [r for r in replies if r.timestamp == timestamp]
            assert type(reply) is (Reply if replica == designated else ReplyDigest)
    assert_agreement(cluster)


def test_digests_alone_do_not_complete_a_request_and_a_wrong_full_result_never_does() -> None:
    client, t = _client_with_a_put_outstanding(721)
    good = b"\xc3"
    for sender in (1, 2, 3):  # 2f+1 digests, but no full result yet
        assert not _completed(_receive(client, ReplyDigest(0, t, 0, sender, result_digest(good))))
    # The last replica's full result disagrees with the digests: not accepted.
    assert not _completed(_receive(client, Reply(0, t, 0, 0, b"\xc2")))
    assert client.busy


def test_digests_and_one_matching_full_reply_complete_the_request() -> None:
    client, t = _client_with_a_put_outstanding(722)
    result = b"\xc3"
    assert not _completed(_receive(client, ReplyDigest(0, t, 0, 1, result_digest(result))))
    (done,) = _completed(_receive(client, Reply(0, t, 0, 2, result)))
    assert done.result == result


def test_a_silent_designated_replier_costs_one_retransmission() -> None:
    """Replies resent for a retransmitted request are in full, from every replica."""
    cluster = make_cluster(f=1, clients=1, seed=723, params=DIGESTS)
    network = cluster.network
    designated = designated_replier(0, 1, cluster.config.n)

    def drop_designated_reply(source, destination, message):  # type: ignore[no-untyped-def]
        return not (source == ("replica", designated) and destination[0] == "client")

    network.intercept = drop_designated_reply
    network.submit(0, [kv.put("k", "v")])
    assert network.run_until_idle(5_000)
    assert completed_all(cluster)
    assert network.operations[0].return_tick >= 500  # after the retransmission timer
    client = network.nodes[("client", 0)]
    assert client.counters.accepted["REPLY-DIGEST"] >= 2  # the first round: digests only
    assert client.counters.accepted["REPLY"] >= 1  # then full replies, resent
    assert kv.decode_result(network.operations[0].result) is True
    assert [e.seq for e in network.executed[0]] == [1]  # ordered once
