"""The long Twins run: every arrangement over 3 views (or a sample of n = 7), checked.

Usage::

    python scripts/twins_long.py --views 3 [--n 4] [--jobs J] [--seed S]
    python scripts/twins_long.py --n 7 --views 3 --sample 20000 --jobs 8
    python scripts/twins_long.py --n 4 --views 2 --seed 0 --replay 1000   # one arrangement

For n = 4 it runs the whole enumeration of :mod:`faults.verification.twins`
(4 twinned choices x 27^3
partitions = 78,732 arrangements over 3 views; 2,187 over 2 views, the CI set); for n = 7
the enumeration is far too big (1.6 million over 2 views, 1.5 billion over 3), so it runs
``--sample`` arrangements (default 10,000) drawn with a seeded rng.

How long it takes (measured: a run costs about 33 ms of CPU for n = 4 and 85 ms for
n = 7, whatever the number of views): the exhaustive n = 4, 3-view set (78,732 runs) is
about 45 minutes on one core, 22 on two, 6 on eight; the 2-view set (2,187 runs, the CI
set) about 40 seconds on two cores; 10,000 n = 7 arrangements about 7 minutes on two.
A machine busy with other work takes up to twice as long.

Prints a progress line to stderr every 1,000 runs and the summary as JSON to stdout;
exits with status 1 if any checker reported a violation (each one names its arrangement
and the command that replays it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Run from a checkout without installing: the repository root holds faults/ and pbft/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faults.verification.twins import (
    arrangement_at,
    check_all,
    enumeration_size,
    run_arrangement,
)

#: n = 7 arrangements sampled when --sample is not given.
DEFAULT_SAMPLE_N7 = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, choices=(4, 7), help="replicas")
    parser.add_argument("--views", type=int, default=3, help="views (phases) per scenario")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--seed", type=int, default=0, help="seeds the workloads and sample")
    parser.add_argument("--sample", type=int, help="run this many arrangements at random")
    parser.add_argument("--limit", type=int, help="run only the first LIMIT arrangements")
    parser.add_argument("--replay", type=int, metavar="INDEX", help="rerun one arrangement")
    arguments = parser.parse_args(argv)
    if arguments.replay is not None:
        return replay(arguments.n, arguments.views, arguments.replay, arguments.seed)
    sample = arguments.sample
    if sample is None and arguments.n == 7:
        sample = DEFAULT_SAMPLE_N7
    size = enumeration_size(arguments.n, arguments.views)
    total = min(x for x in (size, sample, arguments.limit) if x is not None)
    print(
        f"twins: n={arguments.n} views={arguments.views}: {total:,} of {size:,} "
        f"arrangements on {arguments.jobs} processes",
        file=sys.stderr,
    )
    started = time.perf_counter()

    def progress(done: int) -> None:
        if done % 1000 == 0 or done == total:
            rate = done / (time.perf_counter() - started)
            left = (total - done) / rate if rate else 0
            print(f"  {done:,}/{total:,} runs, {rate:.1f}/s, ~{left / 60:.0f} min left",
                  file=sys.stderr)  # fmt: skip

    summary = check_all(
        n=arguments.n, views=arguments.views, jobs=arguments.jobs, limit=arguments.limit,
        sample=sample, seed=arguments.seed, progress=progress,
    )  # fmt: skip
    print(json.dumps(summary, indent=1))
    return 1 if summary["violations"] else 0


def replay(n: int, views: int, index: int, seed: int) -> int:
    arrangement = arrangement_at(index, n, views)
    result = run_arrangement(arrangement, seed)
    print(arrangement.describe())
    print(json.dumps(
        {"seed": result.seed, "violations": [v.as_dict() for v in result.violations],
         "coverage": result.coverage, "sim_ms": result.sim_ms, "trace_hash": result.trace_hash},
        indent=1,
    ))  # fmt: skip
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
