"""Catching up on what committed while a replica was not listening, and other rules
added around the paper's: channel attribution, message-size bounds, batching limits."""

from __future__ import annotations

import pytest

from pbft import service as kv
from pbft.config import ConfigError, ProtocolParams
from pbft.encoding import encode_signed
from pbft.events import Receive, TimerFired
from pbft.messages import CommitCertificate, FetchCommitted, Prepare
from pbft.replica import Replica
from pbft.simnet import make_cluster
from tests.conftest import assert_agreement


def test_a_replica_that_lost_the_commits_fetches_commit_certificates() -> None:
    """All COMMITs to replica 3 are lost: it prepares but never commits by itself; after
    the catch-up period it asks its peers, checks the 2f+1 COMMITs and executes."""
    cluster = make_cluster(f=1, clients=1, seed=140)
    network = cluster.network

    def lose_commits_to_3(source, destination, message):  # type: ignore[no-untyped-def]
        return not (destination == ("replica", 3) and type(message.message).__name__ == "Commit")

    network.intercept = lose_commits_to_3
    network.submit(0, [kv.put("k", str(i)) for i in range(3)])
    assert network.run_until_idle(10_000)
    lagging = cluster.replicas[3]
    assert lagging.last_executed == 0
    network.intercept = None
    network.run(2_000)
    assert lagging.last_executed == cluster.replicas[0].last_executed == 3
    assert lagging.counters.accepted["COMMIT-CERTIFICATE"] >= 3
    assert_agreement(cluster)


def test_commit_certificates_that_prove_nothing_are_refused() -> None:
    cluster = make_cluster(f=1, clients=1, seed=141)
    cluster.network.submit(0, [kv.put("k", "v")])
    assert cluster.network.run_until_idle(10_000)
    certificate = cluster.replicas[0].commit_certificates[1]
    fresh = Replica(3, cluster.config, cluster.replica_signers[3], cluster.params)
    short = cluster.replicas[0].auth.sign(
        CommitCertificate(certificate.pre_prepare, certificate.commits[:2], 0)
    )
    fresh.step(Receive(encode_signed(short)))
    assert fresh.counters.dropped[("COMMIT-CERTIFICATE", "invalid-commit-certificate")] == 1
    assert fresh.last_executed == 0
    good = cluster.replicas[0].auth.sign(certificate)
    fresh.step(Receive(encode_signed(good)))
    assert fresh.last_executed == 1


def test_fetch_committed_is_answered_only_within_the_window() -> None:
    cluster = make_cluster(f=1, clients=1, seed=142)
    cluster.network.submit(0, [kv.put("k", str(i)) for i in range(3)])
    assert cluster.network.run_until_idle(10_000)
    ask = cluster.replicas[3].auth.sign(FetchCommitted(1, 10**6, 3))
    effects = cluster.replicas[0].step(Receive(encode_signed(ask)))
    sent = [e.message.message for e in effects if type(e).__name__ == "SendToReplicas"]
    assert sorted(c.pre_prepare.message.seq for c in sent) == [1, 2, 3]
    assert all(type(c) is CommitCertificate for c in sent)


def test_frames_are_attributed_to_the_identity_their_connection_proved() -> None:
    """A replica's connection may relay signed messages of others (a request it forwards,
    a NEW-VIEW): their signatures decide. A client's connection carries only that
    client's requests."""
    cluster = make_cluster(f=1, clients=2, seed=143)
    replica = cluster.replicas[0]
    prepare = cluster.replicas[1].auth.sign(Prepare(0, 1, b"d" * 32, 1))
    replica.step(Receive(encode_signed(prepare), channel=("replica", 2)))  # relayed
    assert replica.counters.accepted["PREPARE"] == 1
    replica.step(Receive(encode_signed(prepare), channel=("client", 0)))
    assert replica.counters.dropped[("PREPARE", "channel-mismatch")] == 1
    from pbft.messages import Request

    request = cluster.clients[1].auth.sign(Request(1, 1, kv.put("k", "v")))
    replica.step(Receive(encode_signed(request), channel=("client", 0)))
    assert replica.counters.dropped[("REQUEST", "channel-mismatch")] == 1
    replica.step(Receive(encode_signed(request), channel=("replica", 2)))  # forwarded
    replica.step(Receive(encode_signed(request), channel=("client", 1)))
    assert replica.counters.dropped[("REQUEST", "channel-mismatch")] == 1


def test_parameters_whose_new_view_would_not_fit_a_message_are_refused() -> None:
    params = ProtocolParams(max_request_bytes=60_000, batch_size=64, max_message_bytes=10**6)
    with pytest.raises(ConfigError, match="max_message_bytes"):
        make_cluster(f=1, clients=1, seed=144, params=params)


def test_the_primary_keeps_at_most_max_inflight_batches_in_flight() -> None:
    params = ProtocolParams(max_inflight_batches=1, batch_size=8)
    cluster = make_cluster(f=1, clients=6, seed=145, params=params)
    in_flight: list[int] = []

    def measure() -> bool:
        primary = cluster.replicas[0]
        in_flight.append(primary.next_seq - 1 - primary.last_executed)
        return cluster.network.idle

    for client in cluster.clients:
        cluster.network.submit(client, [kv.put(f"k{client}", str(i)) for i in range(4)])
    assert cluster.network.run_until(measure, 50_000)
    assert max(in_flight) == 1
    assert len(cluster.network.executed[0]) < 24  # requests shared batches


def test_the_view_change_timeout_comes_back_down_once_a_request_executes() -> None:
    """§4.5.2: the doubled timeout holds until a request executes in the new view."""
    params = ProtocolParams(view_change_timeout_ticks=100)
    cluster = make_cluster(f=1, clients=1, seed=146, params=params)
    network = cluster.network
    network.crash(("replica", 0))
    network.submit(0, [kv.put("k", str(i)) for i in range(3)])
    assert network.run_until_idle(50_000)
    replica = cluster.replicas[2]
    assert replica.view == 1 and replica.view_change_attempts == 0
    effects = replica.step(TimerFired("view-change"))
    timers = [
        e.ticks for e in effects if type(e).__name__ == "SetTimer" and e.name == "view-change"
    ]
    assert timers == [100]
