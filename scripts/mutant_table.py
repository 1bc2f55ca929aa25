"""How well does the explorer catch wrong protocols? A Markdown table, one row per mutant.

Each mutant of tests/verification/mutants.py (one PBFT rule broken on purpose)
runs over seeds 0..N-1 of the explorer, without stopping at the first kill;
a seed kills it when any checker reports a violation or the simulation raises
("crash"). Columns: the rule broken, the kill rate (share of seeds with a
violation), how many seeds it took to the first kill (the first killing seed
plus one), and which checkers caught it (with the number of seeds each).

    python scripts/mutant_table.py [--seeds 500] [--jobs 2] [--mutant NAME ...] [--honest]

Exits with status 1 if a mutant the test suite expects to be caught survived.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.verification.mutants import MUTANTS, Mutant, Verdict, mutant, verdicts


def row(name: str, rule: str, found: list[Verdict]) -> str:
    killed = [verdict for verdict in found if verdict.killed]
    rate = f"{len(killed) / len(found):.1%} ({len(killed)}/{len(found)})"
    first = str(killed[0].seed + 1) if killed else "not killed"
    caught_by = Counter(checker for verdict in killed for checker in verdict.checkers)
    checkers = ", ".join(f"{checker} {count}" for checker, count in caught_by.most_common())
    return f"| {name} | {rule} | {rate} | {first} | {checkers or '-'} |"


def say(message: str) -> None:
    """Progress and warnings go to stderr, so stdout is the table alone."""
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500, help="seeds per mutant (default 500)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--mutant", action="append", default=[], help="only this mutant")
    parser.add_argument("--honest", action="store_true", help="add a row for the honest code")
    args = parser.parse_args()
    chosen: list[Mutant] = [mutant(name) for name in args.mutant] or list(MUTANTS)
    seeds = range(args.seeds)
    rows: list[str] = []
    survivors: list[str] = []
    if args.honest:
        rows.append(row("(honest code)", "none", verdicts(seeds, args.jobs)))
    for candidate in chosen:
        started = time.perf_counter()
        with candidate.applied():
            found = verdicts(seeds, args.jobs)
        killed = any(verdict.killed for verdict in found)
        say(f"{candidate.name}: {time.perf_counter() - started:.0f} s")
        rows.append(row(candidate.name, f"{candidate.section}: {candidate.rule}", found))
        if not killed and not candidate.gap:
            survivors.append(candidate.name)
        elif killed and candidate.gap:
            say(f"note: the explorer now catches {candidate.name}; clear its gap")
    print(f"Mutants over explorer seeds 0..{args.seeds - 1}\n")
    print("| mutant | rule broken | kill rate | seeds to first kill | caught by |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    if survivors:
        say(f"survived {args.seeds} seeds, expected to be caught: {', '.join(survivors)}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
