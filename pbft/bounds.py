"""The largest message of each type an honest replica sends, from the configuration.

Every size limit in the core follows from three numbers: the largest signed
REQUEST (``max_request_bytes``), the batch size B and the window L, with n,
the quorum q and the signature size. An honest replica never sends more than:

* PRE-PREPARE: B requests;
* PREPARE, COMMIT, CHECKPOINT: fixed fields and one 32-byte digest;
* a prepared certificate: one PRE-PREPARE and q-1 PREPAREs;
* VIEW-CHANGE: a checkpoint proof of at most n CHECKPOINTs and at most one
  certificate per sequence number of the window (h, h+L];
* NEW-VIEW: q VIEW-CHANGEs and at most L PRE-PREPAREs;
* COMMIT-CERTIFICATE: one PRE-PREPARE and q COMMITs.

The figures are exact upper bounds of the canonical MessagePack encoding
(:mod:`pbft.encoding`): every integer is counted at its widest form (9 bytes)
and every length header at the width its length needs. A message bigger than
its type's bound cannot come from an honest replica, so it is refused before
any signature is checked (``too-large``), and the new primary's NEW-VIEW built
from q accepted VIEW-CHANGEs always fits the frame limit. STATE carries the
service's snapshot, whose size the service decides; it is bounded by the frame
limit only.
"""

from __future__ import annotations

from functools import lru_cache

import attrs

from pbft.config import ClusterConfig, ProtocolParams
from pbft.crypto import SIGNATURE_BYTES

#: A SHA-256 digest, the only digest the protocol uses.
DIGEST_BYTES = 32
#: The widest MessagePack unsigned integer: a marker byte and eight bytes.
_INT = 9


def _bin(length: int) -> int:
    """A MessagePack byte string of ``length`` bytes, header included."""
    return length + (2 if length < 2**8 else 3 if length < 2**16 else 5)


def _array(count: int) -> int:
    """The header of a MessagePack array of ``count`` items."""
    return 1 if count < 16 else 3 if count < 2**16 else 5


@attrs.frozen(slots=True)
class MessageBounds:
    """Largest payload (the signed bytes) of each message type, in bytes."""

    signature: int
    request: int
    pre_prepare: int
    vote: int  # PREPARE and COMMIT
    checkpoint: int
    certificate: int  # a prepared certificate, nested in a VIEW-CHANGE (untagged)
    view_change: int
    new_view: int
    commit_certificate: int
    small: int  # FETCH-STATE, FETCH-COMMITTED
    frame: int  # the largest signed message on the wire: a NEW-VIEW with its signature

    def by_type(self) -> dict[str, int]:
        """Message TYPE -> largest payload, for the types with a bound of their own."""
        return {
            "REQUEST": self.request,
            "READ": self.request,
            "PRE-PREPARE": self.pre_prepare,
            "PREPARE": self.vote,
            "COMMIT": self.vote,
            "CHECKPOINT": self.checkpoint,
            "VIEW-CHANGE": self.view_change,
            "NEW-VIEW": self.new_view,
            "COMMIT-CERTIFICATE": self.commit_certificate,
            "FETCH-STATE": self.small,
            "FETCH-COMMITTED": self.small,
        }


@lru_cache(maxsize=32)
def message_bounds(config: ClusterConfig, params: ProtocolParams) -> MessageBounds:
    """The largest payload of each message type an honest replica of ``config`` sends."""
    signature = SIGNATURE_BYTES[config.scheme]
    n, q, window, batch = config.n, config.quorum, params.log_window, params.batch_size

    def nested(payload: int) -> int:
        return _array(2) + _bin(payload) + _bin(signature)

    request = params.max_request_bytes
    # Each message is the array [TAG, field, ...]; every integer counts at 9 bytes.
    pre_prepare = _array(6) + 4 * _INT + _bin(DIGEST_BYTES) + _array(batch)
    pre_prepare += batch * nested(request)
    vote = _array(5) + 4 * _INT + _bin(DIGEST_BYTES)
    checkpoint = _array(4) + 3 * _INT + _bin(DIGEST_BYTES)
    certificate = _array(2) + nested(pre_prepare) + _array(q - 1) + (q - 1) * nested(vote)
    view_change = _array(6) + 4 * _INT + _array(n) + n * nested(checkpoint)
    view_change += _array(window) + window * certificate
    new_view = _array(5) + 3 * _INT + _array(q) + q * nested(view_change)
    new_view += _array(window) + window * nested(pre_prepare)
    commit_certificate = _array(4) + 2 * _INT + nested(pre_prepare) + _array(q) + q * nested(vote)
    small = _array(4) + 3 * _INT
    return MessageBounds(
        signature=signature, request=request, pre_prepare=pre_prepare, vote=vote,
        checkpoint=checkpoint, certificate=certificate, view_change=view_change,
        new_view=new_view, commit_certificate=commit_certificate, small=small,
        frame=nested(new_view),
    )  # fmt: skip
