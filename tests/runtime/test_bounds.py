"""Every runtime store a faulty peer can grow is bounded in bytes (docs/runtime.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbft.auth import Authenticator
from pbft.bounds import message_bounds
from pbft.config import ConfigError, ProtocolParams
from pbft.evidence import Evidence
from pbft.messages import Commit, Prepare
from pbft.runtime.evidence_store import EvidenceStore
from pbft.runtime.files import ConfigFileError, init_cluster, load_cluster
from pbft.runtime.limits import check_limits, link_queue_bytes, max_frame_bytes
from pbft.runtime.links import PeerLink
from pbft.runtime.queues import FrameQueue
from pbft.simnet import derive_signer
from tests.runtime.test_links import CONFIG, SEED, signer


def test_a_peer_that_never_reads_pins_at_most_queue_bytes() -> None:
    """A disconnected peer: large frames pile up to the byte bound, the rest are dropped."""
    link = PeerLink(
        CONFIG, ("replica", 0), signer(("replica", 0)), ("replica", 1), ("memory", 0),
        max_frame_bytes=100_000, queue_bytes=250_000,
    )  # fmt: skip
    accepted = [link.send_nowait(bytes(100_000)) for _ in range(50)]
    statistics = link.statistics()
    assert accepted.count(True) == 2
    assert statistics.bytes_queued == 200_000 <= 250_000
    assert (statistics.frames_queued, statistics.frames_dropped) == (2, 48)
    assert link.send_nowait(bytes(10_000))  # a small frame still fits in the room left


async def test_taking_a_batch_gives_the_bytes_back() -> None:
    queue = FrameQueue(max_frames=10, max_bytes=30)
    assert [queue.put_nowait(bytes(10)) for _ in range(4)] == [True, True, True, False]
    assert await queue.get_batch(2, 1000) == [bytes(10), bytes(10)]
    assert (queue.frames_queued, queue.bytes_queued, queue.frames_dropped) == (1, 10, 1)
    queue.close()
    assert not queue.put_nowait(b"x")


def test_the_replica_link_bound_holds_two_largest_messages_and_one_frame() -> None:
    params = ProtocolParams()
    bound = link_queue_bytes(params, CONFIG)
    assert bound >= 2 * message_bounds(CONFIG, params).frame
    assert bound >= max_frame_bytes(params)


def _pair(kind: type, sender: int, seq: int) -> Evidence:
    auth = Authenticator(CONFIG, derive_signer(SEED, "replica", sender))
    return Evidence(
        auth.sign(kind(0, seq, b"a" * 32, sender)), auth.sign(kind(0, seq, b"b" * 32, sender))
    )


def test_an_endless_equivocator_keeps_one_file_per_phase_within_its_budget(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path / "evidence", CONFIG, sender_budget_bytes=100_000)
    results = [
        store.save(_pair(kind, 1, seq)) for seq in range(1, 200) for kind in (Prepare, Commit)
    ]
    files = sorted(path.name for path in (tmp_path / "evidence").iterdir())
    assert files == ["commit-v0-n1-from-1.json", "prepare-v0-n1-from-1.json"]
    assert store.refused == len(results) - 2
    assert [r.first_refusal for r in results].count(True) == 1  # logged once
    assert sum(p.stat().st_size for p in (tmp_path / "evidence").iterdir()) == store.bytes_kept()
    # Another sender still has its own budget; a restart counts the files already there.
    assert store.save(_pair(Prepare, 2, 7)).path is not None
    again = EvidenceStore(tmp_path / "evidence", CONFIG, sender_budget_bytes=100_000)
    assert again.save(_pair(Prepare, 1, 300)).path is None
    assert again.files_kept() == 3


def test_a_file_past_the_senders_budget_is_refused(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, CONFIG, sender_budget_bytes=10)
    saved = store.save(_pair(Prepare, 1, 1))
    assert saved.path is None and "budget" in saved.reason
    assert list(tmp_path.iterdir()) == []


def test_a_configuration_whose_new_view_cannot_fit_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="too small"):
        check_limits(ProtocolParams(max_message_bytes=1024 * 1024), CONFIG)
    with pytest.raises(ConfigError, match="too large"):
        check_limits(ProtocolParams(max_message_bytes=2**32), CONFIG)
    files = init_cluster(tmp_path / "c", f=1, base_port=7300)
    path = files.directory / "cluster.toml"
    path.write_text(path.read_text() + "\n[protocol]\nmax_message_bytes = 1048576\n")
    with pytest.raises(ConfigFileError) as error:
        load_cluster(files.directory)
    assert "\n" not in str(error.value) and "too small" in str(error.value)
