"""The ceiling model of ``pbft bench``: what it counts for one batch, and how it moves."""

from __future__ import annotations

import pytest

from pbft.bench.calibrate import Costs
from pbft.bench.model import batch_cost, ceiling_ops, latency_floor_ms, read_cost
from pbft.bench.run import BenchSettings

COSTS = Costs(sign_s=50e-6, verify_s=130e-6, mac_s=5e-6, hop_s=60e-6)


def test_one_request_in_a_cluster_of_four_costs_what_the_paper_s_figure_shows() -> None:
    """Fig. 1 of the paper for n = 4, counted by hand, no checkpoints (K huge)."""
    cost = batch_cost(n=4, f=1, batch=1, checkpoint_interval=10**9, auth="signatures")
    # REQUEST 1, PRE-PREPARE 3, PREPARE 3 backups x 3, COMMIT 4 x 3, REPLY 4.
    assert cost.messages == pytest.approx(1 + 3 + 9 + 12 + 4)
    # client 1, primary 1, backups 3 PREPAREs, 4 COMMITs, 4 REPLYs.
    assert cost.signs == pytest.approx(1 + 1 + 3 + 4 + 4)
    # the request by 4 replicas, PRE-PREPARE by 3, PREPAREs 9, COMMITs 12, client 2 replies.
    assert cost.verifies == pytest.approx(4 + 3 + 9 + 12 + 2)


def test_checkpoints_add_their_share_per_batch() -> None:
    without = batch_cost(4, 1, 1, 10**9, "signatures")
    every_batch = batch_cost(4, 1, 1, 1, "signatures")
    assert every_batch.messages - without.messages == pytest.approx(12)
    assert every_batch.signs - without.signs == pytest.approx(4)
    assert every_batch.verifies - without.verifies == pytest.approx(12)


def test_the_ceiling_grows_with_the_batch_and_falls_with_the_cluster() -> None:
    ceilings = [ceiling_ops(COSTS, 4, 1, b, 32, "signatures", 2) for b in (1, 10, 100)]
    assert ceilings == sorted(ceilings) and ceilings[0] < ceilings[-1]
    larger = [ceiling_ops(COSTS, 3 * f + 1, f, 10, 32, "signatures", 2) for f in (1, 2, 3)]
    assert larger == sorted(larger, reverse=True) and larger[0] > larger[-1]
    # Twice the cores, twice the ceiling: the model is CPU-bound by construction.
    assert ceiling_ops(COSTS, 4, 1, 10, 32, "signatures", 4) == pytest.approx(
        2 * ceiling_ops(COSTS, 4, 1, 10, 32, "signatures", 2)
    )


def test_the_latency_floor_is_the_critical_path() -> None:
    # 5 signatures, 1 + 2 + 2 + 3 + 2 = 10 verifications, 5 hops (2 MACs each) for f = 1.
    expected = (5 * 50 + 10 * 130 + 5 * (60 + 2 * 5)) / 1000
    assert latency_floor_ms(COSTS, 4, 1, "signatures") == pytest.approx(expected)
    # With MAC'd replies: the reply is not signed and the client verifies no signature.
    expected = (4 * 50 + 8 * 130 + 5 * (60 + 2 * 5)) / 1000
    assert latency_floor_ms(COSTS, 4, 1, "macs") == pytest.approx(expected)


def test_macs_take_the_replies_signatures_away_and_nothing_else() -> None:
    signed = batch_cost(4, 1, 10, 32, "signatures")
    macs = batch_cost(4, 1, 10, 32, "macs")
    assert macs.messages == signed.messages and macs.macs == signed.macs == 2 * signed.messages
    assert signed.signs - macs.signs == pytest.approx(4 * 10)  # n replies per request
    assert signed.verifies - macs.verifies == pytest.approx(2 * 10)  # f+1 per request
    assert ceiling_ops(COSTS, 4, 1, 10, 32, "macs", 2) > ceiling_ops(
        COSTS, 4, 1, 10, 32, "signatures", 2
    )


def test_unknown_auth_modes_and_empty_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown --auth 'none'"):
        batch_cost(4, 1, 1, 32, "none")
    with pytest.raises(ValueError, match="at least one request"):
        batch_cost(4, 1, 0, 32, "signatures")
    with pytest.raises(ValueError, match="unknown --auth"):
        latency_floor_ms(COSTS, 4, 1, "none")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"f": -1}, "--f must be at least 0"),
        ({"clients": 0}, "--clients must be at least 1"),
        ({"duration": 0}, "--duration must be more than 0"),
        ({"warmup": -1}, "--warmup must be at least 0"),
        ({"batch": 0}, "--batch must be at least 1"),
        ({"timeout": 0}, "--timeout must be more than 0"),
        ({"auth": "none"}, "--auth 'none'"),
    ],
)
def test_bad_settings_are_refused_by_name(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BenchSettings(**changes).check()


def test_a_fast_read_costs_2n_hops_and_signed_its_signatures() -> None:
    macs = read_cost(4, 1, "macs")
    assert (macs.messages, macs.signs, macs.verifies) == (8, 0, 0)
    signed = read_cost(4, 1, "signatures")
    # the client's READ and 4 REPLYs signed; the READ checked by 4, 3 replies by the client.
    assert (signed.signs, signed.verifies) == (5, 4 + 3)
    # With fast reads a writer checks 2f+1 replies, not f+1.
    assert batch_cost(4, 1, 1, 10**9, "signatures", 3).verifies == pytest.approx(4 + 3 + 9 + 12 + 3)


def test_the_ceiling_of_a_mix_lies_between_its_parts() -> None:
    writes = ceiling_ops(COSTS, 4, 1, 10, 32, "macs", 2, fast_reads=1e-9)
    reads = ceiling_ops(COSTS, 4, 1, 10, 32, "macs", 2, fast_reads=1.0)
    mix = ceiling_ops(COSTS, 4, 1, 10, 32, "macs", 2, fast_reads=0.9)
    assert writes < mix < reads
    # Without fast reads, the ceiling is the ordered one whatever the mix.
    assert ceiling_ops(COSTS, 4, 1, 10, 32, "macs", 2) == pytest.approx(
        2 * 10 / batch_cost(4, 1, 10, 32, "macs").cpu_seconds(COSTS)
    )
