"""The client core: replies checked before their signature, and retransmission backoff."""

from __future__ import annotations

import pytest

from pbft import service as kv
from pbft.client import RETRANSMIT_TIMER, Client
from pbft.config import ConfigError
from pbft.crypto import Verifier
from pbft.encoding import encode_signed
from pbft.events import Completed, Invoke, Receive, SetTimer, TimerFired
from pbft.messages import Reply, Signed
from pbft.simnet import SimCluster, make_cluster


class CountingVerifier:
    """A verifier that counts the signatures it checks."""

    def __init__(self, inner: Verifier) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self.calls = 0

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        self.calls += 1
        return self.inner.verify(public_key, signature, data)


def _client(cluster: SimCluster, cap: int | None = None, base: int = 500) -> Client:
    return Client(
        0,
        cluster.config,
        cluster.client_signers[0],
        retransmit_timeout_ticks=base,
        max_retransmit_timeout_ticks=cap,
    )


def _reply(cluster: SimCluster, sender: int, timestamp: int, result: bytes) -> bytes:
    signed: Signed[Reply] = cluster.replicas[sender].auth.sign(
        Reply(0, timestamp, 0, sender, result)
    )
    return encode_signed(signed)


def test_late_and_duplicate_replies_are_dropped_before_any_signature_check() -> None:
    cluster = make_cluster(f=1, clients=1, seed=501)
    client = _client(cluster)
    counting = CountingVerifier(client.auth._verifier)
    client.auth._verifier = counting
    client.step(Invoke(kv.put("k", "v")))
    timestamp = client.timestamp
    result = b"ok"
    assert client.step(Receive(_reply(cluster, 1, timestamp, result))) == []
    assert client.step(Receive(_reply(cluster, 1, timestamp, result)))[0].reason == "duplicate"
    effects = client.step(Receive(_reply(cluster, 2, timestamp, result)))
    assert any(type(effect) is Completed for effect in effects)
    assert counting.calls == 2  # replicas 1 and 2, once each
    late = client.step(Receive(_reply(cluster, 3, timestamp, result)))
    assert late[0].reason == "stale" and counting.calls == 2
    assert client.counters.dropped_for("stale") == 1


def test_a_reply_with_a_bad_signature_for_the_outstanding_request_is_refused() -> None:
    cluster = make_cluster(f=1, clients=1, seed=502)
    client = _client(cluster)
    client.step(Invoke(kv.put("k", "v")))
    good = cluster.replicas[1].auth.sign(Reply(0, client.timestamp, 0, 1, b"r"))
    forged = Signed(good.message, bytes(64), good.payload)
    assert client.step(Receive(encode_signed(forged)))[0].reason == "bad-signature"
    # The forgery took no place: the genuine reply of replica 1 still counts.
    assert client.step(Receive(encode_signed(good))) == []
    assert client.counters.dropped_for("duplicate") == 0


def _timer_ticks(effects: list[object]) -> list[int]:
    return [e.ticks for e in effects if type(e) is SetTimer and e.name == RETRANSMIT_TIMER]


def test_by_default_the_retransmission_timer_is_fixed() -> None:
    client = _client(make_cluster(f=1, clients=1, seed=503))
    assert _timer_ticks(client.step(Invoke(b"op"))) == [500]
    client.observe_latency(5000)
    for _ in range(5):
        assert _timer_ticks(client.step(TimerFired(RETRANSMIT_TIMER))) == [500]


def test_backoff_adapts_to_latency_and_grows_with_full_jitter_up_to_the_cap() -> None:
    cluster = make_cluster(f=1, clients=1, seed=504)
    client = _client(cluster, cap=16_000)
    assert _timer_ticks(client.step(Invoke(b"op"))) == [500]  # nothing observed yet
    delays = [_timer_ticks(client.step(TimerFired(RETRANSMIT_TIMER)))[0] for _ in range(8)]
    for attempt, delay in enumerate(delays, start=1):
        assert 1 <= delay <= min(16_000, 500 * 2**attempt)
    assert len(set(delays)) > 4  # jittered, not a fixed ladder
    assert max(delays[5:]) > 2000  # and growing
    again = _client(cluster, cap=16_000)
    again.step(Invoke(b"op", min_timestamp=client.timestamp))
    assert [again.retransmit_delay_ticks(a) for a in range(1, 9)] == delays  # deterministic
    for latency in (1200, 1300, 1250, 1200):
        client.observe_latency(latency)
    assert 1200 < client.first_timeout_ticks() < 2500
    client.observe_latency(10**9)
    assert client.first_timeout_ticks() == 16_000


def test_a_cap_below_the_base_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_retransmit_timeout_ticks"):
        _client(make_cluster(f=1, clients=1, seed=505), cap=100, base=500)


@pytest.mark.parametrize(("signed", "length"), [(0, 0), (1, 64)])
def test_replies_are_unsigned_by_default_and_signed_with_signed_replies(
    signed: int, length: int
) -> None:
    from pbft.config import ProtocolParams
    from pbft.events import SendToClient
    from tests.conftest import completed_all

    cluster = make_cluster(f=1, clients=1, seed=506, params=ProtocolParams(signed_replies=signed))
    replies: list[bytes] = []

    def record(address, effects):  # type: ignore[no-untyped-def]
        replies.extend(e.message.signature for e in effects if type(e) is SendToClient)

    cluster.network.on_step = record
    cluster.network.submit(0, [kv.put("k", "v"), kv.get("k")])
    assert cluster.network.run_until_idle(10_000)
    assert completed_all(cluster)
    assert replies and {len(signature) for signature in replies} == {length}
