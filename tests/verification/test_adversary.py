"""The explorer's adversary: faults inside the run, drop reasons reached, bounded stores."""

from __future__ import annotations

import random

import attrs
import pytest

from faults.verification.draw import _draw_schedule, draw_params, draw_plan
from faults.verification.explore import explore, run_plan
from faults.verification.reach import known_drop_reasons
from faults.verification.sim import SIM_PARAMS, SimPlan, TraitorPlan, random_workload, simulate
from pbft.replica import Replica


def test_scheduled_faults_fire_inside_the_run() -> None:
    summary = explore(range(40), jobs=1)
    faults = summary["faults"]
    assert faults["scheduled"] > 40
    assert faults["fired_fraction"] >= 0.9, faults
    assert faults["fired_by_kind"]["crash"] == faults["scheduled_by_kind"]["crash"]
    assert faults["byzantine_injections"] > 0


def test_the_explorer_draws_byzantine_traitors_and_clients() -> None:
    plans = [draw_plan(seed) for seed in range(200)]
    byzantine = [p for p in plans if any(t.behaviour == "byzantine" for t in p.traitors)]
    colluding = [p for p in byzantine if sum(t.behaviour == "byzantine" for t in p.traitors) > 1]
    assert len(byzantine) >= 40 and colluding
    assert {t.replica for p in byzantine for t in p.traitors if t.behaviour == "byzantine"} >= {
        0,
        1,
        2,
    }
    assert sum(bool(p.byzantine_clients) for p in plans) >= 25


def test_the_explorer_draws_channels_and_adaptive_batching_apart_from_the_schedule() -> None:
    seeds = range(400)
    params = [draw_params(seed) for seed in seeds]
    channels = [seed for seed, p in zip(seeds, params, strict=True) if not p.signed_replies]
    adaptive = [seed for seed, p in zip(seeds, params, strict=True)
                if p.partial_batches_in_flight == 1]  # fmt: skip
    assert 60 <= len(channels) <= 140 and 60 <= len(adaptive) <= 140
    assert set(channels) != set(adaptive)
    for seed in seeds[:50]:
        schedule = _draw_schedule(seed, None)
        assert schedule.params == SIM_PARAMS
        assert draw_plan(seed) == attrs.evolve(schedule, params=draw_params(seed))
    # With channels on, a Byzantine client's messages in another client's name meet the
    # channel check (a replica's channel may relay signed messages of others).
    reached = any(
        "channel-mismatch" in simulate(draw_plan(seed), seed).drop_reasons for seed in channels[:12]
    )
    assert reached


def test_the_drop_reason_table_covers_every_reason_the_core_counts() -> None:
    reasons = known_drop_reasons()
    assert {"bad-signature", "outside-watermarks", "invalid-new-view", "equivocation"} <= set(
        reasons
    )
    summary = explore(range(12), jobs=1)
    assert set(reasons) <= set(summary["drop_reasons"])
    assert all(0.0 <= share <= 1.0 for share in summary["drop_reasons"].values())
    assert summary["drop_reasons"]["bad-signature"] > 0


def _busy_plan() -> SimPlan:
    rng = random.Random(1)
    traitor = TraitorPlan(1, "byzantine", params=(("rate", 0.3),))
    return SimPlan(f=1, n=4, clients=2, workload=random_workload(rng, 2, 12, 3),
                   traitors=(traitor,))  # fmt: skip


def test_a_store_above_its_bound_is_an_invariant_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = {"pending": 100, "future": 0}
    monkeypatch.setattr(Replica, "store_bytes", lambda self: dict(sizes), raising=False)
    monkeypatch.setattr(Replica, "store_limits", lambda self: {"pending": 1000, "future": 1000},
                        raising=False)  # fmt: skip
    assert not [v for v in run_plan(_busy_plan(), 1).violations if "bounded stores" in v.detail]
    monkeypatch.setattr(Replica, "store_limits", lambda self: dict.fromkeys(sizes, 0),
                        raising=False)  # fmt: skip
    violations = [v for v in run_plan(_busy_plan(), 1).violations if v.checker == "invariant"]
    assert violations and "bounded stores" in violations[0].detail
    assert "pending" in violations[0].detail
