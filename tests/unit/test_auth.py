"""Authentication of received messages (pbft/auth.py), under both signature schemes.

Rules checked here:

* Authenticator.open returns the message when it is properly signed by the principal it
  names as its sender, and otherwise a Rejection with the reason; it never raises;
* the signer must be a member: a replica id below n, a configured client id;
* a message of a type the recipient does not take is refused as wrongly addressed;
* signatures are domain-separated by message type and by cluster id.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbft.auth import Authenticator, Rejection
from pbft.crypto import ED25519, KEYED_HASH, SIGNATURE_BYTES, signing_prefix
from pbft.encoding import encode_message, encode_signed
from pbft.messages import (
    MESSAGE_TYPES,
    Commit,
    NewView,
    Prepare,
    PrePrepare,
    Reply,
    ReplyDigest,
    Request,
    Signed,
)
from pbft.replica import REPLICA_ACCEPTS

DIGEST = b"\xd1" * 32
CLIENT_ACCEPTS = (Reply, ReplyDigest)


def accepts_for(message: Any) -> tuple[type, ...]:
    """The accept-list of the principal a message of this type is addressed to."""
    return CLIENT_ACCEPTS if isinstance(message, CLIENT_ACCEPTS) else REPLICA_ACCEPTS


def receiver(keyring: Any, message: Any) -> Authenticator:
    """An authenticator of a principal that receives ``message``'s type."""
    return keyring.client(0) if isinstance(message, CLIENT_ACCEPTS) else keyring.replica(0)


def with_signature(signed: Signed[Any], signature: bytes) -> Signed[Any]:
    return Signed(signed.message, signature, signed.payload)


def flip_bit(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


def prepare(sender: int = 1) -> Prepare:
    return Prepare(view=0, seq=1, digest=DIGEST, sender=sender)


# ------------------------------------------------------------------ acceptance


def test_open_accepts_a_properly_signed_message_and_returns_it(keyring):
    """A PREPARE signed by replica 1 naming sender 1 is returned intact by open."""
    signed = keyring.replica(1).sign(prepare(sender=1))
    opened = keyring.replica(0).open(encode_signed(signed), REPLICA_ACCEPTS)
    assert isinstance(opened, Signed)
    assert opened.message == prepare(sender=1)
    assert opened.payload == signed.payload
    assert opened.signature == signed.signature


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.TYPE)
def test_open_accepts_every_message_type_from_its_signer(keyring, samples, message_type):
    """Each type, signed by the principal it names, opens at a principal that takes it."""
    message = samples[message_type]
    signed = keyring.signer_of(message).sign(message)
    opened = receiver(keyring, message).open(encode_signed(signed), accepts_for(message))
    assert isinstance(opened, Signed)
    assert opened.message == message


def test_open_does_not_need_a_private_key(keyring):
    """Verification uses only the configuration's public keys."""
    signed = keyring.client(1).sign(Request(client=1, timestamp=4, operation=b"op"))
    opened = keyring.observer().open(encode_signed(signed), REPLICA_ACCEPTS)
    assert isinstance(opened, Signed)


def test_sign_without_private_key_raises(keyring):
    """An authenticator without a signer refuses to sign rather than emit garbage."""
    with pytest.raises(RuntimeError):
        keyring.observer().sign(prepare())


def test_signing_is_deterministic(keyring):
    """Both schemes sign deterministically, so a message re-sent is byte-identical."""
    first = keyring.replica(2).sign(prepare(sender=2))
    second = keyring.replica(2).sign(prepare(sender=2))
    assert first.signature == second.signature
    assert len(first.signature) == SIGNATURE_BYTES[keyring.scheme]


def test_nested_signatures_verify(keyring, samples):
    """verify and verify_all accept the properly signed messages nested in a NEW-VIEW."""
    auth = keyring.replica(0)
    new_view = samples[NewView]
    assert auth.verify_all(new_view.view_changes)
    assert auth.verify_all(new_view.pre_prepares)
    for view_change in new_view.view_changes:
        certificate = view_change.message.prepared[0]
        assert auth.verify(certificate.pre_prepare) is None
        assert auth.verify_all(certificate.pre_prepare.message.batch)
        assert auth.verify_all(certificate.prepares)
        assert auth.verify_all(view_change.message.checkpoint_proof)


def test_verify_all_fails_if_one_nested_signature_is_bad(keyring, samples):
    """One forged element spoils the whole collection."""
    auth = keyring.replica(0)
    batch = samples[PrePrepare].batch
    forged = (*batch[:-1], with_signature(batch[-1], flip_bit(batch[-1].signature)))
    assert auth.verify_all(batch)
    assert not auth.verify_all(forged)


# ------------------------------------------------------------------- refusal


def test_bad_signature_is_refused(keyring):
    """A single flipped bit anywhere in the signature makes it bad-signature."""
    signed = keyring.replica(1).sign(prepare(sender=1))
    auth = keyring.replica(0)
    for index in (0, len(signed.signature) // 2, len(signed.signature) - 1):
        forged = with_signature(signed, flip_bit(signed.signature, index))
        assert auth.open(encode_signed(forged), REPLICA_ACCEPTS) == Rejection(
            "PREPARE", "bad-signature"
        )


@pytest.mark.parametrize("length", [0, 1, 31, 33, 63])
def test_signature_of_wrong_length_is_refused(keyring, length):
    """A signature of the wrong length for the scheme is bad-signature, not an error."""
    signed = keyring.replica(1).sign(prepare(sender=1))
    forged = with_signature(signed, (signed.signature * 2)[:length])
    assert keyring.replica(0).open(encode_signed(forged), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "bad-signature"
    )


def test_tampered_payload_is_refused(keyring):
    """The signature covers the payload: a changed field invalidates it."""
    signed = keyring.replica(1).sign(prepare(sender=1))
    altered = Prepare(view=0, seq=2, digest=DIGEST, sender=1)
    forged = Signed(altered, signed.signature, encode_message(altered))
    assert keyring.replica(0).open(encode_signed(forged), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "bad-signature"
    )


@pytest.mark.parametrize("sender", [4, 5, 2**32, 2**63 - 1])
def test_replica_message_from_non_member_is_refused(keyring, sender):
    """A sender id >= n names no replica: non-member, whoever signed it."""
    message = prepare(sender=sender)
    signed = Signed(message, keyring.replica_signers[1].sign(b"x"), encode_message(message))
    assert keyring.replica(0).open(encode_signed(signed), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "non-member"
    )
    assert keyring.replica(0).verify(signed) == "non-member"


@pytest.mark.parametrize("client", [2, 3, 2**63 - 1])
def test_request_from_unconfigured_client_is_refused(keyring, client):
    """Only clients 0 and 1 are configured; a REQUEST naming client 2 or above is non-member."""
    message = Request(client=client, timestamp=1, operation=b"op")
    # Signed by replica 0's key, which a confused lookup might wrongly accept.
    signed = Signed(message, keyring.replica_signers[0].sign(b"x"), encode_message(message))
    assert keyring.replica(0).open(encode_signed(signed), REPLICA_ACCEPTS) == Rejection(
        "REQUEST", "non-member"
    )


def test_message_signed_by_one_replica_claiming_another_is_refused(keyring):
    """Replica 1 cannot speak for replica 2: its signature on sender=2 is bad."""
    forged = keyring.replica(1).sign(prepare(sender=2))
    assert keyring.replica(0).open(encode_signed(forged), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "bad-signature"
    )


def test_request_signed_by_replica_key_is_refused(keyring):
    """A replica cannot forge a client's request: client requests need the client's key."""
    forged = keyring.replica(0).sign(Request(client=0, timestamp=1, operation=b"op"))
    assert keyring.replica(1).open(encode_signed(forged), REPLICA_ACCEPTS) == Rejection(
        "REQUEST", "bad-signature"
    )


def test_replica_message_signed_by_client_key_is_refused(keyring):
    """Client 0 cannot pass as replica 0, although both have id 0."""
    forged = keyring.client(0).sign(prepare(sender=0))
    assert keyring.replica(1).open(encode_signed(forged), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "bad-signature"
    )


def test_one_clients_request_claiming_another_client_is_refused(keyring):
    """Client 1 cannot submit requests in client 0's name."""
    forged = keyring.client(1).sign(Request(client=0, timestamp=1, operation=b"op"))
    assert keyring.replica(0).open(encode_signed(forged), REPLICA_ACCEPTS) == Rejection(
        "REQUEST", "bad-signature"
    )


@pytest.mark.parametrize("message_type", CLIENT_ACCEPTS, ids=lambda t: t.TYPE)
def test_reply_offered_to_a_replica_is_wrongly_addressed(keyring, samples, message_type):
    """REPLY and REPLY-DIGEST are not on a replica's accept-list: wrong-recipient, even if
    validly signed."""
    assert message_type not in REPLICA_ACCEPTS
    reply = samples[message_type]
    signed = keyring.signer_of(reply).sign(reply)
    assert keyring.replica(0).open(encode_signed(signed), REPLICA_ACCEPTS) == Rejection(
        message_type.TYPE, "wrong-recipient"
    )


@pytest.mark.parametrize(
    "message_type", [t for t in MESSAGE_TYPES if t not in CLIENT_ACCEPTS], ids=lambda t: t.TYPE
)
def test_replica_messages_offered_to_client_are_wrong_recipient(keyring, samples, message_type):
    """A client takes only REPLY and REPLY-DIGEST; everything else is wrong-recipient."""
    message = samples[message_type]
    signed = keyring.signer_of(message).sign(message)
    assert keyring.client(0).open(encode_signed(signed), CLIENT_ACCEPTS) == Rejection(
        message_type.TYPE, "wrong-recipient"
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x92\xc4\x00\xc4\x00", id="empty-payload"),
        pytest.param(bytearray(b"\x90"), id="bytearray"),
        pytest.param("text", id="str"),
        pytest.param(None, id="none"),
    ],
)
def test_malformed_input_is_refused(keyring, data):
    """Undecodable input is Rejection('?', 'malformed'), never an exception."""
    assert keyring.replica(0).open(data, REPLICA_ACCEPTS) == Rejection("?", "malformed")


def test_truncated_and_extended_messages_are_malformed(keyring):
    """A valid message cut short or with trailing bytes is malformed."""
    wire = encode_signed(keyring.replica(1).sign(prepare(sender=1)))
    auth = keyring.replica(0)
    assert auth.open(wire[:-1], REPLICA_ACCEPTS) == Rejection("?", "malformed")
    assert auth.open(wire + b"\x00", REPLICA_ACCEPTS) == Rejection("?", "malformed")


def test_message_above_the_authenticators_size_limit_is_malformed(keyring):
    """The authenticator's max_message_bytes bounds what it decodes."""
    signed = keyring.client(0).sign(Request(client=0, timestamp=1, operation=bytes(2000)))
    wire = encode_signed(signed)
    small = Authenticator(keyring.config, max_message_bytes=len(wire) - 1)
    exact = Authenticator(keyring.config, max_message_bytes=len(wire))
    assert small.open(wire, REPLICA_ACCEPTS) == Rejection("?", "malformed")
    assert isinstance(exact.open(wire, REPLICA_ACCEPTS), Signed)


def test_a_cached_verification_does_not_bless_another_signature(keyring):
    """After accepting a message, the same payload with a bad signature is still refused."""
    auth = keyring.replica(0)
    signed = keyring.replica(1).sign(prepare(sender=1))
    assert isinstance(auth.open(encode_signed(signed), REPLICA_ACCEPTS), Signed)
    assert isinstance(auth.open(encode_signed(signed), REPLICA_ACCEPTS), Signed)
    forged = with_signature(signed, flip_bit(signed.signature))
    assert auth.open(encode_signed(forged), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "bad-signature"
    )


def test_a_cached_verification_does_not_carry_across_clusters(keyring, make_keyring):
    """A verification remembered by one cluster's authenticator means nothing to another."""
    other = make_keyring(keyring.scheme, cluster_id="other-cluster")
    signed = keyring.replica(1).sign(prepare(sender=1))
    assert isinstance(keyring.replica(0).open(encode_signed(signed), REPLICA_ACCEPTS), Signed)
    assert other.replica(0).open(encode_signed(signed), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "bad-signature"
    )


# ---------------------------------------------------------- domain separation


def test_prepare_signature_is_not_valid_for_the_commit_with_the_same_fields(keyring):
    """PREPARE and COMMIT share a schema; a signature for one never passes for the other."""
    assert Prepare.SCHEMA == Commit.SCHEMA
    signed_prepare = keyring.replica(1).sign(prepare(sender=1))
    commit = Commit(view=0, seq=1, digest=DIGEST, sender=1)
    reused = Signed(commit, signed_prepare.signature, encode_message(commit))
    assert keyring.replica(0).open(encode_signed(reused), REPLICA_ACCEPTS) == Rejection(
        "COMMIT", "bad-signature"
    )
    # And the other way round.
    signed_commit = keyring.replica(1).sign(commit)
    reused_back = Signed(prepare(sender=1), signed_commit.signature, signed_prepare.payload)
    assert keyring.replica(0).open(encode_signed(reused_back), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "bad-signature"
    )


def test_type_prefix_alone_separates_domains(keyring):
    """Over the very same payload bytes, only the COMMIT prefix yields a valid COMMIT signature.

    This isolates the prefix from the tag byte inside the payload: the signer signs
    the COMMIT payload under the PREPARE prefix, under no prefix, and under the COMMIT
    prefix; only the last is accepted.
    """
    commit = Commit(view=0, seq=1, digest=DIGEST, sender=1)
    payload = encode_message(commit)
    signer = keyring.replica_signers[1]
    cluster_id = keyring.config.cluster_id
    auth = keyring.replica(0)
    for data in (signing_prefix(cluster_id, "PREPARE") + payload, payload):
        signed = Signed(commit, signer.sign(data), payload)
        assert auth.open(encode_signed(signed), REPLICA_ACCEPTS) == Rejection(
            "COMMIT", "bad-signature"
        )
    good = Signed(commit, signer.sign(signing_prefix(cluster_id, "COMMIT") + payload), payload)
    assert isinstance(auth.open(encode_signed(good), REPLICA_ACCEPTS), Signed)


def test_signature_from_another_cluster_is_refused(keyring, make_keyring):
    """The same keys in a cluster with another id produce signatures this cluster refuses."""
    other = make_keyring(keyring.scheme, cluster_id="other-cluster")
    assert other.config.replica_keys == keyring.config.replica_keys
    assert other.config.client_keys == keyring.config.client_keys
    for message, sign in (
        (prepare(sender=1), other.replica(1).sign),
        (Request(client=0, timestamp=1, operation=b"op"), other.client(0).sign),
    ):
        wire = encode_signed(sign(message))
        assert keyring.replica(0).open(wire, REPLICA_ACCEPTS) == Rejection(
            message.TYPE, "bad-signature"
        )
        assert isinstance(other.replica(0).open(wire, REPLICA_ACCEPTS), Signed)


def test_signing_prefixes_are_distinct_per_type_and_cluster():
    """Every (cluster, type) pair has its own prefix, and the prefix names protocol version."""
    prefixes = {
        signing_prefix(cluster, cls.TYPE) for cluster in ("a", "b", "ab") for cls in MESSAGE_TYPES
    }
    assert len(prefixes) == 3 * len(MESSAGE_TYPES)
    assert signing_prefix("c", "PREPARE") == b"pbft/1|c|PREPARE|"


def test_signature_from_the_other_scheme_is_refused(ed_keyring, hash_keyring):
    """An Ed25519 signature is not a keyed-hash signature and vice versa."""
    ed_signed = ed_keyring.replica(1).sign(prepare(sender=1))
    hash_signed = hash_keyring.replica(1).sign(prepare(sender=1))
    assert hash_keyring.replica(0).open(encode_signed(ed_signed), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "bad-signature"
    )
    padded = with_signature(hash_signed, hash_signed.signature * 2)
    assert ed_keyring.replica(0).open(encode_signed(padded), REPLICA_ACCEPTS) == Rejection(
        "PREPARE", "bad-signature"
    )
    assert ed_keyring.scheme == ED25519
    assert hash_keyring.scheme == KEYED_HASH


# ------------------------------------------------------------- never raises


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.binary(max_size=300))
def test_property_open_never_raises_on_arbitrary_bytes(ed_keyring, data):
    """open returns a Signed or a Rejection for any bytes."""
    outcome = ed_keyring.replica(0).open(data, REPLICA_ACCEPTS)
    assert isinstance(outcome, Signed | Rejection)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_open_never_raises_on_mutated_messages(keyring, samples, data):
    """A valid message with one byte edited is opened or refused, never raises."""
    message_type = data.draw(st.sampled_from(MESSAGE_TYPES))
    message = samples[message_type]
    wire = encode_signed(keyring.signer_of(message).sign(message))
    index = data.draw(st.integers(0, len(wire) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = wire[:index] + bytes([byte]) + wire[index + 1 :]
    outcome = receiver(keyring, message).open(mutated, accepts_for(message))
    assert isinstance(outcome, Signed | Rejection)
    if isinstance(outcome, Signed):
        # Every byte is covered by the canonical form or the signature: only the
        # "edit" that rewrites a byte with its own value may be accepted.
        assert mutated == wire


# ------------------------------------------------------------ authenticated channels


def _channel_setup() -> tuple[Any, Authenticator, Authenticator]:
    from pbft.simnet import make_cluster

    cluster = make_cluster(f=1, clients=1, seed=77)
    client_auth = Authenticator(cluster.config, channel_types=(Reply,))
    return cluster, client_auth, Authenticator(cluster.config)


def _unsigned(message: Any) -> bytes:
    return encode_signed(Signed(message, b"", encode_message(message)))


def test_an_unsigned_reply_is_authentic_only_on_its_sender_s_channel() -> None:
    _, auth, _ = _channel_setup()
    reply = Reply(0, 1, 0, 2, b"result")
    assert type(auth.open(_unsigned(reply), (Reply,), ("replica", 2))) is Signed
    assert auth.open(_unsigned(reply), (Reply,), None) == Rejection("REPLY", "bad-signature")
    # Replica 3's connection may relay a signed message; it cannot vouch for replica 2's.
    assert auth.open(_unsigned(reply), (Reply,), ("replica", 3)) == Rejection(
        "REPLY", "bad-signature"
    )
    assert auth.open(_unsigned(reply), (Reply,), ("client", 0)) == Rejection(
        "REPLY", "channel-mismatch"
    )


def test_without_channel_types_a_reply_needs_its_signature_on_any_channel() -> None:
    cluster, _, signed_only = _channel_setup()
    reply = Reply(0, 1, 0, 2, b"result")
    assert signed_only.open(_unsigned(reply), (Reply,), ("replica", 2)) == Rejection(
        "REPLY", "bad-signature"
    )
    good = encode_signed(cluster.replicas[2].auth.sign(reply))
    assert type(signed_only.open(good, (Reply,), ("replica", 2))) is Signed


def test_a_channel_never_vouches_for_messages_a_third_party_must_check() -> None:
    """PREPAREs go into certificates: they stay signed whatever channel brought them."""
    cluster, _, _ = _channel_setup()
    replica_auth = Authenticator(cluster.config, channel_types=(Reply,))
    prepare = Prepare(0, 1, DIGEST, 2)
    assert replica_auth.open(_unsigned(prepare), REPLICA_ACCEPTS, ("replica", 2)) == Rejection(
        "PREPARE", "bad-signature"
    )
