"""Key hygiene (pbft/crypto.py) and configuration validation (pbft/config.py).

Rules checked here:

* Ed25519 public keys of small order, non-points and keys of the wrong length are refused;
  generated keys are accepted;
* the ``cryptography`` package accepts a forged signature under the identity key, and
  ClusterConfig refuses that key, so no Authenticator can ever trust it;
* ClusterConfig and ProtocolParams refuse configurations the protocol cannot run with.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pbft.auth import Authenticator, Rejection
from pbft.config import ClusterConfig, ConfigError, ProtocolParams
from pbft.crypto import (
    ED25519,
    KEYED_HASH,
    Ed25519Signer,
    Ed25519Verifier,
    KeyedHashSigner,
    KeyedHashVerifier,
    UnsafeKeyError,
    check_public_key,
    is_small_order,
    make_verifier,
    signing_prefix,
)
from pbft.messages import Prepare
from pbft.simnet import derive_signer

# The eight points of order dividing 8, in canonical RFC 8032 encoding. Each one was
# checked to be a valid curve point of small order (test_small_order_points_are_small_order
# re-checks it on every run), so none needs to be skipped.
SMALL_ORDER_POINTS = {
    "identity (order 1)": "01" + "00" * 31,
    "order 2": "ec" + "ff" * 30 + "7f",
    "order 4, x positive": "00" * 32,
    "order 4, x negative": "00" * 31 + "80",
    "order 8 (a)": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8 (b)": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "order 8 (c)": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8 (d)": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
}
SMALL_ORDER_KEYS = [
    pytest.param(bytes.fromhex(encoding), id=name) for name, encoding in SMALL_ORDER_POINTS.items()
]

IDENTITY_KEY = bytes.fromhex("01" + "00" * 31)
#: R = the identity point, S = 0: [S]B = R + [k]A holds for every k when A is the identity.
FORGED_SIGNATURE = IDENTITY_KEY + bytes(32)

#: The Ed25519 base point: a valid key of large (prime) order.
BASE_POINT = bytes.fromhex("58" + "66" * 31)

# Encodings that are not canonical points: y >= p, or x = 0 with the sign bit set.
NON_POINTS = {
    "y = p (non-canonical 0)": "ed" + "ff" * 30 + "7f",
    "y = p + 1 (non-canonical identity)": "ee" + "ff" * 30 + "7f",
    "all ones": "ff" * 32,
    "identity with sign bit": "01" + "00" * 30 + "80",
    "order-2 point with sign bit": "ec" + "ff" * 31,
    "y = 2 (not on the curve)": "02" + "00" * 31,
}
NON_POINT_KEYS = [
    pytest.param(bytes.fromhex(encoding), id=name) for name, encoding in NON_POINTS.items()
]


def keys(count: int, role: str = "replica", seed: int = 0, scheme: str = ED25519) -> tuple:
    """``count`` distinct deterministic public keys."""
    return tuple(derive_signer(seed, role, i, scheme).public_key for i in range(count))


def config(**overrides: Any) -> ClusterConfig:
    """A valid f=1 Ed25519 cluster of 4 replicas and 2 clients, with some fields replaced."""
    fields: dict[str, Any] = {
        "cluster_id": "test",
        "f": 1,
        "replica_keys": keys(4),
        "client_keys": keys(2, "client"),
    }
    fields.update(overrides)
    return ClusterConfig(**fields)


# ------------------------------------------------------------------ small order


@pytest.mark.parametrize("key", SMALL_ORDER_KEYS)
def test_small_order_points_are_small_order(key):
    """Each listed encoding is a point of order dividing 8 (checks the list itself)."""
    assert len(key) == 32
    assert is_small_order(key)


def test_small_order_points_are_eight_distinct_encodings():
    """The list is the full set of 8 small-order points, not a repetition."""
    assert len(set(SMALL_ORDER_POINTS.values())) == 8


@pytest.mark.parametrize("key", SMALL_ORDER_KEYS)
def test_check_public_key_refuses_small_order_points(key):
    """A small-order key verifies forged signatures, so it is refused."""
    with pytest.raises(UnsafeKeyError, match="small order"):
        check_public_key(key)


@pytest.mark.parametrize("key", SMALL_ORDER_KEYS)
def test_cluster_config_refuses_small_order_keys(key):
    """ClusterConfig refuses a small-order key for a replica, naming the replica."""
    replica_keys = (*keys(3), key)
    with pytest.raises(ConfigError, match=r"replica 3.*small order"):
        config(replica_keys=replica_keys)


@pytest.mark.parametrize("key", NON_POINT_KEYS)
def test_check_public_key_refuses_non_points(key):
    """Encodings that are not canonical curve points are refused (including ones OpenSSL loads)."""
    assert not is_small_order(key)
    with pytest.raises(UnsafeKeyError, match="not a valid curve point"):
        check_public_key(key)
    with pytest.raises(ConfigError, match="client 0"):
        config(client_keys=(key,))


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_check_public_key_refuses_wrong_lengths(length):
    """Ed25519 and keyed-hash keys are exactly 32 bytes."""
    key = (BASE_POINT * 3)[:length]
    with pytest.raises(UnsafeKeyError, match="32 bytes"):
        check_public_key(key)
    with pytest.raises(UnsafeKeyError, match="32 bytes"):
        check_public_key(key, KEYED_HASH)


def test_check_public_key_accepts_generated_keys():
    """Freshly generated and derived keys are of large order and accepted."""
    generated = [Ed25519Signer.generate().public_key for _ in range(16)]
    for key in [*generated, *keys(8), BASE_POINT]:
        assert not is_small_order(key)
        assert check_public_key(key) is None


def test_keyed_hash_keys_are_secrets_not_points():
    """Any 32-byte string is a keyed-hash key, even one that encodes a small-order point."""
    assert check_public_key(IDENTITY_KEY, KEYED_HASH) is None
    assert check_public_key(bytes(32), KEYED_HASH) is None
    with pytest.raises(UnsafeKeyError):
        check_public_key(IDENTITY_KEY, ED25519)


# ------------------------------------------------------- the forgery, and its guard


def test_identity_key_forgery_is_accepted_by_cryptography_but_refused_by_config():
    """THE guard: `cryptography` verifies (R=identity, S=0) under the identity key for any
    message; ClusterConfig therefore refuses that key (replica or client), and so no
    Authenticator can be built that trusts it."""
    public_key = Ed25519PublicKey.from_public_bytes(IDENTITY_KEY)
    messages = [
        b"",
        b"arbitrary message",
        signing_prefix("test", "PREPARE") + b"\x95\x03\x00\x01\xc4\x00\x00",
        bytes(range(256)) * 4,
    ]
    forgery_accepted = []
    for message in messages:
        try:
            public_key.verify(FORGED_SIGNATURE, message)
        except InvalidSignature:
            forgery_accepted.append(False)
        else:
            forgery_accepted.append(True)

    # The guard holds whatever the library does.
    with pytest.raises(ConfigError, match="small order"):
        config(replica_keys=(*keys(3), IDENTITY_KEY))
    with pytest.raises(ConfigError, match="small order"):
        config(client_keys=(keys(1, "client")[0], IDENTITY_KEY))
    # A verifier handed the key directly (bypassing any config) refuses it too.
    with pytest.raises(UnsafeKeyError, match="small order"):
        Ed25519Verifier().verify(IDENTITY_KEY, FORGED_SIGNATURE, messages[1])
    # An Authenticator is built from a ClusterConfig, and none can hold the key: not even
    # one derived from a valid configuration, since evolve re-runs the validation.
    valid = config()
    assert isinstance(Authenticator(valid).open(b"", (Prepare,)), Rejection)
    with pytest.raises(ConfigError, match="small order"):
        attrs.evolve(valid, replica_keys=(*valid.replica_keys[:3], IDENTITY_KEY))

    if not any(forgery_accepted):
        pytest.skip(
            "this cryptography version rejects the identity-key forgery; "
            "the config guard was still checked"
        )
    assert all(forgery_accepted), "the forgery should verify for every message or for none"


# ------------------------------------------------------------- signers/verifiers


@pytest.mark.parametrize("scheme", [ED25519, KEYED_HASH])
def test_signature_verifies_only_for_its_data_and_key(scheme):
    """A signature verifies under its signer's key for its data, and for nothing else."""
    signer = derive_signer(0, "replica", 0, scheme)
    other = derive_signer(0, "replica", 1, scheme)
    verifier = make_verifier(scheme)
    signature = signer.sign(b"data")
    assert verifier.verify(signer.public_key, signature, b"data")
    assert not verifier.verify(signer.public_key, signature, b"datA")
    assert not verifier.verify(other.public_key, signature, b"data")
    assert not verifier.verify(signer.public_key, bytes(len(signature)), b"data")


def test_make_verifier_knows_both_schemes_and_no_other():
    """make_verifier builds the scheme's verifier and refuses unknown schemes."""
    assert isinstance(make_verifier(ED25519), Ed25519Verifier)
    assert isinstance(make_verifier(KEYED_HASH), KeyedHashVerifier)
    with pytest.raises(ValueError, match="unknown signature scheme"):
        make_verifier("rsa")


def test_ed25519_seed_round_trip_and_length_check():
    """A signer rebuilt from its seed has the same key; seeds are exactly 32 bytes."""
    signer = Ed25519Signer.generate()
    again = Ed25519Signer.from_seed(signer.private_bytes())
    assert again.public_key == signer.public_key
    assert again.sign(b"m") == signer.sign(b"m")
    for length in (0, 31, 33):
        with pytest.raises(UnsafeKeyError):
            Ed25519Signer.from_seed(bytes(length))


def test_keyed_hash_secret_length_is_checked():
    """A keyed-hash secret is exactly 32 bytes."""
    for length in (0, 31, 33):
        with pytest.raises(UnsafeKeyError):
            KeyedHashSigner(bytes(length))


def test_signer_repr_does_not_leak_the_private_key():
    """repr shows at most part of the public key, never the secret."""
    ed = Ed25519Signer.from_seed(b"\x11" * 32)
    keyed = KeyedHashSigner(b"\x22" * 32)
    assert "11" * 8 not in repr(ed)
    assert ed.private_bytes().hex()[:16] not in repr(ed)
    assert "22" not in repr(keyed)


# ------------------------------------------------------------------- ClusterConfig


def test_valid_config_properties():
    """n, quorum 2f+1, weak quorum f+1 and the primary v mod n."""
    cfg = config()
    assert (cfg.n, cfg.quorum, cfg.weak_quorum) == (4, 3, 2)
    assert [cfg.primary(v) for v in range(6)] == [0, 1, 2, 3, 0, 1]


@pytest.mark.parametrize(("f", "n"), [(1, 3), (1, 0), (2, 6), (0, 0), (3, 9)])
def test_config_refuses_fewer_than_3f_plus_1_replicas(f, n):
    """n < 3f+1 cannot tolerate f faults."""
    with pytest.raises(ConfigError, match=r"3f\+1"):
        config(f=f, replica_keys=keys(n))


@pytest.mark.parametrize(("f", "n"), [(0, 1), (1, 4), (1, 5), (2, 7), (2, 10)])
def test_config_accepts_at_least_3f_plus_1_replicas(f, n):
    """n = 3f+1 and larger n are valid."""
    assert config(f=f, replica_keys=keys(n)).n == n


@pytest.mark.parametrize("f", [-1, -5])
def test_config_refuses_negative_f(f):
    """f counts faulty replicas and cannot be negative."""
    with pytest.raises(ConfigError, match="f must be at least 0"):
        config(f=f)


def test_config_refuses_duplicate_replica_keys():
    """Two replicas with one key would let one signer count twice in a quorum."""
    replica_keys = keys(4)
    with pytest.raises(ConfigError, match="replica 3 has the same public key as replica 0"):
        config(replica_keys=(*replica_keys[:3], replica_keys[0]))


def test_config_refuses_a_client_sharing_a_replica_key():
    """A client key equal to a replica key is refused."""
    with pytest.raises(ConfigError, match="client 1 has the same public key as replica 2"):
        config(client_keys=(keys(1, "client")[0], keys(4)[2]))


def test_config_refuses_duplicate_client_keys():
    """Two clients with one key are refused."""
    client = keys(1, "client")[0]
    with pytest.raises(ConfigError, match="client 1 has the same public key as client 0"):
        config(client_keys=(client, client))


@pytest.mark.parametrize("cluster_id", ["", "a|b", "|", "trailing|"])
def test_config_refuses_bad_cluster_id(cluster_id):
    """The cluster id is part of the signing prefix: non-empty and without '|'."""
    with pytest.raises(ConfigError, match="cluster_id"):
        config(cluster_id=cluster_id)


def test_config_refuses_unknown_scheme():
    """Only ed25519 and keyed-hash exist."""
    with pytest.raises(ConfigError, match="unknown signature scheme"):
        config(scheme="rsa")


def test_keyed_hash_config_checks_key_length():
    """A keyed-hash cluster takes 32-byte secrets and refuses other lengths."""
    secrets = keys(4, scheme=KEYED_HASH)
    assert config(replica_keys=secrets, client_keys=(), scheme=KEYED_HASH).n == 4
    with pytest.raises(ConfigError, match="replica 0"):
        config(replica_keys=(b"short", *secrets[1:]), client_keys=(), scheme=KEYED_HASH)


def test_config_keys_cannot_change_after_validation():
    """Keys given as a list and changed afterwards must not change the validated config."""
    replica_keys = list(keys(4))
    cfg = config(replica_keys=replica_keys)
    replica_keys[3] = IDENTITY_KEY
    assert IDENTITY_KEY not in cfg.replica_keys


def test_config_is_immutable():
    """A configuration cannot be changed after validation."""
    cfg = config()
    with pytest.raises(AttributeError):
        cfg.f = 5  # type: ignore[misc]


# ------------------------------------------------------------------ ProtocolParams


def test_default_params_are_valid():
    """The defaults satisfy every rule."""
    params = ProtocolParams()
    assert params.log_window % params.checkpoint_interval == 0


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        pytest.param({"checkpoint_interval": 0}, "checkpoint_interval", id="zero-interval"),
        pytest.param({"checkpoint_interval": -32}, "checkpoint_interval", id="negative-interval"),
        pytest.param({"log_window": 16}, "at least checkpoint_interval", id="window-below-k"),
        pytest.param({"log_window": 0}, "log_window", id="zero-window"),
        pytest.param({"log_window": 48}, "multiple", id="window-not-multiple"),
        pytest.param({"checkpoint_interval": 10, "log_window": 25}, "multiple", id="25-by-10"),
        pytest.param({"batch_size": 0}, "batch_size", id="zero-batch"),
        pytest.param({"batch_size": -1}, "batch_size", id="negative-batch"),
        pytest.param({"view_change_timeout_ticks": 0}, "view_change", id="zero-vc-timeout"),
        pytest.param({"state_transfer_timeout_ticks": 0}, "state_transfer", id="zero-st-timeout"),
        pytest.param({"state_transfer_timeout_ticks": -1}, "state_transfer", id="neg-st-timeout"),
        pytest.param({"max_message_bytes": 1023}, "max_message_bytes", id="tiny-messages"),
        pytest.param({"max_message_bytes": 0}, "max_message_bytes", id="zero-messages"),
    ],
)
def test_params_refuse_nonsense(overrides, problem):
    """Parameters the protocol cannot run with are refused with a message naming them."""
    with pytest.raises(ConfigError, match=problem):
        ProtocolParams(**overrides)


def test_params_accept_boundary_values():
    """The smallest sensible values are accepted."""
    params = ProtocolParams(
        checkpoint_interval=1,
        log_window=1,
        batch_size=1,
        view_change_timeout_ticks=1,
        state_transfer_timeout_ticks=1,
        max_message_bytes=1024,
    )
    assert params.log_window == 1
    assert ProtocolParams(checkpoint_interval=10, log_window=30).log_window == 30


def test_rfc8032_test_vector_1_signs_and_verifies_through_libsodium():
    """RFC 8032 §7.1, TEST 1 (empty message): the seed, public key and signature."""
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    signer = Ed25519Signer.from_seed(seed)
    assert signer.public_key == public
    assert signer.sign(b"") == signature
    verifier = Ed25519Verifier()
    assert verifier.verify(public, signature, b"")
    assert not verifier.verify(public, signature, b"x")
    assert not verifier.verify(public, signature[:63], b"")


def test_signatures_interoperate_with_the_cryptography_package():
    signer = Ed25519Signer.generate()
    data = b"pbft/1|c|PREPARE|payload"
    Ed25519PublicKey.from_public_bytes(signer.public_key).verify(signer.sign(data), data)
    other = Ed25519Signer.generate()
    assert not Ed25519Verifier().verify(signer.public_key, other.sign(data), data)


def test_the_verifier_still_refuses_a_small_order_key_before_verifying():
    with pytest.raises(UnsafeKeyError, match="small order"):
        Ed25519Verifier().verify(IDENTITY_KEY, FORGED_SIGNATURE, b"any message")
