"""Copies of one request are answered once per period, not once per copy.

A client's retransmission makes a backup relay its request to the primary again and
the primary resend the PRE-PREPARE it assigned (§4.1, in case something was lost). A
faulty client can sign one request and send it a hundred times: each copy cost a relay
to the primary and a whole PRE-PREPARE to every backup (100 copies: 300 PRE-PREPAREs
sent). Now each is answered at most once per period (``REQUEST_RESEND_TIMER``, a
quarter of the view-change timeout); a new request, and the next period, are answered.
"""

from __future__ import annotations

from typing import Any

from pbft import service as kv
from pbft.encoding import encode_signed
from pbft.events import Receive, SendToClient, SendToReplicas, SetTimer, TimerFired
from pbft.messages import PrePrepare, Reply, Request, Signed
from pbft.replica import REQUEST_RESEND_TIMER, Replica
from pbft.simnet import SimCluster, make_cluster
from tests.conftest import assert_agreement

COPIES = 100


def request(cluster: SimCluster, timestamp: int, client: int = 0) -> Signed[Request]:
    return cluster.clients[client].auth.sign(Request(client, timestamp, kv.put("k", "v")))


def sends(effects: list[Any], kind: type) -> int:
    """Messages of type ``kind`` sent, one per receiver."""
    return sum(
        len(effect.replicas)
        for effect in effects
        if type(effect) is SendToReplicas and type(effect.message.message) is kind
    )


def copies(replica: Replica, signed: Signed[Request], count: int = COPIES) -> list[Any]:
    effects: list[Any] = []
    for _ in range(count):
        effects += replica.step(Receive(encode_signed(signed)))
    return effects


def test_a_backup_relays_copies_of_a_request_once_per_period() -> None:
    cluster = make_cluster(f=1, clients=1, seed=401)
    backup = cluster.replicas[1]
    first = request(cluster, 1)
    effects = copies(backup, first)
    assert sends(effects, Request) == 1  # to the primary, once
    period = backup.params.view_change_timeout_ticks // 4
    assert SetTimer(REQUEST_RESEND_TIMER, period) in effects
    # A newer request of the client is new: relayed at once, within the same period.
    assert sends(copies(backup, request(cluster, 2)), Request) == 1
    assert sends(copies(backup, first), Request) == 0  # stale now: superseded
    # The next period: the client's retransmission is relayed again, once.
    backup.step(TimerFired(REQUEST_RESEND_TIMER))
    assert sends(copies(backup, request(cluster, 2)), Request) == 1


def test_the_primary_resends_a_pre_prepare_once_per_period() -> None:
    cluster = make_cluster(f=1, clients=1, seed=402)
    primary = cluster.replicas[0]
    signed = request(cluster, 1)
    assert sends(copies(primary, signed, 1), PrePrepare) == 3  # assigned, to every backup
    assert sends(copies(primary, signed), PrePrepare) == 3  # the first copy: resent once
    primary.step(TimerFired(REQUEST_RESEND_TIMER))
    assert sends(copies(primary, signed), PrePrepare) == 3


def test_a_client_flooding_copies_costs_the_cluster_a_bounded_number_of_messages() -> None:
    """End to end in the simulator: 100 copies of a request at every replica while it is
    being ordered; it executes once everywhere, and the copies buy at most one relay per
    backup and one PRE-PREPARE resend per backup."""
    cluster = make_cluster(f=1, clients=1, seed=403)
    counted = {"pre-prepares": 0, "relays": 0}

    def count(address: tuple[str, int], effects: list[Any]) -> None:
        if address == ("replica", 0):
            counted["pre-prepares"] += sends(effects, PrePrepare)
        elif address[0] == "replica":
            counted["relays"] += sends(effects, Request)

    cluster.network.on_step = count
    cluster.network.invoke(0, kv.put("k", "v"))
    signed = request(cluster, cluster.clients[0].timestamp)
    for replica in range(4):
        for _ in range(COPIES):
            cluster.network.deliver_bytes(("replica", replica), encode_signed(signed))
    assert cluster.network.run_until_idle(10_000)
    assert_agreement(cluster)
    assert all(replica.last_executed == 1 for replica in cluster.replicas.values())
    assert counted["relays"] <= 3, counted
    assert counted["pre-prepares"] <= 3 + 3, counted  # the PRE-PREPARE, and one resend


def test_copies_of_an_executed_request_bring_its_cached_reply_once_per_period() -> None:
    """Each copy of an executed request brought the whole cached REPLY, and anyone holding
    the signed request (a faulty replica too) could aim them at the client: 100 copies,
    100 REPLYs from every replica. Now one per period (found by review of the above)."""
    cluster = make_cluster(f=1, clients=1, seed=404)
    cluster.network.invoke(0, kv.put("k", "v"))
    assert cluster.network.run_until_idle(10_000)
    signed = request(cluster, cluster.clients[0].timestamp)
    replica = cluster.replicas[2]

    def replies(effects: list[Any]) -> int:
        return sum(
            1
            for effect in effects
            if type(effect) is SendToClient and type(effect.message.message) is Reply
        )

    assert replies(copies(replica, signed)) == 1
    replica.step(TimerFired(REQUEST_RESEND_TIMER))
    assert replies(copies(replica, signed)) == 1
