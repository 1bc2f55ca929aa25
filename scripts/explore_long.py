"""The long exploration run: 100,000 seeds (or --seeds N) on every core.

    python scripts/explore_long.py [--seeds 100000] [--jobs 8] [--start 0]

Expect roughly 10 runs per second per core (see scripts/bench_explorer.py):
about 1.5 hours on 2 cores. Every violation is printed with the command that
replays it; pin each one as a regression test in tests/verification/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faults.verification.explore import explore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100_000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    done = [0]

    def progress(result) -> None:  # type: ignore[no-untyped-def]
        done[0] += 1
        if done[0] % 1000 == 0:
            print(f"{done[0]} seeds", file=sys.stderr, flush=True)
        for violation in result.violations:
            print(f"seed {result.seed}: {violation.checker}: {violation.detail}", flush=True)

    summary = explore(range(args.start, args.start + args.seeds), jobs=args.jobs, progress=progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "violations"}, indent=1))
    print(f"{len(summary['violations'])} violations")


if __name__ == "__main__":
    main()
