"""The one place that decides whether a message is authentic.

A replica or client hands every received byte string to
:meth:`Authenticator.open`; it returns the verified message, or a
:class:`Rejection` naming the reason. Protocol handlers never look at
signatures: they see only messages that passed here, and call
:meth:`Authenticator.verify` for messages nested inside others (the requests
of a PRE-PREPARE, the certificates of a VIEW-CHANGE).

Rules (docs/protocol.md, "Authentication"):

* The key that must have signed a message is the one of the principal the
  message names as its sender (``client`` for a REQUEST, ``sender`` for every
  other type). A message naming a non-member is refused.
* The signed bytes are ``prefix || payload``, where the prefix separates the
  protocol version, the cluster and the message type (see
  :func:`pbft.crypto.signing_prefix`).
* Verification results may be remembered, keyed by a SHA-256 digest of
  signature and payload together (the payload names the signer): that is a
  cache of a pure function, never a way of deduplicating messages, and it
  holds 32 bytes per entry whatever the message's size, for at most
  ``cache_entries`` entries (``ProtocolParams.verified_cache_entries``).
* :meth:`Authenticator.decode` does everything but the signature check, so a
  replica can refuse on cheap grounds (size, view, window, sender role)
  before spending a verification; :meth:`Authenticator.open` is both steps.

Authenticated channels: :meth:`open` receives the principal the channel
vouches for (the runtime's connections are mutually authenticated and every
frame carries a MAC under a per-session key; the simulator knows the true
sender). A replica's channel may carry any message, its own and the signed
ones it relays (a client's REQUEST, a NEW-VIEW, CHECKPOINTs), since their
signatures are checked anyway; a client's channel only that client's own
messages (else ``channel-mismatch``). A message of a type listed in
``channel_types`` (at a client REPLY and REPLY-DIGEST, at a replica READ,
unless ``ProtocolParams.signed_replies``) is accepted without a signature when
it comes on its signer's own channel: it is point-to-point and never has to
convince a third party. (A READ on a replica's channel, one a faulty replica
relays or forges, still needs its client's signature: unsigned, it could make
every honest replica answer a client's outstanding write with the result of
some read. A REPLY naming replica 3 on replica 2's channel needs replica 3's.)
Every other message is checked by its signature whatever channel it came on,
and nested messages always are. That decision belongs here and nowhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import attrs

from pbft.config import ClusterConfig
from pbft.crypto import SIGNATURE_BYTES, Signer, Verifier, make_verifier, signing_prefix
from pbft.encoding import DEFAULT_MAX_MESSAGE_BYTES, DecodeError, decode_signed, encode_message
from pbft.messages import CLIENT_SIGNED, MESSAGE_TYPES, Signed

#: Most verified (signature, payload) digests remembered at once, by default.
VERIFIED_CACHE_ENTRIES = 8192
#: Bytes one remembered verification holds (a SHA-256 digest).
VERIFIED_ENTRY_BYTES = 32


@attrs.frozen(slots=True)
class Rejection:
    """Why a message was refused; ``message_type`` is "?" when it did not decode."""

    message_type: str
    reason: str


class Authenticator:
    """Verifies messages for one cluster and signs them for one principal."""

    def __init__(
        self,
        config: ClusterConfig,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        cache_entries: int = VERIFIED_CACHE_ENTRIES,
        channel_types: tuple[type, ...] = (),
        decoder: Callable[[bytes, int], Signed[Any]] = decode_signed,
    ) -> None:
        #: ``decode_signed`` or a memo of it (a pure function of the bytes and the
        #: limit; the simulator shares one among its nodes, see ``pbft.simnet``).
        self._decode = decoder
        self.cache_entries = cache_entries
        #: Message types an authenticated channel vouches for without a signature.
        self.channel_types = channel_types
        self.config = config
        self._signer = signer
        self._verifier = verifier or make_verifier(config.scheme)
        self._max_message_bytes = max_message_bytes
        self._signature_bytes = SIGNATURE_BYTES[config.scheme]
        self._prefixes = {cls: signing_prefix(config.cluster_id, cls.TYPE) for cls in MESSAGE_TYPES}
        self._verified: set[bytes] = set()
        self._verified_bytes = 0

    # ------------------------------------------------------------------ signing

    def sign(self, message: Any) -> Signed[Any]:
        """Encode and sign a message as this principal."""
        if self._signer is None:
            raise RuntimeError("this authenticator holds no private key")
        payload = encode_message(message)
        signature = self._signer.sign(self._prefixes[type(message)] + payload)
        return Signed(message, signature, payload)

    # ---------------------------------------------------------------- verifying

    def signer_key(self, message: Any) -> bytes | None:
        """The public key that must have signed ``message``; None for a non-member."""
        if isinstance(message, CLIENT_SIGNED):
            keys = self.config.client_keys
            principal = message.client
        else:
            keys = self.config.replica_keys
            principal = message.sender
        return keys[principal] if principal < len(keys) else None

    def verify(self, signed: Signed[Any], channel: tuple[str, int] | None = None) -> str | None:
        """Check one signed message; return None if authentic, else the reason.

        ``channel``: the principal the message's authenticated channel proved, when
        it came straight off one and :meth:`decode` found that it fits. A message of
        a ``channel_types`` type is then authentic without its signature.
        """
        key = self.signer_key(signed.message)
        if key is None:
            return "non-member"
        if (
            channel is not None
            and type(signed.message) in self.channel_types
            and channel == _signer(signed.message)
        ):
            # Only the signer's own channel vouches for it: a READ relayed over a
            # replica's connection, or a REPLY naming another replica, needs its signature.
            return None
        signature = signed.signature
        if len(signature) != self._signature_bytes:
            return "bad-signature"
        hasher = hashlib.sha256(signature)
        hasher.update(signed.payload)
        cache_key = hasher.digest()
        if cache_key in self._verified:
            return None
        data = self._prefixes[type(signed.message)] + signed.payload
        if not self._verifier.verify(key, signature, data):
            return "bad-signature"
        self._remember(cache_key)
        return None

    def _remember(self, cache_key: bytes) -> None:
        if len(self._verified) >= self.cache_entries:
            self._verified.clear()
            self._verified_bytes = 0
        self._verified.add(cache_key)
        self._verified_bytes += len(cache_key)

    def cache_bytes(self) -> int:
        """Bytes of keys the verification cache holds (32 per entry)."""
        return self._verified_bytes

    def verify_all(self, signed_messages: tuple[Signed[Any], ...]) -> bool:
        return all(self.verify(signed) is None for signed in signed_messages)

    def open(
        self,
        data: bytes,
        accept: tuple[type, ...],
        channel: tuple[str, int] | None = None,
    ) -> Signed[Any] | Rejection:
        """Decode and authenticate bytes from the network.

        ``accept`` lists the message types this principal takes; any other type
        is refused as wrongly addressed. ``channel`` is the principal that an
        authenticated connection proved to be (the runtime's handshake): its
        frames are attributed to it only, so a replica's connection may carry
        that replica's messages and client requests it forwards, and a client's
        connection only that client's requests. The signature is still checked,
        except for ``channel_types`` (see the module docstring).
        """
        decoded = self.decode(data, accept, channel)
        if type(decoded) is Rejection:
            return decoded
        reason = self.verify(decoded, channel)
        if reason is not None:
            return Rejection(decoded.message.TYPE, reason)
        return decoded

    def decode(
        self,
        data: bytes,
        accept: tuple[type, ...],
        channel: tuple[str, int] | None = None,
    ) -> Signed[Any] | Rejection:
        """:meth:`open` without the signature check: the caller must :meth:`verify`."""
        try:
            signed = self._decode(data, self._max_message_bytes)
        except DecodeError:
            return Rejection("?", "malformed")
        message = signed.message
        if not isinstance(message, accept):
            return Rejection(message.TYPE, "wrong-recipient")
        if channel is not None and not _fits_channel(message, channel):
            return Rejection(message.TYPE, "channel-mismatch")
        return signed


def _fits_channel(message: Any, channel: tuple[str, int]) -> bool:
    """A replica's connection may carry any message (its own, and the signed ones it
    relays: a client's REQUEST, a NEW-VIEW, CHECKPOINTs); a client's, only that
    client's own REQUESTs and READs."""
    role, principal = channel
    if role == "replica":
        return True
    return isinstance(message, CLIENT_SIGNED) and message.client == principal


def _signer(message: Any) -> tuple[str, int]:
    """The principal whose key must sign ``message``, as a channel names it."""
    if isinstance(message, CLIENT_SIGNED):
        return ("client", message.client)
    return ("replica", message.sender)
