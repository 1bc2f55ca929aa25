"""The stale-certificate case: NEW-VIEW must take the certificate of the highest view.

Castro & Liskov §4.4: for each sequence number, O carries the request of the
prepared certificate with the highest view in V. Implementations that chose
by majority or by arrival order have lost committed requests this way.

n = 4, replica 0 is faulty. Request A is prepared in view 0 at honest
replica 3 only; request B is committed in view 1 at seq 1 while replica 3 is
cut off; then a view change to view 2 collects VIEW-CHANGEs from 0 (faulty,
carrying A's certificate), 3 (carrying A's) and 2 (carrying B's). A majority
rule would pick A. The view-1 request B must win, and no honest replica may
execute A at seq 1.
"""

from __future__ import annotations

from typing import Any

from pbft import service as kv
from pbft.certificates import compute_new_view
from pbft.encoding import encode_signed
from pbft.events import TimerFired
from pbft.messages import PreparedCertificate, Signed, ViewChange
from pbft.simnet import Address, make_cluster
from tests.conftest import assert_agreement


def test_new_view_takes_the_highest_view_certificate_not_the_majority() -> None:
    cluster = make_cluster(f=1, clients=2, seed=60)
    network = cluster.network
    seen: list[Signed[Any]] = []
    phase = {"name": "A prepared at 3 only"}

    def rules(source: Address, destination: Address, message: Signed[Any]) -> bool:
        seen.append(message)
        inner = message.message
        kind = type(inner).__name__
        phase_name = phase["name"]
        if phase_name == "A prepared at 3 only":
            if kind == "PrePrepare":
                return destination != ("replica", 1)
            if kind == "Prepare":
                return source == ("replica", 2) and destination == ("replica", 3)
            return kind not in ("Commit",)
        if phase_name == "B committed in view 1 without 3":
            if kind in ("PrePrepare", "Prepare", "Commit") and inner.view == 0:
                return False
            if kind == "Request" and inner.client == 0:
                return False
            return True
        if phase_name == "view change to 2":
            # Keep replica 1's VIEW-CHANGE from the new primary, so V = {0, 2, 3}.
            return not (kind == "ViewChange" and source == ("replica", 1))
        return True

    network.intercept = rules

    # Phase 1: client 0's request A reaches the primary (replica 0) only.
    network.invoke(0, kv.put("x", "A"))
    network.run(50)
    replica3 = cluster.replicas[3]
    assert 1 in replica3.prepared_certificates
    certificate_a = replica3.prepared_certificates[1]
    assert certificate_a.view == 0
    assert all(1 not in cluster.replicas[r].prepared_certificates for r in (1, 2))

    # Phase 2: replica 3 is cut off; client 1's request B triggers a view change to 1.
    phase["name"] = "B committed in view 1 without 3"
    network.isolate(3)
    network.invoke(1, kv.put("x", "B"))
    assert network.run_until(lambda: network.operations[1].return_tick is not None, 20_000)
    for replica in (1, 2):
        assert cluster.replicas[replica].view == 1
        executed = network.executed[replica]
        assert [(e.seq, e.requests) for e in executed] == [(1, ((1, 1),))]
    certificate_b = cluster.replicas[2].prepared_certificates[1]
    assert certificate_b.view == 1
    assert certificate_b.pre_prepare.message.digest != certificate_a.pre_prepare.message.digest

    # Phase 3: the faulty replica 0 sends a VIEW-CHANGE for view 2 that carries A's
    # certificate (validly signed: it is the primary's own PRE-PREPARE plus the
    # PREPAREs of 2 and 3 that it overheard) and hides B's.
    phase["name"] = "view change to 2"
    network.heal(3)
    prepares_for_a = tuple(
        m
        for m in seen
        if type(m.message).__name__ == "Prepare"
        and m.message.view == 0
        and m.message.digest == certificate_a.pre_prepare.message.digest
    )
    by_sender = {m.message.sender: m for m in prepares_for_a}
    faulty_certificate = PreparedCertificate(
        certificate_a.pre_prepare, (by_sender[2], by_sender[3])
    )
    faulty = cluster.replicas[0].auth.sign(ViewChange(2, 0, (), (faulty_certificate,), 0))
    network.crash(("replica", 0))
    for replica in (1, 2, 3):
        network.deliver_bytes(("replica", replica), encode_signed(faulty))
    # Replicas 1 and 2 time out in view 1; replica 3 (still in view 0) times out too
    # and is pulled to view 2 by the f+1 VIEW-CHANGEs it sees.
    for replica in (1, 2, 3):
        network._step(("replica", replica), TimerFired("view-change"))
    assert network.run_until(
        lambda: all(
            cluster.replicas[r].view == 2 and cluster.replicas[r].view_active for r in (1, 2, 3)
        ),
        20_000,
    )

    primary = cluster.replicas[2]
    used = primary.last_new_view.message.view_changes
    assert sorted(vc.message.sender for vc in used) == [0, 2, 3]
    carrying_a = [
        vc
        for vc in used
        if any(
            c.pre_prepare.message.digest == certificate_a.pre_prepare.message.digest
            for c in vc.message.prepared
        )
    ]
    assert len(carrying_a) == 2, "a majority of V carries the stale certificate"
    (reissued,) = primary.last_new_view.message.pre_prepares
    assert reissued.message.digest == certificate_b.pre_prepare.message.digest

    network.intercept = None
    network.run(5_000)
    assert_agreement(cluster, [1, 2, 3])
    digest_a = certificate_a.pre_prepare.message.digest
    for replica in (1, 2, 3):
        for entry in network.executed[replica]:
            assert not (entry.seq == 1 and entry.digest == digest_a)
    assert any(e.seq == 1 for e in network.executed[3]) or replica3.low_watermark >= 1


def test_compute_new_view_prefers_the_highest_view_whatever_the_order() -> None:
    """compute_new_view is a pure function of V: the order of V never changes O."""
    cluster = make_cluster(f=1, clients=2, seed=61)
    network = cluster.network
    network.submit(0, [kv.put("a", "1")])
    assert network.run_until_idle(10_000)
    replica = cluster.replicas[1]
    checked = []
    for sender in (1, 2, 3):
        vc = cluster.replicas[sender].auth.sign(
            ViewChange(1, 0, (), (cluster.replicas[sender].prepared_certificates[1],), sender)
        )
        checked.append(replica._checked(vc))
    plans = {
        tuple(compute_new_view(cluster.config, 1, order).pre_prepares)
        for order in (checked, checked[::-1], checked[1:] + checked[:1])
    }
    assert len(plans) == 1
