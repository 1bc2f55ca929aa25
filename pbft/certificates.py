"""Checking proofs and computing NEW-VIEW: pure functions of messages.

These are the rules where implementations have gone wrong most often, so they
live apart from the replica's state and are tested on their own:

* :func:`checkpoint_proof_digest`: 2f+1 matching CHECKPOINTs from distinct
  replicas prove a stable checkpoint (§4.3).
* :func:`certificate_is_valid`: a prepared certificate is a PRE-PREPARE from the
  primary of its view plus 2f matching PREPAREs from distinct backups (§4.2,
  §4.4).
* :func:`check_view_change`: a VIEW-CHANGE is usable if it has the shape an
  honest replica's has (at most one certificate per sequence number, inside
  (h, h+L], each with quorum-1 PREPAREs, no bigger than
  :attr:`pbft.bounds.MessageBounds.view_change`) and its checkpoint proof is
  valid; each prepared certificate in it is then checked on its own, and one
  with a bad signature or digest is discarded without discarding the others.
* :func:`commit_certificate_is_valid`: a PRE-PREPARE with 2f+1 matching COMMITs
  proves what committed at a sequence number (used to catch up).
* :func:`compute_new_view`: the paper's computation of O from V (§4.4): for
  each sequence number between min-s and max-s, the request whose certificate
  has the *highest view*, or a null request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from pbft.auth import Authenticator
from pbft.bounds import message_bounds
from pbft.config import ClusterConfig, ProtocolParams
from pbft.messages import (
    Checkpoint,
    PreparedCertificate,
    PrePrepare,
    Signed,
    ViewChange,
    batch_digest,
)

#: The state digest claimed for sequence number 0, whose proof is empty: every
#: replica starts from the same initial state, so nobody needs to prove it.
GENESIS_DIGEST = b""


def checkpoint_proof_digest(
    auth: Authenticator, config: ClusterConfig, seq: int, proof: Iterable[Signed[Any]]
) -> bytes | None:
    """The state digest that ``proof`` establishes for ``seq``, or None if it proves nothing.

    A proof is 2f+1 valid CHECKPOINT messages for ``seq`` from distinct
    replicas with one digest. Checkpoint 0 is the initial state and needs an
    empty proof.
    """
    proof = tuple(proof)
    if seq == 0:
        return GENESIS_DIGEST if not proof else None
    digest: bytes | None = None
    senders: set[int] = set()
    for signed in proof:
        checkpoint = signed.message
        if type(checkpoint) is not Checkpoint or checkpoint.seq != seq:
            return None
        if digest is None:
            digest = checkpoint.state_digest
        elif checkpoint.state_digest != digest:
            return None
        if checkpoint.sender in senders or auth.verify(signed) is not None:
            return None
        senders.add(checkpoint.sender)
    return digest if len(senders) >= config.quorum else None


def pre_prepare_is_well_formed(
    auth: Authenticator, params: ProtocolParams, pre_prepare: PrePrepare
) -> str | None:
    """Check what a PRE-PREPARE says about its own batch; return the defect or None.

    d must be the digest of the batch carried (a classic bug is not checking
    it), and every request in the batch must carry its client's signature. The
    batch must respect the size limits, or an oversized request from a faulty
    client could make every PRE-PREPARE that carries it too large to accept.
    """
    if len(pre_prepare.batch) > params.batch_size:
        return "batch-too-large"
    if any(len(request.payload) > params.max_request_bytes for request in pre_prepare.batch):
        return "request-too-large"
    if batch_digest(pre_prepare.batch) != pre_prepare.digest:
        return "bad-digest"
    if not auth.verify_all(pre_prepare.batch):
        return "bad-request-signature"
    return None


def certificate_is_valid(
    auth: Authenticator,
    config: ClusterConfig,
    params: ProtocolParams,
    certificate: PreparedCertificate,
) -> bool:
    """Is ``certificate`` a real prepared certificate?

    §4.4: P contains, for each prepared request, the PRE-PREPARE and 2f
    (quorum - 1 when n > 3f+1) matching, valid PREPAREs signed by distinct
    backups (never the primary of that view). Its view and sequence number are
    checked with the VIEW-CHANGE's shape (:func:`view_change_shape_defect`).
    """
    pre_prepare = certificate.pre_prepare.message
    if not _pre_prepare_is_valid(auth, config, params, certificate.pre_prepare):
        return False
    voters = _distinct_matching_voters(auth, pre_prepare, certificate.prepares)
    # The primary's PRE-PREPARE is its vote: a PREPARE of its own does not count.
    return (
        voters is not None
        and pre_prepare.sender not in voters
        and (len(voters) >= config.quorum - 1)
    )


def commit_certificate_is_valid(
    auth: Authenticator, config: ClusterConfig, params: ProtocolParams, certificate: Any
) -> bool:
    """Is ``certificate`` a PRE-PREPARE from the primary of its view with a quorum of
    matching COMMITs from distinct replicas (committed-local somewhere, §4.2)?"""
    if not _pre_prepare_is_valid(auth, config, params, certificate.pre_prepare):
        return False
    voters = _distinct_matching_voters(auth, certificate.pre_prepare.message, certificate.commits)
    return voters is not None and len(voters) >= config.quorum


def _pre_prepare_is_valid(
    auth: Authenticator, config: ClusterConfig, params: ProtocolParams, signed: Signed[Any]
) -> bool:
    """Signed by the primary of its view, and well formed."""
    pre_prepare = signed.message
    if pre_prepare.sender != config.primary(pre_prepare.view):
        return False
    if auth.verify(signed) is not None:
        return False
    return pre_prepare_is_well_formed(auth, params, pre_prepare) is None


def _distinct_matching_voters(
    auth: Authenticator, pre_prepare: PrePrepare, votes: tuple[Signed[Any], ...]
) -> set[int] | None:
    """The senders of ``votes`` (PREPAREs or COMMITs), or None if any vote is for another
    (view, seq, digest), comes twice from one sender, or is not validly signed.

    Quorums count distinct signers, never messages.
    """
    key = (pre_prepare.view, pre_prepare.seq, pre_prepare.digest)
    senders: set[int] = set()
    for signed in votes:
        vote = signed.message
        if (vote.view, vote.seq, vote.digest) != key or vote.sender in senders:
            return None
        if auth.verify(signed) is not None:
            return None
        senders.add(vote.sender)
    return senders


@attrs.frozen(slots=True)
class CheckedViewChange:
    """A VIEW-CHANGE whose proof checked out, with only its valid certificates."""

    signed: Signed[ViewChange]
    stable_digest: bytes
    #: The highest-view valid certificate per sequence number.
    certificates: dict[int, PreparedCertificate]

    @property
    def sender(self) -> int:
        return self.signed.message.sender

    @property
    def new_view(self) -> int:
        return self.signed.message.new_view

    @property
    def stable_seq(self) -> int:
        return self.signed.message.stable_seq

    @property
    def checkpoint_proof(self) -> tuple[Signed[Checkpoint], ...]:
        return self.signed.message.checkpoint_proof


def check_view_change(
    auth: Authenticator, config: ClusterConfig, params: ProtocolParams, signed: Signed[ViewChange]
) -> CheckedViewChange | None:
    """Validate a VIEW-CHANGE's content (its own signature is checked by the caller).

    A VIEW-CHANGE no honest replica could have sent is refused whole: more
    certificates than the window has sequence numbers would make every NEW-VIEW
    that carries it too big to send (a faulty replica could halt view changes),
    so shape and size are checked first, before any signature. An invalid
    checkpoint proof makes the message useless (its stable_seq cannot be
    trusted); a certificate whose signatures or digest do not check out is
    dropped alone.
    """
    if view_change_shape_defect(config, params, signed) is not None:
        return None
    view_change = signed.message
    stable_digest = checkpoint_proof_digest(
        auth, config, view_change.stable_seq, view_change.checkpoint_proof
    )
    if stable_digest is None:
        return None
    certificates: dict[int, PreparedCertificate] = {}
    for certificate in view_change.prepared:
        if certificate_is_valid(auth, config, params, certificate):
            certificates[certificate.seq] = certificate
    return CheckedViewChange(signed, stable_digest, certificates)


def view_change_shape_defect(
    config: ClusterConfig, params: ProtocolParams, signed: Signed[ViewChange]
) -> str | None:
    """What makes ``signed`` a VIEW-CHANGE no honest replica sends, or None (no crypto).

    An honest VIEW-CHANGE for v+1 (§4.4) names a stable checkpoint at a multiple
    of K with at most n CHECKPOINTs as proof, and at most one prepared
    certificate per sequence number in (h, h+L], each for a view below v+1 with
    exactly quorum-1 PREPAREs, and fits its size bound. (A VIEW-CHANGE for view 0
    never gets here: every replica starts in view 0, so it is always old.)
    """
    view_change = signed.message
    if len(signed.payload) > message_bounds(config, params).view_change:
        return "too-large"
    if view_change.stable_seq % params.checkpoint_interval:
        return "stable-seq-not-a-checkpoint"
    if len(view_change.checkpoint_proof) > config.n:
        return "checkpoint-proof-too-long"
    seen: set[int] = set()
    low = view_change.stable_seq
    for certificate in view_change.prepared:
        seq = certificate.seq
        if seq in seen:
            return "two-certificates-for-one-seq"
        if not low < seq <= low + params.log_window:
            return "certificate-outside-window"
        if certificate.view >= view_change.new_view:
            return "certificate-from-a-later-view"
        if len(certificate.prepares) != config.quorum - 1:
            return "certificate-with-wrong-prepare-count"
        seen.add(seq)
    return None


def _outranks(candidate: PreparedCertificate, incumbent: PreparedCertificate) -> bool:
    """Higher view wins (§4.4); within one view the digest breaks the tie deterministically.

    Two valid certificates of one view and sequence number with different
    digests cannot exist unless more than f replicas are faulty.
    """
    candidate_key = (candidate.view, candidate.pre_prepare.message.digest)
    incumbent_key = (incumbent.view, incumbent.pre_prepare.message.digest)
    return candidate_key > incumbent_key


@attrs.frozen(slots=True)
class NewViewPlan:
    """What a NEW-VIEW for ``view`` must contain, computed from V."""

    min_seq: int  # min-s: the latest stable checkpoint in V
    checkpoint_source: CheckedViewChange  # a view change that proves min-s
    pre_prepares: tuple[PrePrepare, ...]  # O, for min-s < n <= max-s

    @property
    def max_seq(self) -> int:
        return self.min_seq + len(self.pre_prepares)


def compute_new_view(
    config: ClusterConfig, view: int, view_changes: Iterable[CheckedViewChange]
) -> NewViewPlan:
    """Compute O from V (§4.4), deterministically, as the new primary and every backup must.

    min-s is the highest stable checkpoint in V and max-s the highest sequence
    number of a prepared certificate in V. For each n in (min-s, max-s], O holds
    a PRE-PREPARE for ``view`` with the request of the certificate for n with
    the highest view, or a null request (empty batch) if no certificate has n.
    """
    view_changes = tuple(view_changes)
    source = max(view_changes, key=lambda checked: (checked.stable_seq, -checked.sender))
    min_seq = source.stable_seq
    chosen: dict[int, PreparedCertificate] = {}
    for checked in view_changes:
        for seq, certificate in checked.certificates.items():
            if seq <= min_seq:
                continue
            known = chosen.get(seq)
            if known is None or _outranks(certificate, known):
                chosen[seq] = certificate
    max_seq = max(chosen, default=min_seq)
    primary = config.primary(view)
    pre_prepares = []
    for seq in range(min_seq + 1, max_seq + 1):
        certificate = chosen.get(seq)
        if certificate is None:
            batch: tuple[Any, ...] = ()
            digest = batch_digest(batch)
        else:
            batch = certificate.pre_prepare.message.batch
            digest = certificate.pre_prepare.message.digest
        pre_prepares.append(PrePrepare(view, seq, digest, batch, primary))
    return NewViewPlan(min_seq, source, tuple(pre_prepares))
