"""Bad input from the network has no effect on state: it is dropped and counted (h11's
"remote errors"). Covers invalid signatures, non-members, replays, duplicates,
malformed bytes, and forged NEW-VIEW and VIEW-CHANGE content (§4.4)."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft import service as kv
from pbft.auth import Authenticator
from pbft.encoding import encode_signed
from pbft.events import Receive
from pbft.messages import (
    Commit,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Request,
    Signed,
    ViewChange,
    batch_digest,
)
from pbft.simnet import derive_signer, make_cluster


def fingerprint(replica) -> tuple:  # type: ignore[no-untyped-def]
    """Everything protocol-relevant about a replica's state."""
    return (
        replica.view,
        replica.view_active,
        replica.last_executed,
        replica.low_watermark,
        replica.state_digest(),
        sorted(
            (seq, slot.pre_prepare is not None, sorted(slot.prepares), sorted(slot.commits))
            for seq, slot in replica.slots.items()
        ),
        sorted(replica.prepared_certificates),
        sorted(replica.pending),
        {v: sorted(s) for v, s in replica.view_changes.items()},
        sum(len(messages) for messages in replica.future.values()),
    )


def busy_cluster(seed: int):  # type: ignore[no-untyped-def]
    cluster = make_cluster(f=1, clients=2, seed=seed)
    cluster.network.submit(0, [kv.put("a", str(i)) for i in range(5)])
    assert cluster.network.run_until_idle(10_000)
    return cluster


def test_badly_signed_messages_have_no_effect() -> None:
    cluster = busy_cluster(70)
    replica = cluster.replicas[3]
    before = fingerprint(replica)
    prepare = cluster.replicas[1].auth.sign(Prepare(0, 6, b"d" * 32, 1))
    forged = Signed(prepare.message, bytes(64), prepare.payload)
    effects = replica.step(Receive(encode_signed(forged)))
    assert fingerprint(replica) == before
    assert [type(e).__name__ for e in effects] == ["Dropped"]
    assert replica.counters.dropped[("PREPARE", "bad-signature")] == 1


def test_a_message_claiming_another_sender_is_refused() -> None:
    """The claimed sender must be the key that signed: replica 2 cannot speak for 1."""
    cluster = busy_cluster(71)
    replica = cluster.replicas[3]
    before = fingerprint(replica)
    impostor = Authenticator(cluster.config, cluster.replica_signers[2])
    claimed = impostor.sign(Prepare(0, 6, b"d" * 32, 1))
    replica.step(Receive(encode_signed(claimed)))
    assert fingerprint(replica) == before
    assert replica.counters.dropped[("PREPARE", "bad-signature")] == 1


def test_messages_from_non_members_are_refused() -> None:
    cluster = busy_cluster(72)
    replica = cluster.replicas[3]
    before = fingerprint(replica)
    stranger = derive_signer(999, "replica", 9)
    outsider = Authenticator(cluster.config, stranger)
    replica.step(Receive(encode_signed(outsider.sign(Prepare(0, 6, b"d" * 32, 9)))))
    unknown_client = outsider.sign(Request(7, 1, kv.put("x", "y")))
    replica.step(Receive(encode_signed(unknown_client)))
    assert fingerprint(replica) == before
    assert replica.counters.dropped[("PREPARE", "non-member")] == 1
    assert replica.counters.dropped[("REQUEST", "non-member")] == 1


def test_replayed_and_duplicated_messages_have_no_effect() -> None:
    """Old messages (lower views, executed sequence numbers) and duplicates change nothing;
    quorums count distinct senders, so a repeated vote is not a second vote."""
    cluster = make_cluster(f=1, clients=1, seed=73)
    recorded: list[Signed] = []

    def record(source, destination, message):  # type: ignore[no-untyped-def]
        if destination == ("replica", 3):
            recorded.append(message)
        return True

    cluster.network.intercept = record
    cluster.network.submit(0, [kv.put("a", str(i)) for i in range(5)])
    assert cluster.network.run_until_idle(10_000)
    replica = cluster.replicas[3]
    before = fingerprint(replica)
    for message in recorded:
        for _ in range(3):
            effects = replica.step(Receive(encode_signed(message)))
            assert not any(type(e).__name__ == "Executed" for e in effects)
    assert fingerprint(replica) == before
    assert cluster.network.executed[3][-1].seq == 5


def test_one_replica_voting_twice_does_not_make_a_quorum() -> None:
    """Quorums count distinct signers: three COMMITs from one replica are one vote."""
    cluster = make_cluster(f=1, clients=1, seed=74)
    request = cluster.clients[0].auth.sign(Request(0, 1, kv.put("k", "v")))
    batch = (request,)
    digest = batch_digest(batch)
    pre_prepare = cluster.replicas[0].auth.sign(PrePrepare(0, 1, digest, batch, 0))
    replica = cluster.replicas[3]
    replica.step(Receive(encode_signed(pre_prepare)))
    prepare = cluster.replicas[1].auth.sign(Prepare(0, 1, digest, 1))
    replica.step(Receive(encode_signed(prepare)))
    assert replica.slots[1].prepared  # its own PREPARE and replica 1's: 2f
    commit = cluster.replicas[1].auth.sign(Commit(0, 1, digest, 1))
    for _ in range(3):
        replica.step(Receive(encode_signed(commit)))
    assert not replica.slots[1].committed  # its own COMMIT and replica 1's: 2 < 2f+1
    assert replica.counters.dropped[("COMMIT", "duplicate")] == 2
    # A COMMIT for another digest is no vote for this one.
    other = cluster.replicas[2].auth.sign(Commit(0, 1, b"x" * 32, 2))
    replica.step(Receive(encode_signed(other)))
    assert not replica.slots[1].committed
    assert replica.last_executed == 0


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_malformed_bytes_have_no_effect(data: bytes) -> None:
    replica = _SHARED["cluster"].replicas[2]
    before = fingerprint(replica)
    effects = replica.step(Receive(data))
    assert fingerprint(replica) == before
    assert all(type(e).__name__ == "Dropped" for e in effects)


_SHARED = {"cluster": busy_cluster(75)}


def _view_change_cluster():  # type: ignore[no-untyped-def]
    """A cluster where seq 1 is prepared everywhere but committed nowhere."""
    cluster = make_cluster(f=1, clients=1, seed=76)

    def no_commits(source, destination, message):  # type: ignore[no-untyped-def]
        return type(message.message) is not Commit

    cluster.network.intercept = no_commits
    cluster.network.submit(0, [kv.put("k", "v")])
    cluster.network.run(100)
    cluster.network.intercept = None
    return cluster


def _signed_view_changes(cluster):  # type: ignore[no-untyped-def]
    """Replicas 1-3's VIEW-CHANGEs for view 1, each with its certificate for seq 1."""
    return tuple(
        cluster.replicas[r].auth.sign(
            ViewChange(1, 0, (), (cluster.replicas[r].prepared_certificates[1],), r)
        )
        for r in (1, 2, 3)
    )


def test_a_forged_certificate_in_one_view_change_is_discarded_alone() -> None:
    """§4.4: a VIEW-CHANGE with a bad certificate loses that certificate, not its other
    content, and a valid certificate in another VIEW-CHANGE still counts."""
    cluster = _view_change_cluster()
    replica = cluster.replicas[1]
    good = cluster.replicas[2].prepared_certificates[1]
    badly_signed = Signed(good.prepares[1].message, bytes(64), good.prepares[1].payload)
    short = PreparedCertificate(good.pre_prepare, (good.prepares[0], badly_signed))
    fake_request = cluster.clients[0].auth.sign(Request(0, 9, kv.put("k", "evil")))
    fake_batch = (fake_request,)
    fake_pre_prepare = cluster.replicas[3].auth.sign(
        PrePrepare(0, 2, batch_digest(fake_batch), fake_batch, 3)  # not the primary of view 0
    )
    forged = PreparedCertificate(fake_pre_prepare, good.prepares)
    bad = cluster.replicas[3].auth.sign(ViewChange(1, 0, (), (short, forged), 3))
    checked_bad = replica._checked(bad)
    assert checked_bad is not None and checked_bad.certificates == {}
    honest = cluster.replicas[2].auth.sign(ViewChange(1, 0, (), (good,), 2))
    checked_good = replica._checked(honest)
    assert checked_good is not None and set(checked_good.certificates) == {1}


def test_a_new_view_that_does_not_match_its_view_changes_is_rejected() -> None:
    """§4.4: backups recompute O from V and reject a NEW-VIEW whose O differs (here the
    new primary drops the prepared request and puts in its own)."""
    cluster = _view_change_cluster()
    new_primary = cluster.replicas[1]
    view_changes = _signed_view_changes(cluster)
    other_request = cluster.clients[0].auth.sign(Request(0, 5, kv.put("k", "other")))
    batch = (other_request,)
    wrong_o = (new_primary.auth.sign(PrePrepare(1, 1, batch_digest(batch), batch, 1)),)
    bad_new_view = new_primary.auth.sign(NewView(1, view_changes, wrong_o, 1))
    backup = cluster.replicas[3]
    before = fingerprint(backup)
    backup.step(Receive(encode_signed(bad_new_view)))
    assert fingerprint(backup) == before
    assert backup.counters.dropped[("NEW-VIEW", "invalid-new-view")] == 1
    # Too few VIEW-CHANGEs is rejected too.
    short = new_primary.auth.sign(NewView(1, view_changes[:2], (), 1))
    backup.step(Receive(encode_signed(short)))
    assert backup.counters.dropped[("NEW-VIEW", "invalid-new-view")] == 2
    # The same VIEW-CHANGE twice does not make two.
    doubled = new_primary.auth.sign(
        NewView(1, (view_changes[0], view_changes[0], view_changes[1]), (), 1)
    )
    backup.step(Receive(encode_signed(doubled)))
    assert backup.counters.dropped[("NEW-VIEW", "invalid-new-view")] == 3
    assert fingerprint(backup) == before


def test_a_correct_new_view_is_accepted() -> None:
    cluster = _view_change_cluster()
    new_primary = cluster.replicas[1]
    view_changes = _signed_view_changes(cluster)
    certificate = cluster.replicas[1].prepared_certificates[1].pre_prepare.message
    o = (new_primary.auth.sign(attrs.evolve(certificate, view=1, sender=1)),)
    good = new_primary.auth.sign(NewView(1, view_changes, o, 1))
    backup = cluster.replicas[3]
    backup.step(Receive(encode_signed(good)))
    assert (backup.view, backup.view_active) == (1, True)
    assert backup.slots[1].pre_prepare is not None


def test_a_new_view_whose_o_carries_junk_client_signatures_is_rejected() -> None:
    """Regression (hole 1): O's PRE-PREPAREs equal the expected ones by decoded value
    but carry zeroed nested client signatures; a backup must compare bytes and refuse."""
    cluster = _view_change_cluster()
    new_primary = cluster.replicas[1]
    view_changes = _signed_view_changes(cluster)
    certificate = cluster.replicas[1].prepared_certificates[1].pre_prepare.message
    junk = tuple(
        Signed(request.message, bytes(len(request.signature)), request.payload)
        for request in certificate.batch
    )
    forged = attrs.evolve(certificate, view=1, sender=1, batch=junk)
    bad = new_primary.auth.sign(NewView(1, view_changes, (new_primary.auth.sign(forged),), 1))
    backup = cluster.replicas[3]
    before = fingerprint(backup)
    backup.step(Receive(encode_signed(bad)))
    assert fingerprint(backup) == before
    assert backup.counters.dropped[("NEW-VIEW", "invalid-new-view")] == 1


def test_oversized_requests_are_refused_before_their_signature_and_pin_nothing() -> None:
    """Hole 3 of issue 8: the signature cache was keyed by whole payloads and checked
    before the size, so a client sending 100 one-MiB requests pinned ~100 MB. Now
    the size is checked first, and the cache keeps 32-byte digests."""
    cluster = busy_cluster(75)
    replica = cluster.replicas[3]
    client = cluster.clients[0]
    cached = replica.store_bytes()["verified_cache"]
    for timestamp in range(100, 120):
        big = client.auth.sign(Request(0, timestamp, b"x" * (1 << 20)))
        replica.step(Receive(encode_signed(big)))
    assert replica.counters.dropped[("REQUEST", "request-too-large")] == 20
    assert replica.store_bytes()["verified_cache"] == cached
    small = client.auth.sign(Request(0, 200, kv.put("k", "v" * 2000)))
    replica.step(Receive(encode_signed(small)))
    assert replica.store_bytes()["verified_cache"] == cached + 32
    limits = replica.store_limits()
    assert all(size <= limits[store] for store, size in replica.store_bytes().items())


def test_a_replayed_view_change_buys_one_new_view_relay_per_period() -> None:
    """Hole 3 of issue 8: a replica in view 1 answered every replayed VIEW-CHANGE for a
    view it already entered with its whole NEW-VIEW. Now each sender gets one relay per
    T (an honest one re-sends its VIEW-CHANGE once per T), and another after that."""
    from pbft.events import TimerFired

    cluster = make_cluster(f=1, clients=2, seed=76)
    cluster.network.crash(("replica", 0))
    cluster.network.submit(0, [kv.put("a", "1")])
    assert cluster.network.run_until_idle(100_000)
    replica = cluster.replicas[2]
    assert replica.view == 1 and replica.view_active and replica.last_new_view is not None
    old = cluster.replicas[3].auth.sign(
        ViewChange(1, 0, (), tuple(cluster.replicas[3].prepared_certificates.values()), 3)
    )

    def relays(effects) -> int:  # type: ignore[no-untyped-def]
        return sum(
            1
            for e in effects
            if type(getattr(e, "message", None)) is Signed and type(e.message.message) is NewView
        )

    sent = [relays(replica.step(Receive(encode_signed(old)))) for _ in range(10)]
    assert sent == [1] + [0] * 9
    assert replica.counters.dropped[("VIEW-CHANGE", "old-view")] == 10
    replica.step(TimerFired("new-view-relay"))
    assert relays(replica.step(Receive(encode_signed(old)))) == 1
