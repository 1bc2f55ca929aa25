"""The canonical wire encoding (pbft/encoding.py) and the message digests (pbft/messages.py).

Rules checked here:

* every message type round-trips, unsigned and signed, and one message has one encoding;
* only canonical bytes decode: anything else (truncated, extended, oversized, wrongly
  typed, wrongly shaped, non-minimal, nested wrongly) is refused with DecodeError;
* decoding never raises anything but DecodeError, whatever the input;
* a request's digest ignores its signature; a batch digest depends on content and order.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbft.encoding import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_SIGNATURE_BYTES,
    DecodeError,
    decode_message,
    decode_signed,
    encode_message,
    encode_signed,
)
from pbft.messages import (
    MESSAGE_TYPES,
    NULL_DIGEST,
    Checkpoint,
    Commit,
    FetchState,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Reply,
    Request,
    Signed,
    StateSnapshot,
    ViewChange,
    batch_digest,
    request_digest,
)

U64_MAX = 2**63 - 1
DIGEST = b"\xaa" * 32
FAKE_SIGNATURE = b"\x5a" * 64


def pack(value: Any) -> bytes:
    """Plain MessagePack, as an attacker's encoder would produce it."""
    return msgpack.packb(value, use_bin_type=True)


def fake_signed(message: Any, signature: bytes = FAKE_SIGNATURE) -> Signed[Any]:
    """A signed message with a made-up signature (decoding does not check signatures)."""
    return Signed(message, signature, encode_message(message))


def decode_outcome(data: Any) -> Signed[Any] | DecodeError:
    """decode_signed's result or its DecodeError; any other exception propagates."""
    try:
        return decode_signed(data)
    except DecodeError as error:
        return error


def assert_canonical_if_accepted(data: bytes) -> None:
    """decode_signed either refuses ``data`` or accepts exactly the canonical bytes."""
    outcome = decode_outcome(data)
    if isinstance(outcome, DecodeError):
        return
    assert isinstance(outcome, Signed)
    assert encode_signed(outcome) == data
    assert encode_message(outcome.message) == outcome.payload


def assert_same_wire(decoded: Any, original: Any) -> None:
    """Equal messages, and equal bytes (nested payloads and signatures included)."""
    assert decoded == original
    assert type(decoded) is type(original)
    assert encode_message(decoded) == encode_message(original)


# ------------------------------------------------------------------ round trips


def test_samples_cover_every_message_type(samples):
    """The fixtures hold one message of each wire type, so the loops below miss none."""
    assert set(samples) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.TYPE)
def test_unsigned_round_trip(samples, message_type):
    """decode_message(encode_message(m)) == m for every message type."""
    message = samples[message_type]
    encoded = encode_message(message)
    decoded = decode_message(encoded)
    assert_same_wire(decoded, message)
    assert encode_message(decoded) == encoded


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.TYPE)
def test_signed_round_trip(keyring, samples, message_type):
    """A message signed by Authenticator.sign survives encode_signed/decode_signed intact."""
    message = samples[message_type]
    signed = keyring.signer_of(message).sign(message)
    assert signed.payload == encode_message(message)
    wire = encode_signed(signed)
    decoded = decode_signed(wire)
    assert_same_wire(decoded.message, message)
    assert decoded.payload == signed.payload
    assert decoded.signature == signed.signature
    assert encode_signed(decoded) == wire


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.TYPE)
def test_same_message_always_encodes_to_same_bytes(keyring, samples, message_type):
    """Encoding is deterministic: equal messages (even distinct objects) give equal bytes."""
    message = samples[message_type]
    rebuilt = decode_message(encode_message(message))
    assert rebuilt is not message
    assert encode_message(message) == encode_message(message) == encode_message(rebuilt)
    signer = keyring.signer_of(message)
    assert encode_signed(signer.sign(message)) == encode_signed(signer.sign(rebuilt))


def test_nested_signatures_survive_decoding(ed_samples):
    """Nested signed messages keep their own payload and signature bytes through a round trip."""
    new_view = ed_samples[NewView]
    decoded = decode_message(encode_message(new_view))
    for got, sent in zip(decoded.view_changes, new_view.view_changes, strict=True):
        assert (got.payload, got.signature) == (sent.payload, sent.signature)
        certificate = got.message.prepared[0]
        original = sent.message.prepared[0]
        assert certificate.pre_prepare.signature == original.pre_prepare.signature
        for request, sent_request in zip(
            certificate.pre_prepare.message.batch, original.pre_prepare.message.batch, strict=True
        ):
            assert request.signature == sent_request.signature
            assert request.payload == sent_request.payload


def test_known_encoding_of_prepare():
    """The wire form is the MessagePack array [TAG, fields...] in schema order, minimally packed."""
    prepare = Prepare(view=1, seq=2, digest=DIGEST, sender=3)
    assert encode_message(prepare) == b"\x95\x03\x01\x02\xc4\x20" + DIGEST + b"\x03"


def test_known_encoding_of_signed_envelope():
    """A signed message is the array [payload, signature] of two byte strings."""
    signed = fake_signed(FetchState(seq=5, sender=1), b"\x01\x02")
    assert signed.payload == b"\x93\x09\x05\x01"
    assert encode_signed(signed) == b"\x92\xc4\x04\x93\x09\x05\x01\xc4\x02\x01\x02"


def test_extreme_integers_round_trip():
    """0 and 2**63-1 are the bounds of every integer field and both round-trip."""
    for value in (0, 1, 127, 128, 255, 256, 2**32, U64_MAX):
        message = Reply(view=value, timestamp=value, client=value, sender=value, result=b"")
        assert decode_message(encode_message(message)) == message


def test_null_request_pre_prepare_round_trips():
    """A PRE-PREPARE with an empty batch (the null request) is a valid message."""
    message = PrePrepare(view=3, seq=9, digest=NULL_DIGEST, batch=(), sender=3)
    assert decode_message(encode_message(message)) == message


# --------------------------------------------------------- hypothesis strategies

u64s = st.integers(min_value=0, max_value=U64_MAX)
blobs = st.binary(max_size=40)
signatures = st.binary(max_size=MAX_SIGNATURE_BYTES)


def signed_of(messages: st.SearchStrategy[Any]) -> st.SearchStrategy[Signed[Any]]:
    """Signed wrappers (made-up signatures) around messages drawn from ``messages``."""
    return st.builds(fake_signed, messages, signatures)


def tuples_of(elements: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[tuple]:
    return st.lists(elements, max_size=max_size).map(tuple)


requests = st.builds(Request, client=u64s, timestamp=u64s, operation=blobs)
prepares = st.builds(Prepare, view=u64s, seq=u64s, digest=blobs, sender=u64s)
commits = st.builds(Commit, view=u64s, seq=u64s, digest=blobs, sender=u64s)
replies = st.builds(Reply, view=u64s, timestamp=u64s, client=u64s, sender=u64s, result=blobs)
checkpoints = st.builds(Checkpoint, seq=u64s, state_digest=blobs, sender=u64s)
pre_prepares = st.builds(
    PrePrepare,
    view=u64s,
    seq=u64s,
    digest=blobs,
    batch=tuples_of(signed_of(requests)),
    sender=u64s,
)
certificates = st.builds(
    PreparedCertificate,
    pre_prepare=signed_of(pre_prepares),
    prepares=tuples_of(signed_of(prepares)),
)
view_changes = st.builds(
    ViewChange,
    new_view=u64s,
    stable_seq=u64s,
    checkpoint_proof=tuples_of(signed_of(checkpoints)),
    prepared=tuples_of(certificates, max_size=2),
    sender=u64s,
)
new_views = st.builds(
    NewView,
    view=u64s,
    view_changes=tuples_of(signed_of(view_changes), max_size=2),
    pre_prepares=tuples_of(signed_of(pre_prepares), max_size=2),
    sender=u64s,
)
fetch_states = st.builds(FetchState, seq=u64s, sender=u64s)
state_snapshots = st.builds(
    StateSnapshot,
    seq=u64s,
    snapshot=blobs,
    checkpoint_proof=tuples_of(signed_of(checkpoints)),
    sender=u64s,
)
messages = st.one_of(
    requests,
    pre_prepares,
    prepares,
    commits,
    replies,
    checkpoints,
    view_changes,
    new_views,
    fetch_states,
    state_snapshots,
)
signed_messages = signed_of(messages)

# Any MessagePack value, including the kinds the wire form forbids, with array heads that
# look like message tags so that the decoder gets past its first check now and then.
msgpack_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=20)
    | st.text(max_size=10)
)
msgpack_values = st.recursive(
    msgpack_leaves,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
        | st.tuples(st.integers(0, 11), st.lists(children, max_size=6)).map(
            lambda tagged: [tagged[0], *tagged[1]]
        )
    ),
    max_leaves=20,
)


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with one random edit: flip, replace, truncate, append, insert or delete."""
    operation = draw(st.sampled_from(["flip", "replace", "truncate", "append", "insert", "delete"]))
    index = draw(st.integers(0, max(len(base) - 1, 0)))
    if operation == "flip":
        bit = draw(st.integers(0, 7))
        return base[:index] + bytes([base[index] ^ (1 << bit)]) + base[index + 1 :]
    if operation == "replace":
        return base[:index] + draw(st.binary(min_size=1, max_size=1)) + base[index + 1 :]
    if operation == "truncate":
        return base[:index]
    if operation == "append":
        return base + draw(st.binary(min_size=1, max_size=8))
    if operation == "insert":
        return base[:index] + draw(st.binary(min_size=1, max_size=4)) + base[index:]
    end = draw(st.integers(index + 1, len(base)))
    return base[:index] + base[end:]


# ------------------------------------------------------------ property tests


@settings(max_examples=300, deadline=None)
@given(messages)
def test_property_unsigned_round_trip(message):
    """Any message with fields in range round-trips and re-encodes to the same bytes."""
    encoded = encode_message(message)
    decoded = decode_message(encoded)
    assert decoded == message
    assert encode_message(decoded) == encoded


@settings(max_examples=300, deadline=None)
@given(signed_messages)
def test_property_signed_round_trip(signed):
    """Any signed message round-trips with its payload and signature bytes intact."""
    wire = encode_signed(signed)
    decoded = decode_signed(wire)
    assert decoded.message == signed.message
    assert decoded.payload == signed.payload
    assert decoded.signature == signed.signature
    assert encode_signed(decoded) == wire


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_property_arbitrary_bytes_decode_or_raise_decode_error(data):
    """decode_signed of arbitrary bytes returns a Signed or raises DecodeError, nothing else."""
    assert_canonical_if_accepted(data)


@settings(max_examples=300, deadline=None)
@given(msgpack_values, st.binary(max_size=70))
def test_property_arbitrary_msgpack_values_decode_or_raise_decode_error(value, signature):
    """Well-formed MessagePack of any shape, bare or as a signed payload, never escapes."""
    assert_canonical_if_accepted(pack(value))
    assert_canonical_if_accepted(pack([pack(value), signature]))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_mutated_encodings_decode_or_raise_decode_error(data):
    """One edit to a valid encoding either is refused with DecodeError or is itself canonical."""
    signed = data.draw(signed_messages)
    mutated = data.draw(mutations(encode_signed(signed)))
    assert_canonical_if_accepted(mutated)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_mutated_nested_payloads_decode_or_raise_decode_error(data):
    """An edit inside a nested signed payload (a request in a batch) is caught the same way."""
    request = data.draw(signed_of(requests))
    broken = Signed(request.message, request.signature, data.draw(mutations(request.payload)))
    pre_prepare = PrePrepare(view=0, seq=1, digest=DIGEST, batch=(broken,), sender=0)
    assert_canonical_if_accepted(encode_signed(fake_signed(pre_prepare)))


# ------------------------------------------------------------------ rejection


def prepare_wire(
    *,
    header: bytes = b"\x95",
    tag: bytes = b"\x03",
    view: bytes = b"\x01",
    seq: bytes = b"\x02",
    digest: bytes = b"\xc4\x20" + DIGEST,
    sender: bytes = b"\x03",
) -> bytes:
    """Hand-assembled bytes of PREPARE(view=1, seq=2, DIGEST, sender=3), one part replaceable."""
    return header + tag + view + seq + digest + sender


def envelope(payload: bytes, signature: bytes = FAKE_SIGNATURE) -> bytes:
    return pack([payload, signature])


def assert_refused(payload: bytes) -> None:
    """Refused both as a bare message and as the payload of a signed one."""
    with pytest.raises(DecodeError):
        decode_message(payload)
    with pytest.raises(DecodeError):
        decode_signed(envelope(payload))


def test_hand_assembled_prepare_is_the_canonical_encoding():
    """Control for the tests below: the unmodified hand-assembled bytes do decode."""
    assert prepare_wire() == encode_message(Prepare(view=1, seq=2, digest=DIGEST, sender=3))
    assert decode_message(prepare_wire()) == Prepare(view=1, seq=2, digest=DIGEST, sender=3)
    assert decode_signed(envelope(prepare_wire())).message.sender == 3


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.TYPE)
def test_every_truncation_is_refused(ed_samples, message_type):
    """No proper prefix of a signed message's encoding decodes."""
    wire = encode_signed(fake_signed(ed_samples[message_type]))
    for end in range(len(wire)):
        with pytest.raises(DecodeError):
            decode_signed(wire[:end])


@pytest.mark.parametrize("trailer", [b"\x00", b"\xc0", b"\x90", FAKE_SIGNATURE])
def test_trailing_bytes_are_refused(trailer):
    """Bytes after a complete message are refused, outside and inside the envelope."""
    wire = envelope(prepare_wire())
    with pytest.raises(DecodeError):
        decode_signed(wire + trailer)
    assert_refused(prepare_wire() + trailer)


def test_size_limit_is_enforced_at_every_level(ed_samples):
    """Input above max_bytes is refused; input of exactly max_bytes is accepted."""
    wire = encode_signed(fake_signed(ed_samples[NewView]))
    assert decode_signed(wire, max_bytes=len(wire)).message == ed_samples[NewView]
    with pytest.raises(DecodeError, match="exceeds"):
        decode_signed(wire, max_bytes=len(wire) - 1)
    payload = encode_message(ed_samples[NewView])
    with pytest.raises(DecodeError):
        decode_message(payload, max_bytes=len(payload) - 1)


def test_default_size_limit():
    """Without max_bytes, the limit is DEFAULT_MAX_MESSAGE_BYTES."""
    operation = bytes(DEFAULT_MAX_MESSAGE_BYTES)
    wire = encode_signed(fake_signed(Request(client=0, timestamp=1, operation=operation)))
    assert len(wire) > DEFAULT_MAX_MESSAGE_BYTES
    with pytest.raises(DecodeError, match="exceeds"):
        decode_signed(wire)
    with pytest.raises(DecodeError):
        decode_signed(bytes(DEFAULT_MAX_MESSAGE_BYTES + 1))


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param(b"\x00", id="zero"),
        pytest.param(b"\x0b", id="eleven"),
        pytest.param(b"\x7f", id="127"),
        pytest.param(b"\xff", id="negative"),
        pytest.param(b"\xc3", id="true-as-tag-1"),
        pytest.param(b"\xc2", id="false"),
        pytest.param(b"\xc0", id="nil"),
        pytest.param(b"\xc4\x01\x03", id="bytes"),
        pytest.param(b"\xa1\x03", id="str"),
        pytest.param(b"\xcb\x40\x08" + bytes(6), id="float-3"),
        pytest.param(b"\x91\x03", id="array"),
        pytest.param(b"\x81\xa1a\x03", id="map"),
    ],
)
def test_wrong_tag_is_refused(tag):
    """The first element must be the integer tag of a known message type."""
    assert_refused(prepare_wire(tag=tag))


def test_tag_of_another_type_with_prepare_fields_is_refused():
    """A known tag with another type's field layout does not decode (REPLY has 5 fields)."""
    assert_refused(prepare_wire(tag=b"\x05"))
    assert_refused(prepare_wire(tag=b"\x09"))


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        pytest.param("digest", "a" * 32, id="str-instead-of-bytes"),
        pytest.param("digest", 7, id="int-instead-of-bytes"),
        pytest.param("digest", [DIGEST], id="list-instead-of-bytes"),
        pytest.param("view", -1, id="negative-int"),
        pytest.param("view", -(2**63), id="most-negative-int"),
        pytest.param("view", 2**63, id="int-2**63"),
        pytest.param("view", 2**64 - 1, id="int-2**64-1"),
        pytest.param("view", True, id="bool-true"),
        pytest.param("view", False, id="bool-false"),
        pytest.param("seq", None, id="nil"),
        pytest.param("seq", 1.0, id="float"),
        pytest.param("seq", {"seq": 1}, id="map"),
        pytest.param("seq", b"\x01", id="bytes-instead-of-int"),
        pytest.param("seq", "1", id="str-instead-of-int"),
        pytest.param("sender", [3], id="list-instead-of-int"),
    ],
)
def test_wrong_field_types_are_refused(field, bad):
    """Integers are unsigned and below 2**63 (never bool), byte fields are bin, nothing else."""
    fields = {"view": 1, "seq": 2, "digest": DIGEST, "sender": 3}
    fields[field] = bad
    assert_refused(pack([Prepare.TAG, *fields.values()]))


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(pack([]), id="empty-array"),
        pytest.param(pack([Prepare.TAG]), id="tag-only"),
        pytest.param(pack([Prepare.TAG, 1, 2, DIGEST]), id="one-field-short"),
        pytest.param(pack([Prepare.TAG, 1, 2, DIGEST, 3, 4]), id="one-field-extra"),
        pytest.param(pack([Request.TAG, 0, 1]), id="request-short"),
        pytest.param(pack([FetchState.TAG, 1, 2, 3]), id="fetch-state-extra"),
        pytest.param(pack([PrePrepare.TAG, 0, 1, DIGEST, [], 0, 0]), id="pre-prepare-extra"),
    ],
)
def test_wrong_field_counts_are_refused(wire):
    """A message has exactly the fields of its schema."""
    assert_refused(wire)


def test_wrong_field_count_in_nested_certificate_is_refused(ed_samples):
    """A prepared certificate inside VIEW-CHANGE is exactly [pre_prepare, prepares]."""
    certificate = ed_samples[ViewChange].prepared[0]
    pre_prepare = [certificate.pre_prepare.payload, certificate.pre_prepare.signature]
    prepares = [[p.payload, p.signature] for p in certificate.prepares]
    for bad_certificate in ([pre_prepare], [pre_prepare, prepares, []], []):
        assert_refused(pack([ViewChange.TAG, 1, 0, [], [bad_certificate], 1]))
    assert decode_message(pack([ViewChange.TAG, 1, 0, [], [[pre_prepare, prepares]], 1]))


@pytest.mark.parametrize(
    ("part", "wide"),
    [
        pytest.param("view", b"\xcc\x01", id="uint8-for-fixint"),
        pytest.param("view", b"\xcd\x00\x01", id="uint16-for-fixint"),
        pytest.param("view", b"\xce\x00\x00\x00\x01", id="uint32-for-fixint"),
        pytest.param("view", b"\xcf" + (1).to_bytes(8, "big"), id="uint64-for-fixint"),
        pytest.param("view", b"\xd0\x01", id="int8-for-fixint"),
        pytest.param("view", b"\xd3" + (1).to_bytes(8, "big"), id="int64-for-fixint"),
        pytest.param("seq", b"\xcf" + (2).to_bytes(8, "big"), id="uint64-seq"),
        pytest.param("tag", b"\xcc\x03", id="uint8-tag"),
        pytest.param("tag", b"\xcf" + (3).to_bytes(8, "big"), id="uint64-tag"),
        pytest.param("sender", b"\xcd\x00\x03", id="uint16-sender"),
        pytest.param("digest", b"\xc5\x00\x20" + DIGEST, id="bin16-for-bin8"),
        pytest.param("digest", b"\xc6\x00\x00\x00\x20" + DIGEST, id="bin32-for-bin8"),
        pytest.param("header", b"\xdc\x00\x05", id="array16-for-fixarray"),
        pytest.param("header", b"\xdd\x00\x00\x00\x05", id="array32-for-fixarray"),
    ],
)
def test_non_canonical_forms_are_refused(part, wide):
    """The same value in a wider MessagePack form than necessary is not canonical."""
    wire = prepare_wire(**{part: wide})
    # The defect is the form only: a lenient decoder reads the very same value.
    assert msgpack.unpackb(wire) == msgpack.unpackb(prepare_wire())
    with pytest.raises(DecodeError, match="canonical"):
        decode_message(wire)
    with pytest.raises(DecodeError):
        decode_signed(envelope(wire))


def test_non_canonical_integer_above_fixint_is_refused():
    """300 must be packed as uint16; as uint32 or uint64 it is refused."""
    canonical = prepare_wire(view=b"\xcd\x01\x2c")
    assert decode_message(canonical).view == 300
    for wide in (b"\xce\x00\x00\x01\x2c", b"\xcf" + (300).to_bytes(8, "big")):
        with pytest.raises(DecodeError):
            decode_message(prepare_wire(view=wide))


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"\xdc\x00\x02" + pack(prepare_wire()) + pack(FAKE_SIGNATURE), id="array16"),
        pytest.param(
            b"\x92\xc5" + len(prepare_wire()).to_bytes(2, "big") + prepare_wire() + pack(b"s"),
            id="bin16-payload",
        ),
        pytest.param(b"\x92" + pack(prepare_wire()) + b"\xc5\x00\x01s", id="bin16-signature"),
    ],
)
def test_non_canonical_envelope_is_refused(wire):
    """The [payload, signature] envelope must itself be canonical."""
    assert msgpack.unpackb(wire)[0] == prepare_wire()
    with pytest.raises(DecodeError):
        decode_signed(wire)


def test_non_canonical_nested_payload_is_refused(ed_samples):
    """A nested signed request whose payload is not canonical makes the PRE-PREPARE invalid."""
    request = ed_samples[PrePrepare].batch[0]
    wide = b"\xdc\x00\x04" + request.payload[1:]  # array16 header instead of fixarray
    assert msgpack.unpackb(wide) == msgpack.unpackb(request.payload)
    broken = Signed(request.message, request.signature, wide)
    pre_prepare = PrePrepare(view=0, seq=1, digest=DIGEST, batch=(broken,), sender=0)
    assert_refused(encode_message(pre_prepare))


def _wrongly_nested_cases() -> list[Any]:
    prepare = fake_signed(Prepare(view=0, seq=1, digest=DIGEST, sender=1))
    commit = fake_signed(Commit(view=0, seq=1, digest=DIGEST, sender=1))
    request = fake_signed(Request(client=0, timestamp=1, operation=b"op"))
    checkpoint = fake_signed(Checkpoint(seq=32, state_digest=DIGEST, sender=1))
    pre_prepare = fake_signed(PrePrepare(view=0, seq=1, digest=DIGEST, batch=(), sender=0))
    view_change = fake_signed(ViewChange(1, 0, (), (), 1))

    def certificate(pp: Signed[Any], ps: tuple[Signed[Any], ...]) -> PreparedCertificate:
        return PreparedCertificate(pre_prepare=pp, prepares=ps)

    return [
        pytest.param(PrePrepare(0, 1, DIGEST, (prepare,), 0), id="prepare-in-batch"),
        pytest.param(PrePrepare(0, 1, DIGEST, (request, pre_prepare), 0), id="pp-in-batch"),
        pytest.param(ViewChange(1, 32, (commit,), (), 1), id="commit-in-checkpoint-proof"),
        pytest.param(
            ViewChange(1, 0, (), (certificate(prepare, (prepare,)),), 1),
            id="prepare-as-certificate-pre-prepare",
        ),
        pytest.param(
            ViewChange(1, 0, (), (certificate(pre_prepare, (commit,)),), 1),
            id="commit-as-certificate-prepare",
        ),
        pytest.param(NewView(1, (pre_prepare,), (), 1), id="pre-prepare-as-view-change"),
        pytest.param(NewView(1, (view_change,), (prepare,), 1), id="prepare-as-pre-prepare"),
        pytest.param(StateSnapshot(32, b"s", (checkpoint, commit), 0), id="commit-in-state"),
    ]


@pytest.mark.parametrize("message", _wrongly_nested_cases())
def test_nested_signed_message_of_wrong_type_is_refused(message):
    """Each nested slot takes only its schema's message type."""
    with pytest.raises(DecodeError, match="expected a signed"):
        decode_message(encode_message(message))
    with pytest.raises(DecodeError):
        decode_signed(encode_signed(fake_signed(message)))


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param(b"not a list", id="bytes-instead-of-list"),
        pytest.param(None, id="nil-instead-of-list"),
        pytest.param({"a": 1}, id="map-instead-of-list"),
        pytest.param([b"payload-only"], id="bytes-instead-of-signed"),
        pytest.param([[encode_message(Request(0, 1, b""))]], id="signed-without-signature"),
        pytest.param(
            [[encode_message(Request(0, 1, b"")), b"s", b"extra"]], id="signed-with-3-elements"
        ),
        pytest.param([[encode_message(Request(0, 1, b"")), "sig"]], id="str-signature"),
        pytest.param([["payload", b"sig"]], id="str-payload"),
        pytest.param(
            [[encode_message(Request(0, 1, b"")), bytes(MAX_SIGNATURE_BYTES + 1)]],
            id="signature-too-long",
        ),
        pytest.param([[b"\xc1", b"sig"]], id="garbage-payload"),
    ],
)
def test_malformed_nested_signed_messages_are_refused(batch):
    """A nested signed message is exactly [canonical payload, signature of at most 64 bytes]."""
    assert_refused(pack([PrePrepare.TAG, 0, 1, DIGEST, batch, 0]))


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(pack(None), id="nil"),
        pytest.param(pack(1.5), id="float"),
        pytest.param(pack({b"payload": b"signature"}), id="map"),
        pytest.param(pack(True), id="bool"),
        pytest.param(pack(b"bytes"), id="bytes"),
        pytest.param(pack([]), id="empty-array"),
        pytest.param(pack([prepare_wire()]), id="one-element"),
        pytest.param(pack([prepare_wire(), b"sig", b"x"]), id="three-elements"),
        pytest.param(pack([prepare_wire(), None]), id="nil-signature"),
        pytest.param(pack([prepare_wire(), 5]), id="int-signature"),
        pytest.param(pack([prepare_wire(), "sig"]), id="str-signature"),
        pytest.param(pack([prepare_wire(), bytes(MAX_SIGNATURE_BYTES + 1)]), id="long-signature"),
        pytest.param(pack([None, b"sig"]), id="nil-payload"),
        pytest.param(pack([[3, 1, 2, DIGEST, 3], b"sig"]), id="array-payload"),
        pytest.param(pack([prepare_wire().decode("latin-1"), b"sig"]), id="str-payload"),
        pytest.param(b"\x92\xc7\x01\x05x" + pack(b"sig"), id="ext-payload"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"", id="empty-input"),
        pytest.param(b"\x92\xa2\xff\xfe\xc4\x00", id="invalid-utf8-str"),
        pytest.param(b"\x91" * 100_000 + b"\x90", id="deep-nesting"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="huge-array-length"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="huge-bin-length"),
    ],
)
def test_malformed_envelopes_are_refused(wire):
    """Anything but [bytes, bytes<=64] that holds a valid message is refused with DecodeError."""
    with pytest.raises(DecodeError):
        decode_signed(wire)


def test_signature_of_max_length_is_accepted():
    """The 64-byte limit admits an Ed25519 signature exactly; 65 bytes are refused."""
    ok = pack([prepare_wire(), bytes(MAX_SIGNATURE_BYTES)])
    assert decode_signed(ok).signature == bytes(MAX_SIGNATURE_BYTES)
    with pytest.raises(DecodeError):
        decode_signed(pack([prepare_wire(), bytes(MAX_SIGNATURE_BYTES + 1)]))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bytearray(envelope(prepare_wire())), id="bytearray"),
        pytest.param(memoryview(envelope(prepare_wire())), id="memoryview"),
        pytest.param(envelope(prepare_wire()).decode("latin-1"), id="str"),
        pytest.param(None, id="none"),
        pytest.param(0, id="int"),
        pytest.param([prepare_wire(), FAKE_SIGNATURE], id="list"),
    ],
)
def test_non_bytes_input_is_refused(data):
    """Only bytes are decoded; other objects give DecodeError, not TypeError."""
    with pytest.raises(DecodeError):
        decode_signed(data)
    with pytest.raises(DecodeError):
        decode_message(data)


# ------------------------------------------------------------------- digests


def test_request_digest_ignores_the_signature():
    """Two signatures on one request give one digest (signatures are not identifiers)."""
    request = Request(client=1, timestamp=5, operation=b"op")
    first = fake_signed(request, b"\x01" * 64)
    second = fake_signed(request, b"\x02" * 64)
    assert first == second  # equality ignores signatures too
    assert request_digest(first) == request_digest(second)
    assert request_digest(fake_signed(request, b"")) == request_digest(first)


def test_request_digest_ignores_real_signatures_from_different_keys(ed_keyring, hash_keyring):
    """The same request signed under two schemes still has one digest."""
    request = Request(client=0, timestamp=3, operation=b"op")
    ed = ed_keyring.client(0).sign(request)
    keyed = hash_keyring.client(0).sign(request)
    assert ed.signature != keyed.signature
    assert request_digest(ed) == request_digest(keyed)


def test_request_digest_is_sha256_of_the_canonical_bytes():
    """The digest is over the canonical encoding, so every replica computes the same one."""
    request = Request(client=1, timestamp=5, operation=b"op")
    expected = hashlib.sha256(encode_message(request)).digest()
    assert request_digest(fake_signed(request)) == expected


def test_request_digest_differs_for_different_requests():
    """Changing any field of a request changes its digest."""
    base = Request(client=1, timestamp=5, operation=b"op")
    variants = [
        base,
        Request(client=2, timestamp=5, operation=b"op"),
        Request(client=1, timestamp=6, operation=b"op"),
        Request(client=1, timestamp=5, operation=b"oq"),
    ]
    assert len({request_digest(fake_signed(v)) for v in variants}) == len(variants)


def test_batch_digest_depends_on_content_and_order():
    """Different batches, and the same requests in another order, give different digests."""
    a = fake_signed(Request(client=0, timestamp=1, operation=b"a"))
    b = fake_signed(Request(client=1, timestamp=1, operation=b"b"))
    batches = [(), (a,), (b,), (a, b), (b, a), (a, a), (a, b, a)]
    digests = [batch_digest(batch) for batch in batches]
    assert len(set(digests)) == len(batches)
    assert batch_digest(()) == NULL_DIGEST


def test_batch_digest_ignores_signatures():
    """Re-signing the requests of a batch does not change the batch digest."""
    requests_ = [Request(client=c, timestamp=1, operation=b"x") for c in range(3)]
    first = tuple(fake_signed(r, b"\x01" * 64) for r in requests_)
    second = tuple(fake_signed(r, b"\x02" * 32) for r in requests_)
    assert batch_digest(first) == batch_digest(second)


def test_batch_digest_is_not_a_request_digest():
    """A one-request batch digest differs from that request's digest (domain separation)."""
    a = fake_signed(Request(client=0, timestamp=1, operation=b"a"))
    assert batch_digest((a,)) != request_digest(a)


@settings(max_examples=200, deadline=None)
@given(tuples_of(signed_of(requests), max_size=4), tuples_of(signed_of(requests), max_size=4))
def test_property_batch_digest_equal_iff_same_request_payloads(first, second):
    """Two batches have one digest exactly when they hold the same requests in the same order."""
    same = [r.payload for r in first] == [r.payload for r in second]
    assert (batch_digest(first) == batch_digest(second)) == same


def test_schema_lists_fields_in_the_class_order() -> None:
    """Decoding builds messages positionally, so SCHEMA must follow the attrs field order."""
    import attrs

    from pbft.messages import MESSAGE_TYPES, PreparedCertificate

    for cls in (*MESSAGE_TYPES, PreparedCertificate):
        assert [a.name for a in attrs.fields(cls)] == [name for name, _ in cls.SCHEMA], cls


def test_a_wrong_field_count_is_named_in_the_error() -> None:
    """The error says how many fields the type has and how many came: the line a
    replica logs for a refused message names the defect."""
    for extra in ([], [7], [7, 8]):
        wire = pack([Prepare.TAG, 1, 2, DIGEST, 3, *extra][: 5 + len(extra)])
        if not extra:
            wire = pack([Prepare.TAG, 1, 2, DIGEST])
        got = 3 if not extra else 4 + len(extra)
        with pytest.raises(DecodeError, match=f"expected 4 fields, got {got}$"):
            decode_message(wire)
