"""Equivocation evidence: two validly signed, conflicting messages from one sender for one
slot are kept as a proof that anyone can check offline (pbft.evidence).

Castro & Liskov §4.2: a backup accepts a PRE-PREPARE "provided it has not accepted a
pre-prepare for view v and sequence number n containing a different digest", and quorums
count one vote per replica. The replica still refuses the second message exactly as
before; these tests check that it now also keeps the pair, once, and that the pair proves
what it claims and nothing more.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from pbft import service as kv
from pbft.auth import Authenticator
from pbft.config import ClusterConfig, ProtocolParams
from pbft.crypto import KEYED_HASH
from pbft.encoding import encode_signed
from pbft.events import Dropped, EquivocationDetected, Receive
from pbft.evidence import (
    Evidence,
    EvidenceError,
    check_against_cluster,
    conflicting,
    decode_evidence,
    encode_evidence,
    evidence_file_name,
    verify_evidence,
    verify_evidence_offline,
)
from pbft.messages import (
    Checkpoint,
    Commit,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Request,
    Signed,
    ViewChange,
    batch_digest,
)
from pbft.replica import Replica
from pbft.simnet import LinkFaults, SimCluster, make_cluster

Pair = tuple[Signed[Any], Signed[Any]]


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def deliver(replica: Replica, signed: Signed[Any]) -> list[Any]:
    return replica.step(Receive(encode_signed(signed)))


def detected(effects: list[Any]) -> list[Evidence]:
    return [effect.evidence for effect in effects if type(effect) is EquivocationDetected]


def pre_prepare_pair(cluster: SimCluster, seq: int = 1) -> Pair:
    """The primary of view 0 proposes two different batches for (0, seq)."""
    client = cluster.clients[0].auth
    batches = [(client.sign(Request(0, seq * 10 + i, kv.put("k", str(i)))),) for i in range(2)]
    primary = cluster.replicas[0].auth
    first, second = (
        primary.sign(PrePrepare(0, seq, batch_digest(batch), batch, 0)) for batch in batches
    )
    return first, second


def vote_pair(kind: type, sender: int = 1, seq: int = 1) -> Callable[[SimCluster], Pair]:
    def make(cluster: SimCluster) -> Pair:
        auth = cluster.replicas[sender].auth
        return (
            auth.sign(kind(0, seq, digest(f"a{seq}"), sender)),
            auth.sign(kind(0, seq, digest(f"b{seq}"), sender)),
        )

    return make


def checkpoint_pair(cluster: SimCluster) -> Pair:
    auth = cluster.replicas[2].auth
    seq = cluster.params.checkpoint_interval
    return auth.sign(Checkpoint(seq, digest("a"), 2)), auth.sign(Checkpoint(seq, digest("b"), 2))


def view_change_pair(cluster: SimCluster) -> Pair:
    """Replica 2 tells one replica it prepared nothing, and then that it prepared seq 1."""
    auth = cluster.replicas[2].auth
    certificate = PreparedCertificate(pre_prepare_pair(cluster)[0], ())
    return (
        auth.sign(ViewChange(1, 0, (), (), 2)),
        auth.sign(ViewChange(1, 0, (), (certificate,), 2)),
    )


PAIRS: dict[str, Callable[[SimCluster], Pair]] = {
    "PRE-PREPARE": pre_prepare_pair,
    "PREPARE": vote_pair(Prepare),
    "COMMIT": vote_pair(Commit),
    "CHECKPOINT": checkpoint_pair,
    "VIEW-CHANGE": view_change_pair,
}


def held(replica: Replica, signed: Signed[Any]) -> Signed[Any] | None:
    """The message of ``signed``'s sender that ``replica`` keeps for ``signed``'s slot."""
    message = signed.message
    sender = message.sender
    kind = type(message)
    if kind is PrePrepare:
        return replica.slots[message.seq].pre_prepare
    if kind is Prepare:
        return replica.slots[message.seq].prepares.get(sender)
    if kind is Commit:
        return replica.slots[message.seq].commits.get(sender)
    if kind is Checkpoint:
        return replica.checkpoint_votes[message.seq].get(sender)
    checked = replica.view_changes[message.new_view].get(sender)
    return None if checked is None else checked.signed


# ----------------------------------------------------------------------- detection


@pytest.mark.parametrize("phase", sorted(PAIRS))
def test_a_conflicting_second_message_is_kept_once_as_evidence(phase: str) -> None:
    """The second message is refused as before, the pair is recorded once per slot and
    announced, and the first message stays the one the replica uses."""
    cluster = make_cluster(f=1, clients=1, seed=90)
    replica = cluster.replicas[3]
    first, second = PAIRS[phase](cluster)
    assert detected(deliver(replica, first)) == []
    effects = deliver(replica, second)
    assert detected(effects) == [Evidence(first, second)]
    assert any(type(effect) is Dropped for effect in effects)
    kept = held(replica, first)
    assert kept is not None and kept.payload == first.payload
    assert list(replica.evidence.values()) == [Evidence(first, second)]
    assert replica.counters.dropped[(phase, "equivocation")] == 1

    # Again, in either order: still one proof, one count, no new notice.
    assert detected(deliver(replica, second)) == []
    assert detected(deliver(replica, first)) == []
    assert len(replica.evidence) == 1
    assert replica.counters.dropped[(phase, "equivocation")] == 1
    kept = held(replica, first)
    assert kept is not None and kept.payload == first.payload


@pytest.mark.parametrize("phase", sorted(PAIRS))
def test_retransmissions_are_duplicates_not_evidence(phase: str) -> None:
    """A message received twice is a plain duplicate: an honest replica re-sends."""
    cluster = make_cluster(f=1, clients=1, seed=91)
    replica = cluster.replicas[3]
    first, _ = PAIRS[phase](cluster)
    for _ in range(3):
        assert detected(deliver(replica, first)) == []
    assert replica.evidence == {}
    assert replica.counters.dropped_for("equivocation") == 0


def test_disagreeing_replicas_and_different_slots_are_not_evidence() -> None:
    """Two replicas that vote differently, or one replica voting on two slots, contradict
    nobody: only one sender saying two things about one slot is equivocation."""
    cluster = make_cluster(f=1, clients=1, seed=92)
    replica = cluster.replicas[3]
    one, two = cluster.replicas[1].auth, cluster.replicas[2].auth
    messages = [
        one.sign(Prepare(0, 1, digest("a"), 1)),
        two.sign(Prepare(0, 1, digest("b"), 2)),
        one.sign(Prepare(0, 2, digest("b"), 1)),
        one.sign(Commit(0, 1, digest("b"), 1)),
    ]
    for message in messages:
        assert detected(deliver(replica, message)) == []
    assert replica.evidence == {}


def test_a_primary_that_equivocates_is_caught_and_the_backups_still_agree() -> None:
    """§4.2: backups that accepted the first PRE-PREPARE go on to commit it; the one that
    is shown the second as well keeps the proof."""
    cluster = make_cluster(f=1, clients=1, seed=93)
    first, second = pre_prepare_pair(cluster)
    for backup in (1, 2, 3):
        cluster.network.deliver_bytes(("replica", backup), encode_signed(first))
    cluster.network.deliver_bytes(("replica", 1), encode_signed(second))
    cluster.network.run(200)
    notices = [
        (address, notice.evidence)
        for _, address, notice in cluster.network.notices
        if type(notice) is EquivocationDetected
    ]
    assert notices == [(("replica", 1), Evidence(first, second))]
    for backup in (1, 2, 3):
        executed = cluster.network.executed[backup]
        assert [(e.seq, e.digest) for e in executed] == [(1, first.message.digest)]


def test_evidence_is_bounded_one_proof_per_sender_and_phase() -> None:
    """A faulty replica cannot fill an honest one's memory with proofs: one proof per
    (sender, phase) is kept and announced (it suffices to prove the sender faulty);
    every further conflict is still counted."""
    cluster = make_cluster(f=1, clients=1, seed=94)
    replica = cluster.replicas[3]
    pairs = [vote_pair(Prepare, sender, seq)(cluster) for sender in (1, 2) for seq in range(1, 41)]
    announced = []
    for first, second in pairs:
        deliver(replica, first)
        announced += detected(deliver(replica, second))
    assert [(e.sender, e.seq) for e in announced] == [(1, 1), (2, 1)]
    assert sorted(replica.evidence) == [(1, "PREPARE", 0, 1), (2, "PREPARE", 0, 1)]
    assert replica.counters.dropped[("PREPARE", "equivocation")] == 80
    held = replica.store_bytes()["evidence"]
    assert 0 < held <= replica.store_limits()["evidence"]
    assert held == sum(len(e.first.payload) + len(e.second.payload) for e in announced)


# -------------------------------------------------------------------- verifying


@pytest.mark.parametrize("phase", sorted(PAIRS))
def test_evidence_round_trips_through_its_file_and_verifies(phase: str) -> None:
    cluster = make_cluster(f=1, clients=1, seed=95)
    evidence = Evidence(*PAIRS[phase](cluster))
    assert verify_evidence(evidence, Authenticator(cluster.config)) is None
    data = encode_evidence(evidence, cluster.config)
    document = json.loads(data)
    assert document["format"] == "pbft-evidence/1"
    assert document["phase"] == phase and document["sender"] == evidence.sender
    decoded, cluster_id, scheme, public_key = decode_evidence(data)
    assert decoded == evidence
    assert decoded.first.signature == evidence.first.signature
    assert decoded.second.payload == evidence.second.payload
    assert (cluster_id, scheme) == (cluster.config.cluster_id, "ed25519")
    assert public_key == cluster.config.replica_keys[evidence.sender]
    assert verify_evidence_offline(decoded, cluster_id, scheme, public_key) is None
    assert check_against_cluster(decoded, cluster_id, public_key, cluster.config) is None
    assert evidence_file_name(decoded).startswith(phase.lower() + "-")


def test_evidence_describes_its_slot() -> None:
    cluster = make_cluster(f=1, clients=1, seed=96)
    prepare = Evidence(*vote_pair(Prepare, 2, 5)(cluster))
    checkpoint = Evidence(*checkpoint_pair(cluster))
    view_change = Evidence(*view_change_pair(cluster))
    assert prepare.describe() == "PREPARE (view 0, seq 5)"
    assert evidence_file_name(prepare) == "prepare-v0-n5-from-2.json"
    assert checkpoint.describe() == "CHECKPOINT (seq 32)"
    assert evidence_file_name(checkpoint) == "checkpoint-n32-from-2.json"
    assert view_change.describe() == "VIEW-CHANGE (view 1)"
    assert evidence_file_name(view_change) == "view-change-v1-from-2.json"
    assert prepare.summary() == {"sender": 2, "phase": "PREPARE", "view": 0, "seq": 5}


def _tampered(signed: Signed[Any]) -> Signed[Any]:
    signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    return Signed(signed.message, signature, signed.payload)


def test_verification_refuses_what_proves_nothing() -> None:
    """Both signatures must hold under the cluster's keys and prefix, each over exactly
    the message it claims, and the two must conflict."""
    cluster = make_cluster(f=1, clients=1, seed=97)
    auth = Authenticator(cluster.config)
    first, second = vote_pair(Prepare)(cluster)
    other_sender = cluster.replicas[2].auth.sign(Prepare(0, 1, digest("b1"), 2))
    other_slot = cluster.replicas[1].auth.sign(Prepare(0, 2, digest("b1"), 1))
    swapped = Signed(second.message, first.signature, first.payload)
    cases = {
        "tampered signature": Evidence(first, _tampered(second)),
        "the same message twice": Evidence(first, first),
        "different senders": Evidence(first, other_sender),
        "different slots": Evidence(first, other_slot),
        "a message that is not what was signed": Evidence(first, swapped),
    }
    key = cluster.config.replica_keys[1]
    cluster_id = cluster.config.cluster_id
    for name, evidence in cases.items():
        assert verify_evidence(evidence, auth) is not None, name
        assert verify_evidence_offline(evidence, cluster_id, "ed25519", key) is not None, name
    assert "signature" in (verify_evidence(cases["tampered signature"], auth) or "")
    assert "agree" in (verify_evidence(cases["the same message twice"], auth) or "")
    assert "different senders" in (verify_evidence(cases["different senders"], auth) or "")


def test_evidence_is_bound_to_its_cluster_and_to_the_senders_key() -> None:
    """The signing prefix names the cluster: the same keys in another cluster prove nothing.
    A file's own key is checked against the cluster's configuration when one is given."""
    cluster = make_cluster(f=1, clients=1, seed=98)
    evidence = Evidence(*vote_pair(Commit)(cluster))
    config = cluster.config
    elsewhere = ClusterConfig("another-cluster", config.f, config.replica_keys, config.client_keys)
    assert verify_evidence(evidence, Authenticator(elsewhere)) is not None
    key = config.replica_keys[1]
    assert verify_evidence_offline(evidence, "another-cluster", "ed25519", key) is not None
    assert verify_evidence_offline(evidence, config.cluster_id, "ed25519", key) is None
    wrong_key = config.replica_keys[2]
    assert verify_evidence_offline(evidence, config.cluster_id, "ed25519", wrong_key) is not None
    identity_point = bytes([1]) + bytes(31)  # small order: verifies forged signatures
    reason = verify_evidence_offline(evidence, config.cluster_id, "ed25519", identity_point)
    assert reason is not None and "key" in reason
    assert verify_evidence_offline(evidence, config.cluster_id, KEYED_HASH, key) is not None
    assert check_against_cluster(evidence, "another-cluster", key, config) is not None
    assert check_against_cluster(evidence, config.cluster_id, wrong_key, config) is not None


def test_only_messages_with_a_slot_can_be_evidence() -> None:
    cluster = make_cluster(f=1, clients=1, seed=99)
    request = cluster.clients[0].auth.sign(Request(0, 1, kv.put("k", "v")))
    with pytest.raises(EvidenceError):
        Evidence(request, request)
    prepare, _ = vote_pair(Prepare)(cluster)
    commit = cluster.replicas[1].auth.sign(Commit(0, 1, digest("b1"), 1))
    assert not conflicting(prepare, commit)


def test_keyed_hash_evidence_is_never_written() -> None:
    """The simulator's keyed-hash 'public' key is the secret: a file would leak it."""
    cluster = make_cluster(f=1, clients=1, seed=100, scheme=KEYED_HASH)
    evidence = Evidence(*vote_pair(Prepare)(cluster))
    assert verify_evidence(evidence, Authenticator(cluster.config)) is None
    with pytest.raises(ValueError, match="keyed-hash"):
        encode_evidence(evidence, cluster.config)


# ------------------------------------------------------------------- malformed files


def _document(cluster: SimCluster) -> dict[str, Any]:
    return json.loads(encode_evidence(Evidence(*vote_pair(Prepare)(cluster)), cluster.config))


def _mutations(cluster: SimCluster) -> dict[str, bytes]:
    request = cluster.clients[0].auth.sign(Request(0, 1, kv.put("k", "v")))

    def changed(**fields: Any) -> bytes:
        document = _document(cluster)
        document.update(fields)
        return json.dumps(document).encode()

    without_seq = _document(cluster)
    del without_seq["seq"]
    valid = json.dumps(_document(cluster))
    return {
        "not UTF-8": b"\xff\xfe",
        "not JSON": b"garbage",
        "not an object": b"[1, 2]",
        "deeply nested": b"[" * 100_000,
        "another format": changed(format="pbft-evidence/9"),
        "a missing field": json.dumps(without_seq).encode(),
        "an unknown field": changed(comment="trust me"),
        "a field twice": valid.replace('"format"', '"seq": 1, "format"', 1).encode(),
        "a boolean sender": changed(sender=True),
        "a fractional view": changed(view=0.5),
        "a negative seq": changed(seq=-1),
        "uppercase hex": changed(first=_document(cluster)["first"].upper()),
        "hex with spaces": changed(first="00 11"),
        "bytes that are no message": changed(first="c0ffee"),
        "a request as evidence": changed(first=encode_signed(request).hex()),
        "a header that does not match": changed(seq=2),
        "keyed-hash": changed(scheme=KEYED_HASH),
        "a short key": changed(sender_public_key="00" * 31),
        "a cluster id with a bar": changed(cluster_id="a|b"),
    }


def test_malformed_files_are_refused_with_one_line() -> None:
    cluster = make_cluster(f=1, clients=1, seed=101)
    for name, data in _mutations(cluster).items():
        with pytest.raises(EvidenceError) as raised:
            decode_evidence(data)
        message = str(raised.value)
        assert message and "\n" not in message, name


def test_oversized_files_are_refused_before_parsing() -> None:
    cluster = make_cluster(f=1, clients=1, seed=102)
    data = encode_evidence(Evidence(*view_change_pair(cluster)), cluster.config)
    decode_evidence(data, max_message_bytes=len(data))
    with pytest.raises(EvidenceError, match="more than evidence"):
        decode_evidence(data + b" " * 70_000, max_message_bytes=16)


# ------------------------------------------------------------ honest replicas stay clean


def test_honest_replicas_on_a_lossy_network_are_never_accused() -> None:
    """Retransmissions, duplicated and reordered messages, checkpoints and a view change:
    honest replicas say one thing per slot, so no evidence appears."""
    params = ProtocolParams(checkpoint_interval=4, log_window=8, view_change_timeout_ticks=300)
    faults = LinkFaults(drop=0.05, duplicate=0.2, min_delay_ticks=1, max_delay_ticks=20)
    cluster = make_cluster(f=1, clients=2, seed=103, params=params, faults=faults)
    for client in cluster.clients:
        cluster.network.submit(client, [kv.put(f"k{client}", str(i)) for i in range(12)])
    cluster.network.run(400)
    cluster.network.crash(("replica", 0))
    assert cluster.network.run_until_idle(100_000)
    assert all(replica.view >= 1 for i, replica in cluster.replicas.items() if i != 0)
    assert max(replica.low_watermark for replica in cluster.replicas.values()) >= 4
    for _, _, notice in cluster.network.notices:
        assert type(notice) is not EquivocationDetected, notice
    assert all(not replica.evidence for replica in cluster.replicas.values())


def test_a_new_primary_restarted_after_its_new_view_is_not_caught_equivocating() -> None:
    """Restart amnesia (PBFT-NOTES.md): the O of a NEW-VIEW binds its primary like any
    PRE-PREPARE it sent. A primary that forgot it would reuse its sequence numbers for
    other batches, and the backups would rightly hold the proof against it."""
    from tests.protocol.test_recovery import journaled, restart

    cluster = make_cluster(f=1, clients=2, seed=80)
    journals = journaled(cluster)
    cluster.network.intercept = lambda source, destination, message: (
        message is None or type(message.message) is not Commit
    )
    cluster.network.invoke(0, kv.put("k", "A"))
    cluster.network.run(50)
    cluster.network.crash(("replica", 0))
    new_primary = cluster.replicas[1]
    assert cluster.network.run_until(
        lambda: new_primary.view == 1 and new_primary.view_active, 50_000
    )
    restart(cluster, 1, journals[1])
    cluster.network.intercept = None
    other = cluster.clients[1].auth.sign(Request(1, 1, kv.put("k", "B")))
    cluster.network.deliver_bytes(("replica", 1), encode_signed(other))
    cluster.network.run(3000)
    accused = [
        notice.evidence.sender
        for _, _, notice in cluster.network.notices
        if type(notice) is EquivocationDetected
    ]
    assert accused == []
