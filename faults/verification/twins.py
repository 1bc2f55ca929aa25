"""Twins (Bano et al.), exhaustively for the small case: every arrangement, checked.

A Twins scenario gives one replica a *twin*: a second node with the same
identity and key, so that the pair can behave like one Byzantine replica that
tells different parts of the network different stories, using only the
honest code (see :class:`faults.verification.sim.TwinPlan`). The paper enumerates, round by
round, a leader and a partition of the nodes. Here a round is a view, and the
primary of view v is replica v mod n, so the leader arrangement is decided by
*which* replica is twinned: the primary of view 0, of view 1, ..., or one that
leads none of the views the scenario spans. Those are the arrangements that
differ; twinning another replica that leads none of them changes only who
leads the views after the last phase.

The partition of a phase (one phase per view, :data:`PHASE_MS` long) says,
for every other replica, which copy it talks to: "replica", "twin" or "both".
Replicas that talk to different copies sit on different sides of the
partition and cannot reach each other either (a cut of their links for that
phase); a replica that talks to both copies bridges the two sides, and is the
one that can catch the twins equivocating. For n = 4 and 2 views this gives
3 twinned choices x 27 x 27 = 2,187 arrangements; :func:`arrangements`
enumerates them in a fixed order, and :func:`arrangement_at` decodes an index
directly, so that a sample of a huge set (n = 7) needs no enumeration.

Each arrangement becomes a :class:`~faults.verification.sim.SimPlan` (:func:`twins_plan`):
a small seeded workload (clients with even ids talk to the replica, odd ids to
the twin, so the copies diverge), the twin silenced and the network healed at
the end of the last phase (the stabilization time), and every checker of
:mod:`faults.verification.checkers` on the run (:func:`faults.verification.explore.run_plan`).
:func:`check_all` runs a whole set on several processes and summarises it.

Why 600 ms phases: with the simulator's defaults a stalled view 0 ends when a
client retransmits to every replica (300 ms) and the backups' request timers
expire (another 300 ms), so the first NEW-VIEW arrives about 600 ms in. A
phase of 600 ms therefore covers view 0, and the next phase the view after it.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from faults.verification.explore import SeedResult, run_all, run_plan
from faults.verification.sim import COVERAGE_PATHS, SimPlan, TwinPlan, random_workload

#: Which copy of the twinned replica a peer talks to in one phase.
ROUTES = ("replica", "twin", "both")
#: One phase per view; see the module docstring for why 600 ms.
PHASE_MS = 600
#: A small workload keeps each run short: two clients (one per copy), a dozen operations.
CLIENTS = 2
OPERATIONS = 12
KEYS = 3


@attrs.frozen
class Arrangement:
    """One Twins scenario: the twinned replica and, per view, the copy each peer talks to.

    ``routes[phase][peer]`` is "replica", "twin" or "both"; the twinned replica's own
    entry is "replica" and unused (a replica never sends to itself).
    """

    n: int
    twinned: int
    routes: tuple[tuple[str, ...], ...]
    #: The position in the enumeration of (n, views): the replay handle.
    index: int

    @property
    def views(self) -> int:
        return len(self.routes)

    @property
    def leads(self) -> list[int]:
        """The views (among those the scenario spans) whose primary is the twinned replica."""
        return [view for view in range(self.views) if view % self.n == self.twinned]

    def describe(self) -> str:
        """One line a person can read: who is twinned, then each view's partition."""
        leads = ", ".join(f"view {view}" for view in self.leads) or "no view"
        phases = "; ".join(
            f"view {phase}: "
            + " ".join(
                f"{peer}->{route}" for peer, route in enumerate(routes) if peer != self.twinned
            )
            for phase, routes in enumerate(self.routes)
        )
        return f"#{self.index} twin of replica {self.twinned} (leads {leads}); {phases}"


def f_of(n: int) -> int:
    return (n - 1) // 3


def twinned_choices(n: int, views: int) -> list[int]:
    """The primaries of views 0 .. views-1, then one replica that leads none of them."""
    leaders = sorted({view % n for view in range(views)})
    idle = [replica for replica in range(n) if replica not in leaders]
    return leaders + idle[:1]


def enumeration_size(n: int = 4, views: int = 2) -> int:
    return len(twinned_choices(n, views)) * len(ROUTES) ** ((n - 1) * views)


def arrangement_at(index: int, n: int = 4, views: int = 2) -> Arrangement:
    """The ``index``-th arrangement of the enumeration (mixed radix, last peer fastest)."""
    size = enumeration_size(n, views)
    if not 0 <= index < size:
        raise IndexError(f"arrangement {index} outside 0..{size - 1} (n={n}, views={views})")
    per_twin = size // len(twinned_choices(n, views))
    twinned = twinned_choices(n, views)[index // per_twin]
    digits = _ternary_digits(index % per_twin, (n - 1) * views)
    phases = []
    for phase in range(views):
        chosen = iter(digits[phase * (n - 1) : (phase + 1) * (n - 1)])
        phases.append(
            tuple("replica" if peer == twinned else ROUTES[next(chosen)] for peer in range(n))
        )
    return Arrangement(n, twinned, tuple(phases), index)


def _ternary_digits(value: int, width: int) -> list[int]:
    digits = [0] * width
    for position in range(width - 1, -1, -1):
        value, digits[position] = divmod(value, len(ROUTES))
    return digits


def arrangements(n: int = 4, views: int = 2) -> Iterator[Arrangement]:
    """Every arrangement of (n, views), in index order."""
    for index in range(enumeration_size(n, views)):
        yield arrangement_at(index, n, views)


def cuts(arrangement: Arrangement, phase_ms: int = PHASE_MS) -> tuple[dict[str, Any], ...]:
    """Per phase, drop every message between a peer on the replica's side and one on the
    twin's side (both directions): the partition of the honest replicas."""
    rules = []
    for phase, routes in enumerate(arrangement.routes):
        peers = [p for p in range(arrangement.n) if p != arrangement.twinned]
        links = [
            [source, destination]
            for source, destination in itertools.permutations(peers, 2)
            if {routes[source], routes[destination]} == {"replica", "twin"}
        ]
        if links:
            rules.append(
                {"kind": "loss", "rate": 1.0, "links": links,
                 "at_ms": phase * phase_ms, "until_ms": (phase + 1) * phase_ms}
            )  # fmt: skip
    return tuple(rules)


def twins_plan(arrangement: Arrangement, seed: int, phase_ms: int = PHASE_MS) -> SimPlan:
    """The simulator plan of one arrangement; ``seed`` draws its workload."""
    rng = random.Random(seed)
    return SimPlan(
        f=f_of(arrangement.n), n=arrangement.n, clients=CLIENTS,
        workload=random_workload(rng, CLIENTS, OPERATIONS, keys=KEYS),
        network=cuts(arrangement, phase_ms),
        twin=TwinPlan(arrangement.twinned, arrangement.routes, phase_ms),
        stabilization_ms=arrangement.views * phase_ms,
    )  # fmt: skip


def scenario_seed(index: int, seed: int) -> int:
    """The run seed of arrangement ``index`` in a check seeded by ``seed``."""
    return seed + index


def run_arrangement(arrangement: Arrangement, seed: int = 0) -> SeedResult:
    """Simulate and check one arrangement (``seed`` as given to :func:`check_all`)."""
    run_seed = scenario_seed(arrangement.index, seed)
    return run_plan(twins_plan(arrangement, run_seed), run_seed)


def replay_command(arrangement: Arrangement, seed: int) -> str:
    return (
        f"python scripts/twins_long.py --n {arrangement.n} --views {arrangement.views} "
        f"--seed {seed} --replay {arrangement.index}"
    )


# -------------------------------------------------------------------- a whole set


@attrs.frozen
class _Result:
    index: int
    twinned: int
    seed: SeedResult


def _run_index(arguments: tuple[int, int, int, int]) -> _Result:
    n, views, index, seed = arguments
    arrangement = arrangement_at(index, n, views)
    return _Result(index, arrangement.twinned, run_arrangement(arrangement, seed))


def select(
    n: int, views: int, limit: int | None = None, sample: int | None = None, seed: int = 0
) -> list[int]:
    """The indices a check runs: all of them, or ``sample`` drawn with a seeded rng."""
    size = enumeration_size(n, views)
    if sample is not None and sample < size:
        indices = sorted(random.Random(seed).sample(range(size), sample))
    else:
        indices = list(range(size))
    return indices if limit is None else indices[:limit]


def check_all(
    n: int = 4,
    views: int = 2,
    jobs: int = 2,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run and check every arrangement of (n, views) (or a sample, or the first ``limit``);
    ``progress`` is called with the number of runs done so far.

    The summary: runs, violations (each with its arrangement, run seed and replay
    command), runs per second, and the shares of runs in which a view change happened
    and in which an honest replica detected equivocation, overall and per twinned
    replica, with the coverage of every rare path of :data:`faults.verification.sim.COVERAGE_PATHS`.
    """
    indices = select(n, views, limit, sample, seed)
    arguments = [(n, views, index, seed) for index in indices]
    started = time.perf_counter()
    done = [0]

    def count(_: _Result) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0])

    results: list[_Result] = run_all(_run_index, arguments, jobs, count, chunksize=8)
    elapsed = time.perf_counter() - started
    results.sort(key=lambda result: result.index)
    return summarize(
        results, n, views, seed, elapsed, complete=len(indices) == enumeration_size(n, views)
    )


def summarize(
    results: Sequence[_Result], n: int, views: int, seed: int, elapsed: float, complete: bool
) -> dict[str, Any]:
    runs = len(results)
    violations = []
    for result in results:
        arrangement = arrangement_at(result.index, n, views)
        for violation in result.seed.violations:
            violations.append(
                {**violation.as_dict(), "arrangement": arrangement.describe(),
                 "index": result.index, "seed": result.seed.seed,
                 "replay": replay_command(arrangement, seed)}
            )  # fmt: skip
    by_kind: dict[str, int] = {}
    for violation in violations:
        by_kind[violation["checker"]] = by_kind.get(violation["checker"], 0) + 1
    return {
        "n": n,
        "views": views,
        "enumeration_size": enumeration_size(n, views),
        "complete": complete,
        "runs": runs,
        "violations": violations,
        "violations_by_kind": by_kind,
        "runs_per_second": round(runs / elapsed, 2) if elapsed > 0 else None,
        "wall_seconds": round(elapsed, 2),
        "view_change": _share(results, _view_change),
        "equivocation_detected": _share(results, _equivocation),
        "view_change_or_equivocation": _share(
            results, lambda r: _view_change(r) or _equivocation(r)
        ),
        "by_twinned": {
            twinned: _shares([r for r in results if r.twinned == twinned])
            for twinned in twinned_choices(n, views)
        },
        "coverage": {
            path: _share(results, lambda r, p=path: r.seed.coverage[p]) for path in COVERAGE_PATHS
        },
    }


def _shares(results: Sequence[_Result]) -> dict[str, Any]:
    return {
        "runs": len(results),
        "view_change": _share(results, _view_change),
        "equivocation_detected": _share(results, _equivocation),
    }


def _view_change(result: _Result) -> bool:
    """An honest replica entered a new view (so its final view is at least 1)."""
    return result.seed.coverage["view_change"]


def _equivocation(result: _Result) -> bool:
    """An honest replica caught the twins signing two different things (evidence)."""
    return result.seed.coverage["equivocation_detected"]


def _share(results: Sequence[_Result], predicate: Callable[[_Result], bool]) -> float:
    return round(sum(map(predicate, results)) / len(results), 3) if results else 0.0
