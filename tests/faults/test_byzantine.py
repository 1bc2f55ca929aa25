"""The byzantine traitor and Byzantine clients: anything the faulty keys can sign.

Castro & Liskov §2: "faulty nodes may behave arbitrarily", but "cannot
subvert the cryptographic techniques": they sign only with their own keys.
These tests hold the adversary to both halves and the honest replicas to
safety and liveness under it.
"""

from __future__ import annotations

import random

import pytest

from faults.traitors.base import Trigger
from faults.traitors.behaviours import BEHAVIOURS, make_behaviour
from faults.traitors.clients import MODES
from faults.traitors.spec import parse_traitor
from faults.verification.checkers import check_run
from faults.verification.sim import SimPlan, TraitorPlan, random_workload, simulate

BYZANTINE = (("budget", 300), ("large", 1), ("rate", 0.5))


def _plan(f: int, faulty: tuple[int, ...], seed: int, **extra: object) -> SimPlan:
    rng = random.Random(seed)
    traitors = tuple(TraitorPlan(r, "byzantine", Trigger(), BYZANTINE) for r in faulty)
    return SimPlan(
        f=f, n=3 * f + 1, clients=3, workload=random_workload(rng, 3, 24, 3),
        traitors=traitors, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def _assert_safe_and_live(plan: SimPlan, seed: int) -> None:
    outcome = simulate(plan, seed)
    violations = check_run(
        outcome.replicas, outcome.operations, outcome.stabilization_ms, outcome.liveness_bound_ms
    )
    assert violations == [], (seed, violations)
    assert outcome.invariant_violations == [], (seed, outcome.invariant_violations)
    assert outcome.faults["injections"] > 0


def test_byzantine_is_a_registered_behaviour_with_checked_parameters() -> None:
    assert "byzantine" in BEHAVIOURS
    spec = parse_traitor("1:byzantine:rate=0.5,budget=10")
    assert spec.build().budget == 10
    with pytest.raises(ValueError, match="rate"):
        make_behaviour("byzantine", rate=2.0)


def test_same_seed_same_trace() -> None:
    plan = _plan(1, (1,), 3)
    first, second = simulate(plan, 3), simulate(plan, 3)
    assert first.trace_hash == second.trace_hash
    assert first.faults == second.faults and first.faults["injections"] > 0
    assert simulate(plan, 4).trace_hash != first.trace_hash


def test_it_reaches_many_drop_reasons_in_a_short_run() -> None:
    reached: set[str] = set()
    for seed in range(6):
        reached |= set(simulate(_plan(1, (1,), seed), seed).drop_reasons)
    expected = {"bad-signature", "non-member", "malformed", "own-message", "old-view",
                "not-primary", "not-a-checkpoint-seq", "unsolicited", "wrong-recipient",
                "outside-watermarks", "invalid-view-change"}  # fmt: skip
    assert expected <= reached, expected - reached
    assert len(reached) >= 18, sorted(reached)


@pytest.mark.parametrize("seed", range(4))
def test_four_replicas_stay_safe_and_live_with_a_byzantine_backup(seed: int) -> None:
    _assert_safe_and_live(_plan(1, (seed % 3 + 1,), seed), seed)


@pytest.mark.parametrize("seed", range(3))
def test_four_replicas_stay_safe_and_live_with_a_byzantine_primary(seed: int) -> None:
    _assert_safe_and_live(_plan(1, (0,), seed), seed)


@pytest.mark.parametrize("seed", range(3))
def test_seven_replicas_stay_safe_and_live_with_two_colluding_traitors(seed: int) -> None:
    _assert_safe_and_live(_plan(2, (0, 1 + seed), seed), seed)


def test_colluding_traitors_hold_each_others_keys_and_no_honest_key() -> None:
    from faults.verification import sim

    plan = _plan(2, (1, 4), 0)
    cluster = sim.make_cluster(f=2, clients=3, seed=0, params=plan.params, scheme=sim.KEYED_HASH)
    keyring = sim._keyring(cluster, plan)
    assert keyring.replica_ids == [1, 4]
    from pbft.messages import Prepare

    forged = keyring.sign_as(Prepare(0, 1, b"\0" * 32, 4), 4)
    assert cluster.replicas[2].auth.verify(forged) is None  # a colluder's valid signature
    honest_claim = keyring.replicas[1].sign(Prepare(0, 1, b"\0" * 32, 2))
    assert cluster.replicas[3].auth.verify(honest_claim) == "bad-signature"


@pytest.mark.parametrize("mode", MODES)
def test_byzantine_clients_do_not_hurt_honest_clients(mode: str) -> None:
    rng = random.Random(5)
    workload = list(random_workload(rng, 3, 24, 3))
    # The faulty client works on keys of its own (the explorer's rule too).
    workload[2] = tuple(w.replace(b"key-", b"bad-") for w in workload[2])
    plan = SimPlan(f=1, n=4, clients=3, workload=tuple(workload),
                   byzantine_clients=((2, mode),))  # fmt: skip
    outcome = simulate(plan, 5)
    violations = check_run(
        outcome.replicas, outcome.operations, outcome.stabilization_ms, outcome.liveness_bound_ms
    )
    assert violations == [] and outcome.invariant_violations == []
    honest = [op for op in outcome.operations if op["client"] != 2]
    assert honest and all(op["return_ms"] is not None for op in honest)
    assert outcome.faults["client_rewrites"] > 0


def test_wire_corruptions_are_refused_by_the_decoder_at_every_level() -> None:
    """Every broken encoding faults.traitors.wire makes is one the decoder refuses,
    and together they reach its refusals at the top and inside nested messages."""
    from faults.traitors.wire import corrupt
    from pbft import service as kv
    from pbft.encoding import DecodeError, decode_signed, encode_signed
    from pbft.messages import Prepare, PrePrepare
    from pbft.simnet import make_cluster

    cluster = make_cluster(f=1, clients=1, seed=5)
    cluster.network.submit(0, [kv.put("a", "1")])
    assert cluster.network.run_until_idle(10_000)
    replica = cluster.replicas[1]
    pre_prepare = next(s.pre_prepare for s in replica.slots.values() if s.pre_prepare)
    assert type(pre_prepare.message) is PrePrepare and pre_prepare.message.batch
    prepare = next(p for s in replica.slots.values() for p in s.prepares.values())
    assert type(prepare.message) is Prepare
    batch = pre_prepare.message.batch
    messages = [encode_signed(pre_prepare), encode_signed(prepare)]
    rng = random.Random(7)
    seen = set()
    for _ in range(3000):
        name, data = corrupt(rng, rng.choice(messages), 4096, [prepare.payload, batch[0].payload])
        seen.add(name)
        with pytest.raises(DecodeError):
            decode_signed(data, 4096)
    for expected in (
        "truncated", "non-canonical", "over-the-limit", "not-a-signed-pair", "long-signature",
        "unknown-tag", "wrong-shape", "wrong-field", "nested-of-another-type",
        "nested-wrong-field", "nested-unknown-tag",
    ):  # fmt: skip
        assert expected in seen, (expected, sorted(seen))
