"""How fast does the simulator run? Simulated runs per second and simulated/real time.

The standard run: 4 replicas, 2 clients, 100 requests, no faults (and, for a
second line, the same with a faulty primary and a lossy network until 2 s).
Reports medians over several repetitions, since machines are noisy, and the
standard run's rate on every core at once (one process per core, as
``pbft explore`` runs by default): the seeds per minute a user gets.

    python scripts/bench_explorer.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faults.traitors.base import Trigger
from faults.verification.sim import SimPlan, TraitorPlan, random_workload, simulate


def standard_plan(faulty: bool) -> SimPlan:
    workload = random_workload(random.Random(1), clients=2, operations=100, keys=5)
    if not faulty:
        return SimPlan(f=1, n=4, clients=2, workload=workload)
    return SimPlan(
        f=1, n=4, clients=2, workload=workload,
        traitors=(TraitorPlan(0, "mute", Trigger(from_seq=20)),),
        network=({"kind": "loss", "rate": 0.1, "until_ms": 2000},),
        stabilization_ms=2000,
    )  # fmt: skip


def measure(plan: SimPlan, repeat: int) -> tuple[float, float]:
    walls, ratios = [], []
    for seed in range(repeat):
        started = time.perf_counter()
        outcome = simulate(plan, seed)
        wall = time.perf_counter() - started
        walls.append(wall)
        ratios.append(outcome.sim_ms / 1000 / wall)
    return 1 / statistics.median(walls), statistics.median(ratios)


def _timed_run(seed: int) -> float:
    outcome = simulate(standard_plan(False), seed)
    return outcome.sim_ms


def measure_parallel(repeat: int, jobs: int) -> float:
    """Runs per second of the standard run with ``jobs`` processes, ``repeat`` runs each."""
    seeds = list(range(repeat * jobs))
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        list(pool.imap_unordered(_timed_run, seeds))
    return len(seeds) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print("| run | runs/s (median) | simulated/real time (median) |")
    print("|---|---|---|")
    for name, faulty in (("4 replicas, 2 clients, 100 requests", False),
                         ("same, mute primary from seq 20 + 10% loss", True)):  # fmt: skip
        runs_per_second, ratio = measure(standard_plan(faulty), args.repeat)
        print(f"| {name} | {runs_per_second:.1f} | {ratio:.1f}x |")
    jobs = max(1, os.cpu_count() or 1)
    if jobs > 1:
        rate = measure_parallel(args.repeat, jobs)
        print(f"| the first, {jobs} processes at once | {rate:.1f} in all | |")


if __name__ == "__main__":
    main()
