"""Signing and verification, and the checks that keep Ed25519 honest.

Every PBFT message is signed by its sender. A *signer* holds one principal's
private key; a *verifier* holds the public keys of every member of the cluster.
Two schemes are provided behind the same interface:

* ``ed25519`` (the default, and the only one a real cluster uses): RFC 8032
  signatures. Keys are generated and stored through the ``cryptography``
  package (raw 32-byte seeds and public keys, the standard formats); signing
  and verification on the hot path go through libsodium (PyNaCl), measured
  here at about 1.9x faster to verify and 1.5x faster to sign
  (``pbft bench`` prints both costs). libsodium's verification is also the
  stricter one: it refuses non-canonical and small-order points and
  non-canonical S. Every honest replica uses the same one, so all agree on
  which signatures are valid.
* ``keyed-hash``: a keyed BLAKE2b MAC per principal, for the deterministic
  simulator only. Each principal's key is known to the verifier, so it models
  unforgeable signatures among the simulated nodes (a simulated traitor only
  ever holds its own signer) at a fraction of the cost. It is *not* secure
  against anyone who can read the verifier and is refused by the runtime.

Signing hygiene (see docs/protocol.md, "Authentication"):

* Every signed payload starts with a domain-separation prefix (protocol name
  and version, cluster id, message type), so a signature made for one purpose
  is never valid for another. :func:`signing_prefix` builds it.
* Public keys of small order are refused when a configuration is loaded
  (:func:`check_public_key`): the ``cryptography`` package accepts the forged
  signature ``R = identity, S = 0`` for *any* message under the identity-point
  key, and other small-order keys have similar forgeries.
* Signature bytes are never used as identifiers: a signature is not unique to
  its message (a signer can make several valid signatures for one payload, and
  verifiers disagree about malleated ones), so deduplication is done on the
  content and on the signer, never on the signature.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

import nacl.bindings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError

PROTOCOL_TAG = b"pbft/1"
ED25519 = "ed25519"
KEYED_HASH = "keyed-hash"
SCHEMES = (ED25519, KEYED_HASH)
SIGNATURE_BYTES = {ED25519: 64, KEYED_HASH: 32}


class UnsafeKeyError(ValueError):
    """A key that must not be used: malformed, of small order, or of the wrong length."""


def signing_prefix(cluster_id: str, message_type: str) -> bytes:
    """The domain-separation prefix for one message type in one cluster."""
    return b"%s|%s|%s|" % (PROTOCOL_TAG, cluster_id.encode(), message_type.encode())


class Signer(Protocol):
    """Holds one principal's private key."""

    scheme: str

    def sign(self, data: bytes) -> bytes: ...


class Verifier(Protocol):
    """Checks a signature against one principal's public key."""

    scheme: str

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool: ...


# --------------------------------------------------------------------------- Ed25519


class Ed25519Signer:
    """An Ed25519 private key."""

    scheme = ED25519

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        # libsodium's secret key: the 32-byte seed followed by the public key.
        self._sodium_key = self.private_bytes() + self.public_key

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        """Build a key from its 32-byte seed (the raw private key)."""
        if len(seed) != 32:
            raise UnsafeKeyError(f"an Ed25519 private key is 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes) -> bytes:
        return nacl.bindings.crypto_sign(data, self._sodium_key)[:64]

    def __repr__(self) -> str:  # never show the private key
        return f"Ed25519Signer(public_key={self.public_key.hex()[:16]}...)"


class Ed25519Verifier:
    """Verifies Ed25519 signatures; each public key is checked once, then remembered."""

    scheme = ED25519

    def __init__(self) -> None:
        self._checked: set[bytes] = set()

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        if public_key not in self._checked:
            check_public_key(public_key)
            self._checked.add(public_key)
        if len(signature) != 64:
            return False
        try:
            nacl.bindings.crypto_sign_open(signature + data, public_key)
        except BadSignatureError:
            return False
        return True


# ------------------------------------------------------------------ keyed hash (sim)


class KeyedHashSigner:
    """A keyed BLAKE2b 'signature' for the simulator; the public key is the secret."""

    scheme = KEYED_HASH

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise UnsafeKeyError("a keyed-hash secret is 32 bytes")
        self.public_key = secret

    def sign(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self.public_key, digest_size=32).digest()

    def __repr__(self) -> str:
        return "KeyedHashSigner(...)"


class KeyedHashVerifier:
    scheme = KEYED_HASH

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        expected = hashlib.blake2b(data, key=public_key, digest_size=32).digest()
        return hmac.compare_digest(expected, signature)


def make_verifier(scheme: str) -> Verifier:
    if scheme == ED25519:
        return Ed25519Verifier()
    if scheme == KEYED_HASH:
        return KeyedHashVerifier()
    raise ValueError(f"unknown signature scheme {scheme!r} (expected one of {SCHEMES})")


# -------------------------------------------------------- small-order key detection

_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decode_point(encoded: bytes) -> tuple[int, int] | None:
    """Decode an RFC 8032 point encoding to affine (x, y); None if not a point."""
    value = int.from_bytes(encoded, "little")
    sign = value >> 255
    y = value & ((1 << 255) - 1)
    if y >= _P:
        return None  # non-canonical encoding
    y2 = y * y % _P
    u = (y2 - 1) % _P
    v = (_D * y2 + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if x == 0 and sign == 1:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return x3, y3


def is_small_order(public_key: bytes) -> bool:
    """True when the point has order dividing 8 (the identity among them)."""
    point = _decode_point(public_key)
    if point is None:
        return False
    for _ in range(3):
        point = _add(point, point)
    return point == (0, 1)


def check_public_key(public_key: bytes, scheme: str = ED25519) -> None:
    """Refuse a public key that must not be trusted; raise :class:`UnsafeKeyError`."""
    if scheme == KEYED_HASH:
        if len(public_key) != 32:
            raise UnsafeKeyError("a keyed-hash key is 32 bytes")
        return
    if len(public_key) != 32:
        raise UnsafeKeyError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    if _decode_point(public_key) is None:
        raise UnsafeKeyError("the Ed25519 public key is not a valid curve point")
    if is_small_order(public_key):
        raise UnsafeKeyError(
            "the Ed25519 public key has small order (such a key verifies forged signatures)"
        )
