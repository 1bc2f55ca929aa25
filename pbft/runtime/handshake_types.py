"""The names :mod:`pbft.runtime.handshake` and :mod:`pbft.runtime.handshake_slots` share:
identities and the handshake's errors (import them from :mod:`pbft.runtime.handshake`).

Each :class:`HandshakeError` carries a ``label``: a fixed, short reason chosen where it
is raised (``timeout``, ``bad-signature``, ``malformed``...), which the metrics and the
event log use as it is. A message may quote what an unauthenticated peer sent; a label
never does, so no peer can pick the label its failure is counted under.
"""

from __future__ import annotations

#: A principal: ``("replica", i)`` or ``("client", c)``.
Identity = tuple[str, int]

REPLICA = "replica"
CLIENT = "client"
ROLES = (REPLICA, CLIENT)

#: The REFUSED reason of an acceptor with too many handshakes in progress: back off, retry.
BUSY_REASON = "busy"


class HandshakeError(Exception):
    """The handshake failed: the peer is not who it claims, misbehaved, went silent or left.

    ``label`` is a fixed reason for metrics and logs (None: not given, for errors made
    elsewhere; :func:`pbft.runtime.metrics.handshake_failure_reason` then reads the message).
    """

    label: str | None = None

    def __init__(self, message: str, label: str | None = None) -> None:
        super().__init__(message)
        if label is not None:
            self.label = label


class HandshakeRefused(HandshakeError):
    """The acceptor answered HELLO with REFUSED; ``reason`` is what it said (unauthenticated)."""

    def __init__(self, reason: str) -> None:
        label = "busy" if reason == BUSY_REASON else "refused"
        super().__init__(f"the replica refused the handshake: {reason}", label)
        self.reason = reason

    @property
    def busy(self) -> bool:
        """True when the acceptor only had too many handshakes in progress: back off, retry."""
        return self.reason == BUSY_REASON


class HandshakeProofRejected(HandshakeError):
    """The acceptor hung up after our PROOF: most likely it has another key for us."""

    label = "closed"


class HandshakeBusy(HandshakeError):
    """The acceptor side: we refused a dialer because too many handshakes were in progress."""

    label = "busy"


class HandshakeEvicted(HandshakeError):
    """The acceptor side: an unproven handshake gave its slot to a newer one
    (:mod:`pbft.runtime.handshake_slots`)."""

    label = "evicted"
