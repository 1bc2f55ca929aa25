"""Branch coverage of the protocol core by what CI's verification runs.

Which branches of the core (``pbft/replica*.py``, ``certificates.py``, ``auth.py``,
``client.py``, ``encoding.py``) do the explorer and its companions ever take? A branch
that no simulated run takes is one no checker can have checked. This script runs the
verification set of CI (see "What runs in CI" in docs/verification.md) under the
``coverage`` package, with branch measurement on, and reports per module:

- ``explorer``: seeds ``--start`` .. ``--start + --seeds - 1`` of ``draw_plan`` (CI: 2,000);
- ``canary``: the 30 canary seeds with f+1 traitors;
- ``twins``: the exhaustive n = 4, 2-view Twins set (2,187 runs) and the seeded sample
  of 100 n = 7 arrangements;
- ``regressions``: the pinned lossy-sweep seeds of tests/verification/test_regressions.py;
- ``scenarios``: every scripts/scenarios/*.toml on the simulator.

The mutant tests are left out on purpose: they run wrong code.

How it works: the runs are dealt round-robin to ``--jobs`` worker processes, each a fresh
``python scripts/coverage_core.py --worker`` that starts coverage *before* it imports
``pbft`` (so module-level lines count too), runs its share in-process and saves a data
file with a unique suffix; the parent combines them (coverage's parallel mode) and
reads the result through coverage's JSON report.

    python scripts/coverage_core.py [--seeds 2000] [--start 0] [--jobs 2]
        [--parts explorer,canary,twins,regressions,scenarios] [--twins-sample K]
        [--markdown FILE] [--json FILE]

Prints the per-module table (statements, branches, branch coverage) and the total, then
every uncovered branch as ``file:line -> line`` (``exit`` when the missed branch leaves
the function) with the source line it starts from. Exits 1 if any run reported a
violation (coverage of a failing run would not mean much), else 0; ``--fail-under P``
also exits 1 when total branch coverage is below P percent.

Measured on the 2-core machine (shared): the full CI set (4,338 runs) takes about 7
minutes with ``--jobs 2``, against about 4 without coverage (the C tracer with branch
measurement costs roughly 1.7 times a plain run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: The core modules measured, as globs relative to the repository root.
CORE = [
    "pbft/replica*.py",
    "pbft/certificates.py",
    "pbft/auth.py",
    "pbft/client.py",
    "pbft/encoding.py",
]

PARTS = ("explorer", "canary", "twins", "regressions", "scenarios")

#: The canary seeds and the Twins sets, as tests/verification runs them.
CANARY_SEEDS = 30
TWINS_SETS = (
    {"n": 4, "views": 2, "sample": None, "seed": 0},
    {"n": 7, "views": 2, "sample": 100, "seed": 7},
)


def core_files() -> list[Path]:
    return sorted({path for pattern in CORE for path in ROOT.glob(pattern)})


# ----------------------------------------------------------------------- the runs


def plan_tasks(parts: list[str], start: int, seeds: int, twins_sample: int | None) -> list[list]:
    """Every run of the chosen parts, as a small JSON-able list."""
    tasks: list[list] = []
    if "explorer" in parts:
        tasks += [["explorer", seed] for seed in range(start, start + seeds)]
    if "canary" in parts:
        tasks += [["canary", seed] for seed in range(CANARY_SEEDS)]
    if "twins" in parts:
        sys.path.insert(0, str(ROOT))
        from faults.verification.twins import select

        for twins in TWINS_SETS:
            sample = twins["sample"] if twins_sample is None else twins_sample
            indices = select(twins["n"], twins["views"], sample=sample, seed=twins["seed"])
            tasks += [
                ["twins", twins["n"], twins["views"], index, twins["seed"]] for index in indices
            ]
    if "regressions" in parts:
        tasks += [["regression", f, seed] for f, seed in pinned_regressions()]
    if "scenarios" in parts:
        tasks += [["scenario", str(path)] for path in sorted(ROOT.glob("scripts/scenarios/*.toml"))]
    return tasks


def pinned_regressions() -> list[tuple[int, int]]:
    """(f, seed) of every pinned lossy-sweep test, read from the test's own parameters."""
    sys.path.insert(0, str(ROOT))
    from tests.verification import test_regressions

    (mark,) = [
        m
        for m in test_regressions.test_pinned_lossy_sweep_seed.pytestmark
        if m.name == "parametrize"
    ]
    return [(f, seed) for f, seed, _bug in mark.args[1]]


def run_task(task: list) -> list[str]:
    """Run one task; return its violations as short strings (empty: it passed)."""
    kind = task[0]
    if kind == "explorer":
        from faults.verification.explore import run_seed

        return [f"{v.checker}: {v.detail}" for v in run_seed(task[1]).violations]
    if kind == "canary":
        # The canary must fail (f+1 traitors): its violations are expected, not counted.
        from faults.verification.explore import draw_canary_plan, run_plan

        run_plan(draw_canary_plan(task[1]), task[1])
        return []
    if kind == "twins":
        from faults.verification.twins import arrangement_at, run_arrangement

        _, n, views, index, seed = task
        result = run_arrangement(arrangement_at(index, n, views), seed)
        return [f"{v.checker}: {v.detail}" for v in result.violations]
    if kind == "regression":
        from tests.verification.test_regressions import lossy_sweep

        try:
            lossy_sweep(task[1], task[2])
        except AssertionError as error:
            return [f"regression: {error}"]
        return []
    if kind == "scenario":
        from faults.scenarios.document import load_scenario
        from faults.scenarios.simulated import run_scenario_sim

        report = run_scenario_sim(load_scenario(Path(task[1])))
        return [] if report["passed"] else [f"scenario: expectations not met: {task[1]}"]
    raise ValueError(f"unknown task {task!r}")


def worker(tasks_file: Path, data_file: Path, result_file: Path) -> int:
    """A worker process: coverage first, then the imports and the runs."""
    import coverage

    cov = coverage.Coverage(
        data_file=str(data_file),
        data_suffix=True,
        branch=True,
        include=[str(path) for path in core_files()],
    )
    cov.start()
    sys.path.insert(0, str(ROOT))
    failures: list[dict[str, Any]] = []
    tasks = json.loads(tasks_file.read_text())
    try:
        for task in tasks:
            for violation in run_task(task):
                failures.append({"task": task, "violation": violation})
    finally:
        cov.stop()
        cov.save()
    result_file.write_text(json.dumps({"runs": len(tasks), "failures": failures}))
    return 0


def run_workers(tasks: list[list], jobs: int, workdir: Path) -> dict[str, Any]:
    """Deal the tasks round-robin to ``jobs`` worker processes; wait; gather results."""
    jobs = max(1, min(jobs, len(tasks)))
    processes = []
    for job in range(jobs):
        tasks_file = workdir / f"tasks-{job}.json"
        tasks_file.write_text(json.dumps(tasks[job::jobs]))
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            str(tasks_file),
            str(workdir / ".coverage"),
            str(workdir / f"result-{job}.json"),
        ]
        processes.append(subprocess.Popen(command, cwd=ROOT))
    try:
        codes = [process.wait() for process in processes]
    finally:
        # An interrupted parent must not leave its workers running.
        for process in processes:
            if process.poll() is None:
                process.kill()
    if any(codes):
        raise SystemExit(f"a coverage worker failed with status {codes}")
    runs, failures = 0, []
    for job in range(jobs):
        result = json.loads((workdir / f"result-{job}.json").read_text())
        runs += result["runs"]
        failures += result["failures"]
    return {"runs": runs, "failures": failures}


# ----------------------------------------------------------------------- the report


def measure(workdir: Path) -> dict[str, Any]:
    """Combine the workers' data files; per-module figures from coverage's JSON report."""
    import coverage

    include = [str(path) for path in core_files()]
    cov = coverage.Coverage(data_file=str(workdir / ".coverage"), branch=True, include=include)
    cov.combine([str(workdir)])
    cov.save()
    report_file = workdir / "coverage.json"
    cov.json_report(outfile=str(report_file), include=include, show_contexts=False)
    raw = json.loads(report_file.read_text())
    modules = []
    for name, data in sorted(raw["files"].items()):
        path = Path(name) if Path(name).is_absolute() else ROOT / name
        lines = path.read_text().splitlines()
        summary = data["summary"]
        missing = [
            {"from": start, "to": end, "source": lines[start - 1].strip()}
            for start, end in data["missing_branches"]
        ]
        modules.append(
            {
                "module": str(path.relative_to(ROOT)),
                "statements": summary["num_statements"],
                "missed_statements": summary["missing_lines"],
                "branches": summary["num_branches"],
                "covered_branches": summary["covered_branches"],
                "partial_branches": summary["num_partial_branches"],
                "missed_lines": data["missing_lines"],
                "missed_branches": missing,
            }
        )
    for module in modules:
        module["branch_percent"] = percent(module["covered_branches"], module["branches"])
        module["statement_percent"] = percent(
            module["statements"] - module["missed_statements"], module["statements"]
        )
    total = {
        key: sum(module[key] for module in modules)
        for key in ("statements", "missed_statements", "branches", "covered_branches")
    }
    total["branch_percent"] = percent(total["covered_branches"], total["branches"])
    total["statement_percent"] = percent(
        total["statements"] - total["missed_statements"], total["statements"]
    )
    return {"modules": modules, "total": total}


def percent(part: int, whole: int) -> float:
    return 100.0 if whole == 0 else round(100.0 * part / whole, 1)


def arrow(branch: dict[str, Any]) -> str:
    target = "exit" if branch["to"] < 0 else str(branch["to"])
    return f"{branch['from']} -> {target}"


def table(result: dict[str, Any]) -> list[str]:
    rows = [
        "| module | statements | statement coverage | branches | branches taken "
        "| branch coverage |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for module in result["modules"] + [dict(result["total"], module="**total**")]:
        rows.append(
            f"| {module['module']} | {module['statements']} | {module['statement_percent']:.1f}% "
            f"| {module['branches']} | {module['covered_branches']} "
            f"| {module['branch_percent']:.1f}% |"
        )
    return rows


def uncovered(result: dict[str, Any], markdown: bool) -> list[str]:
    rows = []
    for module in result["modules"]:
        for branch in module["missed_branches"]:
            where = f"{module['module']}:{arrow(branch)}"
            rows.append(
                f"- `{where}`: `{branch['source']}`"
                if markdown
                else f"  {where:<44} {branch['source']}"
            )
    return rows


def markdown_report(result: dict[str, Any], command: str, runs: dict[str, int]) -> str:
    measured = ", ".join(f"{count} {part}" for part, count in runs.items())
    lines = [
        f"Command: `{command}` ({measured} runs).",
        "",
        *table(result),
        "",
        "Uncovered branches (`file:line -> line`, `exit`: the branch that leaves the function):",
        "",
        *uncovered(result, markdown=True),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        return worker(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000, help="explorer seeds (CI: 2000)")
    parser.add_argument("--start", type=int, default=0, help="first explorer seed")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--twins-sample",
        type=int,
        default=None,
        help="a seeded sample of K arrangements per Twins set instead of CI's",
    )
    parser.add_argument("--markdown", type=Path, help="write the table and branches here")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument(
        "--fail-under",
        type=float,
        default=None,
        help="exit 1 if total branch coverage is below this percentage",
    )
    args = parser.parse_args()
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    try:
        import coverage  # noqa: F401
    except ImportError:
        parser.error("the coverage package is needed: pip install -e '.[verify]'")
    started = time.perf_counter()
    tasks = plan_tasks(parts, args.start, args.seeds, args.twins_sample)
    runs: dict[str, int] = {}
    for task in tasks:
        runs[task[0]] = runs.get(task[0], 0) + 1
    print(
        f"running {len(tasks)} runs ({runs}) under coverage with {args.jobs} jobs",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="coverage-core-") as directory:
        outcome = run_workers(tasks, args.jobs, Path(directory))
        result = measure(Path(directory))
    elapsed = time.perf_counter() - started
    print("\n".join(table(result)))
    print(f"\n{len(tasks)} runs in {elapsed:.0f} s; uncovered branches:")
    print("\n".join(uncovered(result, markdown=False)) or "  none")
    for failure in outcome["failures"][:10]:
        print(f"VIOLATION in {failure['task']}: {failure['violation']}", file=sys.stderr)
    command = "python scripts/coverage_core.py " + " ".join(sys.argv[1:])
    if args.markdown:
        args.markdown.write_text(markdown_report(result, command.strip(), runs))
    if args.json:
        summary = dict(result, runs=runs, elapsed_s=round(elapsed, 1), failures=outcome["failures"])
        args.json.write_text(json.dumps(summary, indent=1))
    if outcome["failures"]:
        return 1
    if args.fail_under is not None and result["total"]["branch_percent"] < args.fail_under:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
