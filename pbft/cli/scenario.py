"""``pbft scenario run|check FILE``: a scripted fault experiment and its verdict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    scenario = commands.add_parser(
        "scenario", help="run a scripted fault experiment (a TOML scenario file) and check it"
    )
    actions = scenario.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run", help="run FILE on a real cluster; exit 0 exactly when its expectations hold"
    )
    run.add_argument("file", type=Path, metavar="FILE", help="a scenario file (see docs/faults.md)")
    run.add_argument("--json", action="store_true", help="print the whole report as JSON")
    run.add_argument("--seed", type=int, help="use this seed instead of the file's")
    run.add_argument(
        "--sim", action="store_true",
        help="run on the deterministic simulator (simulated time) instead of a real cluster",
    )  # fmt: skip
    run.add_argument(
        "--keep", type=Path, metavar="DIR", help="run in DIR and keep its databases and logs"
    )
    run.add_argument(
        "--trace", type=Path, metavar="OUT",
        help="write the run's trace (docs/trace.md) to OUT, its picture if OUT.html "
        "(on a real cluster with the merged trace as OUT.jsonl beside it)",
    )  # fmt: skip
    check = actions.add_parser("check", help="validate FILE without running it")
    check.add_argument("file", type=Path, metavar="FILE")


def run(args: argparse.Namespace) -> int:
    from faults.scenarios.document import ScenarioError, load_scenario
    from faults.scenarios.report import format_report

    try:
        scenario = load_scenario(args.file)
    except ScenarioError as error:
        print(error, file=sys.stderr)  # FILE:LINE: problem, as compilers print it
        return 2
    if args.action == "check":
        traitors = ", ".join(map(str, scenario.traitor_ids)) or "none"
        print(
            f"{args.file}: ok: {scenario.name!r}: n = {scenario.n}, f = {scenario.f}, "
            f"traitors: {traitors}, {len(scenario.network)} network rule(s), "
            f"{scenario.workload.requests} requests"
        )
        return 0
    from faults.scenarios.runner import ScenarioRunError, run_scenario

    if args.sim:
        from faults.scenarios.simulated import run_scenario_sim

        report = run_scenario_sim(scenario, args.seed, args.trace)
        print(json.dumps(report) if args.json else format_report(report))
        if args.trace is not None and not args.json:
            print(report["trace"])
        return 0 if report["passed"] else 1
    if args.trace is not None and not args.trace.parent.is_dir():
        raise ValueError(f"--trace {args.trace}: folder {args.trace.parent} does not exist")
    try:
        report = run_scenario(scenario, args.seed, args.keep, trace=args.trace)
    except ScenarioRunError as error:
        print(f"pbft scenario: {args.file}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report) if args.json else format_report(report))
    if args.trace is not None and not args.json:
        print(report["trace"])
    return 0 if report["passed"] else 1
