"""pbft/bounds.py: the largest honest message of each type is an upper bound, and tight.

Each test builds the biggest message an honest replica can send for a small
configuration (every integer at its widest, every request at the size limit,
every list at its longest) and checks that its encoding fits the bound, and
that the bound is not far above it (a bound much too large would let a traitor
pin memory the configuration does not need).
"""

from __future__ import annotations

import pytest

from pbft.bounds import message_bounds
from pbft.config import ClusterConfig, ProtocolParams
from pbft.crypto import ED25519, KEYED_HASH, SIGNATURE_BYTES
from pbft.encoding import encode_message
from pbft.messages import (
    Checkpoint,
    Commit,
    CommitCertificate,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Request,
    Signed,
    ViewChange,
)
from pbft.simnet import make_cluster

BIG = 2**63 - 1
DIGEST = b"\xff" * 32


def _signed(message: object, scheme: str) -> Signed[object]:
    return Signed(message, b"\x01" * SIGNATURE_BYTES[scheme], encode_message(message))


def _request(limit: int, scheme: str) -> Signed[Request]:
    operation = b"x" * limit
    while len(encode_message(Request(BIG, BIG, operation))) > limit:
        operation = operation[:-1]
    return _signed(Request(BIG, BIG, operation), scheme)  # type: ignore[return-value]


@pytest.mark.parametrize("scheme", [ED25519, KEYED_HASH])
@pytest.mark.parametrize("f", [1, 2])
def test_the_largest_honest_messages_fit_their_bounds(scheme: str, f: int) -> None:
    params = ProtocolParams(
        checkpoint_interval=2, log_window=4, batch_size=3, max_request_bytes=300
    )
    config: ClusterConfig = make_cluster(f=f, params=params, scheme=scheme).config
    bounds = message_bounds(config, params)
    n, q = config.n, config.quorum
    request = _request(params.max_request_bytes, scheme)
    assert len(request.payload) <= bounds.request
    batch = (request,) * params.batch_size
    pre_prepare = _signed(PrePrepare(BIG, BIG, DIGEST, batch, BIG), scheme)
    vote = _signed(Prepare(BIG, BIG, DIGEST, BIG), scheme)
    commit = _signed(Commit(BIG, BIG, DIGEST, BIG), scheme)
    checkpoint = _signed(Checkpoint(BIG, DIGEST, BIG), scheme)
    certificate = PreparedCertificate(pre_prepare, (vote,) * (q - 1))  # type: ignore[arg-type]
    view_change = _signed(
        ViewChange(BIG, BIG, (checkpoint,) * n, (certificate,) * params.log_window, BIG),
        scheme,
    )
    new_view = _signed(
        NewView(BIG, (view_change,) * q, (pre_prepare,) * params.log_window, BIG), scheme
    )
    commit_certificate = _signed(CommitCertificate(pre_prepare, (commit,) * q, BIG), scheme)
    sizes = {
        "PRE-PREPARE": len(pre_prepare.payload),
        "PREPARE": len(vote.payload),
        "COMMIT": len(commit.payload),
        "CHECKPOINT": len(checkpoint.payload),
        "VIEW-CHANGE": len(view_change.payload),
        "NEW-VIEW": len(new_view.payload),
        "COMMIT-CERTIFICATE": len(commit_certificate.payload),
    }
    limits = bounds.by_type()
    for kind, size in sizes.items():
        assert size <= limits[kind], (kind, size, limits[kind])
        # Tight: integers are counted at 9 bytes and headers at their widest, no more.
        assert limits[kind] <= size * 1.05 + 16, (kind, size, limits[kind])
    assert bounds.frame >= len(new_view.payload) + SIGNATURE_BYTES[scheme]


def test_the_default_configuration_fits_the_default_frame_limit() -> None:
    params = ProtocolParams()
    config = make_cluster(f=1, params=params).config
    assert message_bounds(config, params).frame <= params.max_message_bytes


def test_store_limits_are_the_worst_case_of_each_store_and_tight() -> None:
    """Fill each bounded store of a replica with the largest messages that store can
    hold (every slot of the window with a maximal PRE-PREPARE and a vote of each kind
    from every replica, a proof per sender and phase, ...): it fits its limit
    (Replica.store_limits), and the limit is not far above it."""
    from pbft.certificates import CheckedViewChange
    from pbft.evidence import Evidence
    from pbft.replica import Slot

    scheme = KEYED_HASH
    params = ProtocolParams(
        checkpoint_interval=2, log_window=4, batch_size=3, max_request_bytes=300
    )
    cluster = make_cluster(f=1, clients=3, params=params, scheme=scheme)
    replica, config = cluster.replicas[0], cluster.config
    n, q, window = config.n, config.quorum, params.log_window
    request = _request(params.max_request_bytes, scheme)
    batch = (request,) * params.batch_size
    pre_prepare = _signed(PrePrepare(BIG, BIG, DIGEST, batch, BIG), scheme)
    vote = _signed(Prepare(BIG, BIG, DIGEST, BIG), scheme)
    commit = _signed(Commit(BIG, BIG, DIGEST, BIG), scheme)
    checkpoint = _signed(Checkpoint(BIG, DIGEST, BIG), scheme)
    certificate = PreparedCertificate(pre_prepare, (vote,) * (q - 1))  # type: ignore[arg-type]
    view_change = _signed(
        ViewChange(BIG, BIG, (checkpoint,) * n, (certificate,) * window, BIG), scheme
    )
    for seq in range(1, window + 1):
        slot = replica.slots[seq] = Slot()
        slot.pre_prepare = pre_prepare  # type: ignore[assignment]
        slot.prepares = dict.fromkeys(range(n), vote)  # type: ignore[arg-type]
        slot.commits = dict.fromkeys(range(n), commit)  # type: ignore[arg-type]
        replica.prepared_certificates[seq] = certificate  # type: ignore[assignment]
        replica.commit_certificates[seq] = CommitCertificate(pre_prepare, (commit,) * q, BIG)  # type: ignore[arg-type]
        replica.committed[seq] = pre_prepare.message  # type: ignore[assignment]
    per_sender = window // params.checkpoint_interval + 2
    for seq in range(per_sender):
        replica.checkpoint_votes[seq] = dict.fromkeys(range(n), checkpoint)  # type: ignore[arg-type]
    replica.pending = dict.fromkeys(range(3), request)  # type: ignore[arg-type]
    replica.view_changes[1] = {
        sender: CheckedViewChange(view_change, DIGEST, {})
        for sender in range(n)  # type: ignore[arg-type]
    }
    for sender in range(n):
        for first in (pre_prepare, vote, commit, checkpoint, view_change):
            replica.evidence[(sender, first.message.TYPE)] = Evidence(first, first)
    share = replica._future_share_bytes
    copies = share // len(pre_prepare.payload)
    replica.future = {sender: [pre_prepare] * copies for sender in range(n)}  # type: ignore[misc]
    held, limits = replica.store_bytes(), replica.store_limits()
    for store in ("pending", "slots", "certificates", "committed", "checkpoints",
                  "view_changes", "evidence", "future"):  # fmt: skip
        assert 0.75 * limits[store] <= held[store] <= limits[store], (store, held[store])
