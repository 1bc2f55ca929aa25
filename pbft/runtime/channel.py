"""Authenticated channels: session keys from the handshake, a MAC on every frame.

The handshake (:mod:`pbft.runtime.handshake`) proves each end's Ed25519
identity and, inside the signed transcript, exchanges one ephemeral X25519
public key per side. Both ends then derive two session keys with HKDF-SHA256
(RFC 5869) from the X25519 shared secret, salted with a digest of the whole
transcript: one key per direction. From then on every frame carries a tag::

    tag = BLAKE2b-128(key = this direction's key, counter (u64 BE) || payload)

``counter`` counts the frames sent in that direction since the handshake, so a
frame cannot be altered, forged, replayed, dropped or reordered on the wire
without the receiver noticing: it then ends the connection (a
:class:`~pbft.runtime.framing.FrameError`). Keyed BLAKE2b is a MAC by design
(RFC 7693 §2.9), and an order of magnitude cheaper here than a signature.

What the channel buys: a frame that arrives intact on a connection comes from
the principal the handshake proved, so point-to-point messages (REPLY, unless
``signed_replies``) need no signature of their own (:mod:`pbft.auth`). What it
does not: a MAC convinces only the two ends, so every message a third party
must check stays signed. The channel does not encrypt: PBFT needs integrity,
not secrecy. The ephemeral keys give each session fresh keys, so a key learnt
from one session is worthless in another.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

#: Bytes of one frame's tag.
TAG_BYTES = 16
#: Bytes of an X25519 public key on the wire.
CHANNEL_KEY_BYTES = 32
_KEY_BYTES = 32


class ChannelKeyError(ValueError):
    """The peer's ephemeral key cannot give a shared secret (a small-order point)."""


class EphemeralKey:
    """One side's X25519 key for one handshake."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def session_keys(self, peer_public: bytes, transcript: bytes, label: bytes) -> bytes:
        """The 64 bytes of key material both ends derive: dialer->acceptor, then the other.

        ``transcript`` is everything both signatures cover; ``label`` separates
        clusters and protocol versions.
        """
        if len(peer_public) != CHANNEL_KEY_BYTES:
            raise ChannelKeyError(f"an X25519 key is {CHANNEL_KEY_BYTES} bytes")
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:  # all-zero output: the peer sent a small-order point
            raise ChannelKeyError("the peer's channel key gives no shared secret") from None
        return HKDF(
            algorithm=hashes.SHA256(),
            length=2 * _KEY_BYTES,
            salt=hashlib.sha256(transcript).digest(),
            info=b"pbft/1 channel keys|" + label,
        ).derive(shared)


class FrameMac:
    """The MAC of one connection: a key and a frame counter per direction."""

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        if len(send_key) != _KEY_BYTES or len(receive_key) != _KEY_BYTES:
            raise ValueError(f"channel keys are {_KEY_BYTES} bytes")
        self._send_key = send_key
        self._receive_key = receive_key
        self.sent = 0
        self.received = 0

    @classmethod
    def for_dialer(cls, material: bytes) -> FrameMac:
        return cls(material[:_KEY_BYTES], material[_KEY_BYTES:])

    @classmethod
    def for_acceptor(cls, material: bytes) -> FrameMac:
        return cls(material[_KEY_BYTES:], material[:_KEY_BYTES])

    def seal(self, payload: bytes) -> bytes:
        """The tag of the next frame to send."""
        tag = _tag(self._send_key, self.sent, payload)
        self.sent += 1
        return tag

    def check(self, payload: bytes, tag: bytes) -> bool:
        """Whether ``tag`` is the next received frame's; the counter moves only if so."""
        if not hmac.compare_digest(_tag(self._receive_key, self.received, payload), tag):
            return False
        self.received += 1
        return True


def _tag(key: bytes, counter: int, payload: bytes) -> bytes:
    mac = hashlib.blake2b(counter.to_bytes(8, "big"), key=key, digest_size=TAG_BYTES)
    mac.update(payload)
    return mac.digest()
