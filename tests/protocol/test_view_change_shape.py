"""A VIEW-CHANGE no honest replica could send is refused whole (hole 2 of issue 8).

The attack: a faulty replica pads its VIEW-CHANGE with junk prepared
certificates up to the frame limit. Bad certificates used to be dropped one by
one while the VIEW-CHANGE was kept, and the new primary copies the signed
VIEW-CHANGEs into V, so every NEW-VIEW came out bigger than the frame limit and
every backup refused it: no view change could complete. Now P holds at most one
certificate per sequence number, inside (h, h+L], each with quorum-1 PREPAREs,
and the VIEW-CHANGE is no bigger than pbft.bounds says; anything else is refused
before any of its signatures is checked, so the NEW-VIEW always fits.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from pbft.bounds import message_bounds
from pbft.certificates import check_view_change, view_change_shape_defect
from pbft.config import ProtocolParams
from pbft.encoding import encode_signed
from pbft.events import Effect, Event, NewViewEntered, Receive, SendToReplicas
from pbft.messages import (
    Checkpoint,
    NewView,
    PreparedCertificate,
    PrePrepare,
    Signed,
    ViewChange,
    batch_digest,
)
from pbft.replica import Replica
from pbft.simnet import SimCluster, make_cluster
from tests.conftest import assert_agreement, completed_all, submit_puts
from tests.protocol.test_byzantine_input import _view_change_cluster

SMALL = ProtocolParams(
    checkpoint_interval=2, log_window=4, batch_size=2, max_request_bytes=256,
    view_change_timeout_ticks=300,
)  # fmt: skip


def _tight_cluster(seed: int) -> SimCluster:
    """A cluster whose frame limit is exactly the largest honest NEW-VIEW."""
    config = make_cluster(f=1, params=SMALL, seed=seed).config
    params = attrs.evolve(SMALL, max_message_bytes=message_bounds(config, SMALL).frame)
    return make_cluster(f=1, clients=2, params=params, seed=seed)


def _junk_certificates(replica: Replica, count: int) -> tuple[PreparedCertificate, ...]:
    """Certificates for sequence numbers far outside any window, with no PREPAREs."""
    batch: tuple[Any, ...] = ()
    return tuple(
        PreparedCertificate(
            replica.auth.sign(PrePrepare(0, 10_000 + i, batch_digest(batch), batch, replica.id)),
            (),
        )
        for i in range(count)
    )


class PaddingPrimary:
    """Replica 0, faulty: it proposes nothing, and pads every VIEW-CHANGE it sends with
    junk certificates until the VIEW-CHANGE is as big as the frame limit allows."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.padded = 0

    def step(self, event: Event) -> list[Effect]:
        out: list[Effect] = []
        for effect in self.replica.step(event):
            if type(effect) is SendToReplicas:
                message = effect.message.message
                if type(message) is PrePrepare:
                    continue
                if type(message) is ViewChange:
                    effect = SendToReplicas(effect.replicas, self._pad(message))
            out.append(effect)
        return out

    def _pad(self, view_change: ViewChange) -> Signed[ViewChange]:
        replica = self.replica
        limit = replica.params.max_message_bytes - 512
        junk = _junk_certificates(replica, 1)
        each = len(encode_signed(replica.auth.sign(attrs.evolve(view_change, prepared=junk))))
        count = 1
        while True:
            bigger = _junk_certificates(replica, count * 2)
            signed = replica.auth.sign(attrs.evolve(view_change, prepared=bigger))
            if len(encode_signed(signed)) > limit or count > 10_000:
                break
            count *= 2
        padded = replica.auth.sign(
            attrs.evolve(view_change, prepared=_junk_certificates(replica, count))
        )
        assert each < len(padded.payload) <= limit
        self.padded += 1
        return padded


def test_a_view_change_padded_to_the_frame_limit_does_not_halt_view_changes() -> None:
    cluster = _tight_cluster(seed=301)
    traitor = PaddingPrimary(cluster.replicas[0])
    cluster.network.replace(("replica", 0), traitor)
    submit_puts(cluster, per_client=4)
    assert cluster.network.run_until_idle(max_ticks=60_000)
    assert traitor.padded >= 1
    assert completed_all(cluster)
    honest = [1, 2, 3]
    assert_agreement(cluster, honest)
    assert all(cluster.replicas[r].view >= 1 for r in honest)
    entered = [n for _, _, n in cluster.network.notices if type(n) is NewViewEntered]
    assert entered
    bounds = message_bounds(cluster.config, cluster.params)
    for r in honest:
        replica = cluster.replicas[r]
        new_view = replica.last_new_view
        assert new_view is not None and len(new_view.payload) <= bounds.new_view
        assert replica.counters.dropped[("VIEW-CHANGE", "too-large")] >= 1


# ------------------------------------------------------------------ the shape rules


def _honest_view_change(cluster: SimCluster, sender: int) -> ViewChange:
    replica = cluster.replicas[sender]
    return ViewChange(1, 0, (), (replica.prepared_certificates[1],), sender)


def _shapes(cluster: SimCluster) -> dict[str, ViewChange]:
    honest = _honest_view_change(cluster, 3)
    certificate = honest.prepared[0]
    checkpoint = cluster.replicas[3].auth.sign(Checkpoint(2, b"\x00" * 32, 3))
    far = attrs.evolve(
        certificate,
        pre_prepare=cluster.replicas[0].auth.sign(
            attrs.evolve(certificate.pre_prepare.message, seq=cluster.params.log_window + 1)
        ),
    )
    return {
        "two-certificates-for-one-seq": attrs.evolve(honest, prepared=(certificate, certificate)),
        "certificate-outside-window": attrs.evolve(honest, prepared=(far,)),
        "certificate-from-a-later-view": attrs.evolve(honest, new_view=0 + certificate.view),
        "certificate-with-wrong-prepare-count": attrs.evolve(
            honest,
            prepared=(attrs.evolve(certificate, prepares=certificate.prepares * 2),),
        ),
        "checkpoint-proof-too-long": attrs.evolve(
            honest, checkpoint_proof=(checkpoint,) * (cluster.config.n + 1)
        ),
        "stable-seq-not-a-checkpoint": attrs.evolve(honest, stable_seq=1),
    }


@pytest.mark.parametrize(
    "defect",
    [
        "two-certificates-for-one-seq",
        "certificate-outside-window",
        "certificate-with-wrong-prepare-count",
        "checkpoint-proof-too-long",
        "stable-seq-not-a-checkpoint",
    ],
)
def test_a_view_change_of_a_shape_no_honest_replica_sends_is_refused_whole(defect: str) -> None:
    cluster = _view_change_cluster()
    view_change = _shapes(cluster)[defect]
    signed = cluster.replicas[3].auth.sign(view_change)
    assert view_change_shape_defect(cluster.config, cluster.params, signed) == defect
    replica = cluster.replicas[1]
    assert check_view_change(replica.auth, cluster.config, cluster.params, signed) is None
    replica.step(Receive(encode_signed(signed)))
    assert replica.counters.dropped[("VIEW-CHANGE", defect)] == 1
    honest = cluster.replicas[3].auth.sign(_honest_view_change(cluster, 3))
    assert view_change_shape_defect(cluster.config, cluster.params, honest) is None
    checked = check_view_change(replica.auth, cluster.config, cluster.params, honest)
    assert checked is not None and set(checked.certificates) == {1}


def test_view_zero_and_later_view_certificates_are_refused() -> None:
    cluster = _view_change_cluster()
    honest = _honest_view_change(cluster, 3)
    auth = cluster.replicas[3].auth
    zero = auth.sign(attrs.evolve(honest, new_view=0))
    replica = cluster.replicas[1]
    replica.step(Receive(encode_signed(zero)))
    assert replica.counters.dropped[("VIEW-CHANGE", "old-view")] == 1
    # A certificate of view 0 cannot be in a VIEW-CHANGE for view 0 or below.
    certificate = honest.prepared[0]
    later = cluster.replicas[1].auth.sign(
        attrs.evolve(certificate.pre_prepare.message, view=1, sender=1)
    )
    late = auth.sign(attrs.evolve(honest, prepared=(attrs.evolve(certificate, pre_prepare=later),)))
    assert (
        view_change_shape_defect(cluster.config, cluster.params, late)
        == "certificate-from-a-later-view"
    )


def test_a_view_change_over_its_size_bound_is_refused_before_its_signature() -> None:
    cluster = _view_change_cluster()
    replica = cluster.replicas[1]
    honest = _honest_view_change(cluster, 3)
    certificate = honest.prepared[0]
    # One certificate whose PREPAREs carry huge digests: the right shape, the wrong size.
    fat = tuple(
        cluster.replicas[p.message.sender].auth.sign(
            attrs.evolve(p.message, digest=b"\x00" * replica.bounds.view_change)
        )
        for p in certificate.prepares
    )
    signed = cluster.replicas[3].auth.sign(
        attrs.evolve(honest, prepared=(attrs.evolve(certificate, prepares=fat),))
    )
    assert len(signed.payload) > replica.bounds.view_change
    forged = Signed(signed.message, b"\x00" * len(signed.signature), signed.payload)
    replica.step(Receive(encode_signed(forged)))
    # Refused for its size, not its (bad) signature: no verification was spent on it.
    assert replica.counters.dropped[("VIEW-CHANGE", "too-large")] == 1
    assert replica.counters.dropped[("VIEW-CHANGE", "bad-signature")] == 0


def test_the_new_primary_new_view_fits_whatever_view_changes_it_holds() -> None:
    """Any q VIEW-CHANGEs that pass the checks make a NEW-VIEW within the bound."""
    cluster = _tight_cluster(seed=302)
    traitor = PaddingPrimary(cluster.replicas[0])
    cluster.network.replace(("replica", 0), traitor)
    submit_puts(cluster, per_client=3)
    assert cluster.network.run_until_idle(max_ticks=60_000)
    sent = [n for _, _, n in cluster.network.notices if type(n) is NewViewEntered]
    assert sent
    primary = cluster.replicas[1]
    assert primary.last_new_view is not None
    assert type(primary.last_new_view.message) is NewView
    assert len(encode_signed(primary.last_new_view)) <= cluster.params.max_message_bytes


def test_certificates_are_accepted_exactly_inside_the_window() -> None:
    """P holds certificates for h < n <= h + L only: the edges are n = h (refused),
    h + 1 and h + L (accepted), h + L + 1 (refused)."""
    cluster = _view_change_cluster()
    honest = _honest_view_change(cluster, 3)
    certificate = honest.prepared[0]
    window = cluster.params.log_window

    def at(seq: int) -> str | None:
        moved = attrs.evolve(
            certificate,
            pre_prepare=cluster.replicas[0].auth.sign(
                attrs.evolve(certificate.pre_prepare.message, seq=seq)
            ),
        )
        signed = cluster.replicas[3].auth.sign(attrs.evolve(honest, prepared=(moved,)))
        return view_change_shape_defect(cluster.config, cluster.params, signed)

    assert at(0) == "certificate-outside-window"
    assert at(1) is None and at(window) is None
    assert at(window + 1) == "certificate-outside-window"
