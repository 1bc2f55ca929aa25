"""``pbft explore``: seeded simulations on every core, checked, with a summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from faults.verification.explore import (
    SeedResult,
    describe_plan,
    draw_plan,
    explore,
    replay_command,
    run_plan,
    shrink,
)
from faults.verification.sim_trace import sim_header
from faults.verification.trace_files import check_trace_path, close_trace, open_trace


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "explore",
        help="run many seeded simulations with random faults and check every one",
        description="Each seed draws a fault schedule (traitors, Twins, message loss, "
        "delay, duplication, reordering, partitions, crashes and restarts, all before a "
        "stabilization time), simulates it deterministically and runs the checkers "
        "(agreement, validity, linearizability, liveness).",
    )
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--f", type=int, choices=(1, 2), help="fix f (default: 60%% n=4, 40%% n=7)")
    cores = max(1, os.cpu_count() or 1)
    parser.add_argument("--jobs", type=int, default=cores,
                        help=f"processes to run seeds in (default: one per core, {cores} here; "
                        "results do not depend on it)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--replay", type=int, metavar="SEED", help="rerun one seed exactly")
    parser.add_argument("--trace", type=Path, metavar="FILE",
                        help="with --replay: write the run's trace (docs/trace.md) to FILE, "
                        "or its picture when FILE ends in .html")  # fmt: skip
    parser.add_argument("--no-shrink", action="store_true", help="do not shrink violations")


def run(args: argparse.Namespace) -> int:
    if args.replay is not None:
        return _replay(args)
    if args.trace is not None:
        raise ValueError("--trace needs --replay SEED: a trace is of one run")
    if args.seeds < 1 or args.jobs < 1:
        raise ValueError("--seeds and --jobs must be at least 1")
    done = [0]

    def progress(result: SeedResult) -> None:
        done[0] += 1
        if not args.json and sys.stderr.isatty():
            print(f"\r{done[0]}/{args.seeds} seeds", end="", file=sys.stderr, flush=True)
        for violation in result.violations:
            print(f"\nseed {result.seed}: {violation.checker} violation", file=sys.stderr)

    seeds = range(args.start, args.start + args.seeds)
    summary = explore(seeds, args.f, args.jobs, progress)
    if not args.no_shrink:
        for violation in summary["violations"][:3]:
            plan = shrink(
                draw_plan(violation["seed"], args.f), violation["seed"], violation["checker"]
            )
            violation["shrunk"] = describe_plan(plan)
    if not args.json and sys.stderr.isatty():
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        _print(summary)
    return 1 if summary["violations"] else 0


def _print(summary: dict[str, Any]) -> None:
    print(
        f"runs: {summary['runs']} ({summary['runs_per_second']} per second, "
        f"{summary['simulated_seconds']} simulated seconds in {summary['wall_seconds']} s)"
    )
    print("coverage (share of runs that reached each rare path):")
    for path, share in summary["coverage"].items():
        print(f"  {path:<28} {share:.1%}")
    faults = summary["faults"]
    kinds = ", ".join(
        f"{kind} {faults['fired_by_kind'][kind]}/{count}"
        for kind, count in faults["scheduled_by_kind"].items()
    )
    print(
        f"faults fired: {faults['fired']} of {faults['scheduled']} scheduled "
        f"({faults['fired_fraction']:.1%}; {kinds}); byzantine injections: "
        f"{faults['byzantine_injections']}, client rewrites: {faults['byzantine_client_rewrites']}"
    )
    print("drop reasons (share of runs in which an honest replica dropped for each):")
    for reason, share in sorted(summary["drop_reasons"].items(), key=lambda item: -item[1]):
        print(f"  {reason:<28} {share:.1%}{'' if share >= 0.01 else '   (below 1%)'}")
    if not summary["violations"]:
        print("violations: none")
        return
    kinds = ", ".join(f"{kind}: {count}" for kind, count in summary["violations_by_kind"].items())
    print(f"violations: {len(summary['violations'])} ({kinds})")
    for violation in summary["violations"]:
        print(f"- seed {violation['seed']}: {violation['checker']}: {violation['detail']}")
        print(f"  replay: {violation['picture']}")
        if "shrunk" in violation:
            print(f"  smallest failing schedule: {json.dumps(violation['shrunk'])}")


def _replay(args: argparse.Namespace) -> int:
    plan = draw_plan(args.replay, args.f)
    trace = None
    if args.trace is not None:
        check_trace_path(args.trace)
        trace = open_trace(args.trace, sim_header(plan, args.replay, describe_plan(plan)))
    result = run_plan(plan, args.replay, trace)
    written = ""
    if trace is not None:
        for violation in result.violations:
            trace.violation(violation.checker, violation.detail)
        written = close_trace(trace, args.trace, f"pbft explore --replay {args.replay}")
    report = {
        "seed": result.seed,
        "trace_hash": result.trace_hash,
        "violations": [v.as_dict() for v in result.violations],
        "coverage": result.coverage,
        "plan": describe_plan(plan),
        "replay": replay_command(args.replay, args.f),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"seed {result.seed}: trace {result.trace_hash[:16]}, "
            f"{len(result.violations)} violation(s)"
        )
        for violation in result.violations:
            print(f"- {violation.checker}: {violation.detail}")
        if written:
            print(written)
    return 1 if result.violations else 0
