"""Mutation score of the protocol core with a fast explorer run as the killer.

The hand-written mutants of tests/verification/mutants.py show that the explorer kills
the wrong protocols we thought of; this script asks the same of the ones a tool thinks
of. Cosmic Ray (``pip install -e '.[verify]'``) rewrites one operator, number, boolean
or loop of a core module at a time (``pbft/replica*.py``, ``certificates.py``,
``auth.py``, ``client.py``, ``encoding.py``) and runs the killer: explorer seeds
``0 .. --seeds - 1`` in ``--jobs`` processes, stopping at the first seed with a
violation (any checker, a per-step invariant, or an exception in the simulation). A
mutant the killer does not kill survives; with ``--protocol-tests`` every survivor is
also run against the core's fast tests (tests/protocol and tests/unit, about 45 s when
none fails), and both scores are reported. Two kinds of mutant are equivalent by
construction and not run (counted and reported apart): those inside annotations (every
core module has ``from __future__ import annotations``, so none is evaluated), and those
that turn ``is`` into ``==`` or ``is not`` into ``!=`` (the core compares by identity
only with None, classes and its own constants, where equality is identity: no core
class defines an ``__eq__`` that equals None or a class).

Everything happens in a copy: the committed tree (``git archive HEAD``) is unpacked
into ``--workdir`` and mutated there, so no mutated file can reach the checkout and
concurrent edits to it cannot confuse the run.

    python scripts/mutation_score.py [--seeds 200] [--jobs 2] [--sample 150]
        [--sample-seed 0] [--module pbft/certificates.py ...] [--budget-minutes 60]
        [--protocol-tests] [--protocol-minutes 15] [--equivalent scripts/mutation_equivalent.json]
        [--markdown FILE] [--workdir /tmp/pbft-mutation]

The score is killed / (killed + survived - equivalent): mutants that Cosmic Ray could
not apply or that broke the import before any seed ran still count as killed (the
killer failed on them), and a killer that outlives the timeout (three times the clean
run) kills too; ``--equivalent`` names survivors judged equivalent by reading them
(``module:operator:occurrence`` -> reason). A long run for a person to start, not a CI
step: a killer run of 200 seeds takes about 15 s on 2 cores, a killed mutant usually
a few seconds.

``--kill`` runs the killer alone (Cosmic Ray's test command); ``--rescore FILE`` prints
the tables again from an earlier ``--json`` file, with ``--equivalent`` applied;
``--recheck FILE`` runs that file's survivors again against today's explorer and tests
(after new schedules, checkers or tests were added to kill them; the core itself must be
unchanged, or the mutants' positions would have moved).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CORE_TESTS = ["tests/protocol", "tests/unit"]

CORE = [
    "pbft/replica*.py",
    "pbft/certificates.py",
    "pbft/auth.py",
    "pbft/client.py",
    "pbft/encoding.py",
]


# ----------------------------------------------------------------------- the killer


def kill(seeds: int, jobs: int) -> int:
    """Cosmic Ray's test command: exit 1 at the first seed that reports a violation."""
    sys.path.insert(0, str(ROOT))
    import pbft
    from faults.verification.explore import run_all, run_seed

    # The editable install points at the main checkout; the mutant lives in this copy.
    if Path(pbft.__file__).resolve().parent != ROOT / "pbft":
        print(f"pbft imported from {pbft.__file__}, not from {ROOT}", file=sys.stderr)
        return 2
    found: list[Any] = []

    class Killed(Exception):
        pass

    def stop_at_violation(result: Any) -> None:
        if result.violations:
            found.append(result)
            raise Killed

    try:
        run_all(run_seed, list(range(seeds)), jobs, stop_at_violation, chunksize=1)
    except Killed:
        violation = found[0].violations[0]
        print(f"killed by seed {found[0].seed}: {violation.checker}: {violation.detail}")
        return 1
    print(f"survived {seeds} seeds")
    return 0


# ----------------------------------------------------------------------- the copy


def make_copy(workdir: Path) -> str:
    """Unpack the committed tree into ``workdir``; return the commit."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(workdir)], stdin=archive.stdout, check=True)
    archive.wait()
    # This script may be newer than the commit; the killer must be this one.
    (workdir / "scripts").mkdir(exist_ok=True)
    shutil.copy2(Path(__file__).resolve(), workdir / "scripts" / Path(__file__).name)
    return commit


def restore_core(workdir: Path, commit: str) -> None:
    """Put the pristine core files back (after a run stopped mid-mutation)."""
    archive = subprocess.Popen(
        ["git", "-C", str(ROOT), "archive", commit, "pbft"], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(workdir)], stdin=archive.stdout, check=True)
    archive.wait()


def core_modules(workdir: Path, chosen: list[str]) -> list[str]:
    modules = sorted(
        {str(p.relative_to(workdir)) for pattern in CORE for p in workdir.glob(pattern)}
    )
    if chosen:
        unknown = set(chosen) - set(modules)
        if unknown:
            raise SystemExit(f"not core modules: {sorted(unknown)}")
        modules = [module for module in modules if module in chosen]
    return modules


def write_config(workdir: Path, modules: list[str], seeds: int, jobs: int, timeout: float) -> Path:
    command = f"{sys.executable} scripts/mutation_score.py --kill --seeds {seeds} --jobs {jobs}"
    config = workdir / "cosmic-ray.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(modules)}\n"
        f"timeout = {timeout:.0f}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(command)}\n\n"
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )
    return config


# ----------------------------------------------------------------------- the session


def key(mutation: Any) -> str:
    return f"{mutation.module_path}:{mutation.operator_name}:{mutation.occurrence}"


Span = tuple[tuple[int, int], tuple[int, int]]


def annotation_spans(path: Path) -> list[Span]:
    """Where the module's annotations are, as ((line, col), (end line, end col)).

    Every core module starts with ``from __future__ import annotations``: an annotation is
    kept as a string and never evaluated (attrs reads only the names of annotated fields),
    so no mutation inside one can change what the code does.
    """
    tree = ast.parse(path.read_text())
    if not any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    ):
        return []
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return [
        ((n.lineno, n.col_offset), (n.end_lineno or n.lineno, n.end_col_offset or 0)) for n in found
    ]


def in_annotation(mutation: Any, spans: dict[Path, list[Span]], workdir: Path) -> bool:
    path = workdir / mutation.module_path
    if path not in spans:
        spans[path] = annotation_spans(path)
    start = tuple(mutation.start_pos)
    return any(begin <= start < end for begin, end in spans[path])


#: Cosmic Ray operators that turn an identity test into an equality test.
IDENTITY_TO_EQUALITY = ("ReplaceComparisonOperator_Is_Eq", "ReplaceComparisonOperator_IsNot_NotEq")


def by_construction(mutation: Any, spans: dict[Path, list[Span]], workdir: Path) -> bool:
    """Equivalent whatever the tests: see the module docstring."""
    if mutation.operator_name.split("/")[-1] in IDENTITY_TO_EQUALITY:
        return True
    return in_annotation(mutation, spans, workdir)


def sample_session(
    session: Path, workdir: Path, size: int | None, seed: int
) -> tuple[int, int, int]:
    """Skip the mutants equivalent by construction and all but a seeded sample of the rest.

    Returns (sample, total, equivalent by construction).
    """
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), mode=WorkDB.Mode.open) as database:
        items = sorted(database.work_items, key=lambda item: key(item.mutations[0]))
        spans: dict[Path, list[Span]] = {}
        annotations = [i.job_id for i in items if by_construction(i.mutations[0], spans, workdir)]
        rest = [item for item in items if item.job_id not in set(annotations)]
        skipped = list(annotations)
        if size is not None and size < len(rest):
            chosen = {item.job_id for item in random.Random(seed).sample(rest, size)}
            skipped += [item.job_id for item in rest if item.job_id not in chosen]
        else:
            size = len(rest)
        if skipped:
            outcome = WorkResult(worker_outcome=WorkerOutcome.SKIPPED)
            database.set_multiple_results(skipped, outcome)
        return size, len(items), len(annotations)


def run_session(workdir: Path, config: Path, session: Path, budget_s: float) -> bool:
    """``cosmic-ray exec`` until done or out of budget; True if it finished."""
    command = ["cosmic-ray", "exec", str(config), str(session)]
    process = subprocess.Popen(command, cwd=workdir, start_new_session=True)
    try:
        process.wait(timeout=budget_s)
        return process.returncode == 0
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        return False


def outcomes(session: Path) -> list[dict[str, Any]]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    rows = []
    with use_db(str(session), mode=WorkDB.Mode.open) as database:
        for item, result in database.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            mutation = item.mutations[0]
            if result.worker_outcome == WorkerOutcome.NO_TEST:
                status = "not applied"
            elif result.worker_outcome != WorkerOutcome.NORMAL:
                status = "error"
            elif result.test_outcome == TestOutcome.SURVIVED:
                status = "survived"
            else:
                status = "timeout" if result.output == "timeout" else "killed"
            rows.append(
                {
                    "key": key(mutation),
                    "module": str(mutation.module_path),
                    "line": mutation.start_pos[0],
                    "operator": mutation.operator_name,
                    "occurrence": mutation.occurrence,
                    "status": status,
                    "change": change(result.diff),
                    "stable": stable_key(mutation, change(result.diff)),
                    "output": (result.output or "")[-300:],
                }
            )
    return sorted(rows, key=lambda row: (row["module"], row["line"], row["key"]))


def stable_key(mutation: Any, changed: str) -> str:
    """``module:operator:before -> after``: unlike the occurrence number, it survives
    edits elsewhere in the module, so judgements of equivalence stay attached."""
    return f"{mutation.module_path}:{mutation.operator_name.split('/')[-1]}:{changed}"


def judged(row: dict[str, Any], equivalent: dict[str, str]) -> str:
    return equivalent.get(row.get("stable", ""), "")


def change(diff: str | None) -> str:
    """The mutated line, before -> after, from Cosmic Ray's diff."""
    if not diff:
        return ""
    removed = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("-") and not line.startswith("---")
    ]
    added = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return f"{' / '.join(removed)} -> {' / '.join(added)}"


def run_against(workdir: Path, row: dict[str, Any], command: list[str], timeout: float) -> str:
    """Apply one mutant in the copy, run ``command`` there: "killed" or "survived"."""
    module = workdir / row["module"]
    original = module.read_bytes()
    try:
        subprocess.run(
            ["cosmic-ray", "apply", row["module"], row["operator"], str(row["occurrence"])],
            cwd=workdir,
            check=True,
            capture_output=True,
        )
        environment = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(workdir))
        try:
            ran = subprocess.run(
                command, cwd=workdir, env=environment, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return "killed"
        return "survived" if ran.returncode == 0 else "killed"
    finally:
        module.write_bytes(original)


def protocol_tests(workdir: Path, row: dict[str, Any], timeout: float) -> str:
    """Apply one survivor in the copy and run the core's fast tests against it."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *CORE_TESTS]
    return run_against(workdir, row, command, timeout)


def recheck(args: argparse.Namespace) -> int:
    """Run an earlier run's survivors again, against today's killers (new schedules,
    checkers and tests), on the same core: the tables then say what is left."""
    earlier = json.loads(args.recheck.read_text())
    commit = earlier["commit"]
    same_core = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", commit, "HEAD", "--",
                                *CORE])  # fmt: skip
    if same_core.returncode != 0:
        raise SystemExit(f"the core changed since {commit[:10]}: mutant positions moved; rerun")
    workdir = args.workdir.resolve()
    head = make_copy(workdir)  # today's killers: the committed tree, as of now
    equivalent = json.loads(args.equivalent.read_text()) if args.equivalent else {}
    killer = [sys.executable, "scripts/mutation_score.py", "--kill", "--seeds", str(args.seeds),
              "--jobs", str(args.jobs)]  # fmt: skip
    rows = earlier["mutants"]
    survivors = [row for row in rows if row["status"] == "survived"]
    for index, row in enumerate(survivors, 1):
        row["explorer"] = run_against(workdir, row, killer, timeout=600)
        if row["explorer"] == "killed":
            row["protocol"] = "killed"
        elif judged(row, equivalent):
            row["protocol"] = "equivalent"
        else:
            row["protocol"] = protocol_tests(workdir, row, timeout=300)
        row["both"] = "killed" if row["protocol"] == "killed" else "survived"
        row["status"] = "survived" if row["explorer"] == "survived" else "killed"
        print(f"[{index}/{len(survivors)}] {row['module']}:{row['line']} "
              f"explorer {row['explorer']}, core tests {row['protocol']}",
              file=sys.stderr, flush=True)  # fmt: skip
    for row in rows:
        row.setdefault("explorer", row["status"])
        if row["explorer"] == "killed":
            row["protocol"], row["both"] = "killed", "killed"
    run = dict(earlier["run"])
    run["command"] += f" (survivors rechecked at {head[:10]}: " + " ".join(sys.argv[1:]) + ")"
    scores = {
        "explorer": score(rows, equivalent, "explorer"),
        "explorer + core tests": score(rows, equivalent, "both"),
    }
    report = markdown(rows, equivalent, scores, run["command"], commit, run["sample"],
                      run["total"], run["finished"], True, run.get("annotations", 0))  # fmt: skip
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    if args.json:
        args.json.write_text(json.dumps({"commit": commit, "run": run, "scores": scores,
                                         "mutants": rows}, indent=1))  # fmt: skip
    return 0


# ----------------------------------------------------------------------- the report


def score(rows: list[dict[str, Any]], equivalent: dict[str, str], field: str) -> dict[str, Any]:
    ran = [row for row in rows if row["status"] not in ("not applied", "error")]
    survived = [row for row in ran if row[field] == "survived"]
    argued = [row for row in survived if judged(row, equivalent)]
    killed = len(ran) - len(survived)
    counted = len(ran) - len(argued)
    return {
        "mutants": len(ran),
        "killed": killed,
        "survived": len(survived),
        "equivalent": len(argued),
        "score": round(100.0 * killed / counted, 1) if counted else None,
    }


def markdown(
    rows, equivalent, scores, command, commit, sample, total, finished, protocol, annotations=0
) -> str:
    late = " before the budget ran out"
    lines = [
        f"Command: `{command}` (commit {commit[:10]}; of {total} Cosmic Ray mutants, "
        f"{annotations} are equivalent by construction (inside annotations, or `is` made "
        f"`==`); {sample} "
        f"of the other {total - annotations} sampled, {scores['explorer']['mutants']} "
        f"run{'' if finished else late}).",
        "",
        "| killer | mutants run | killed | survived | judged equivalent | score |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, figures in scores.items():
        lines.append(
            f"| {name} | {figures['mutants']} | {figures['killed']} "
            f"| {figures['survived']} | {figures['equivalent']} | {figures['score']}% |"
        )
    by_module: dict[str, list[int]] = {}
    for row in rows:
        counts = by_module.setdefault(row["module"], [0, 0])
        counts[0] += 1
        counts[1] += row["status"] == "survived"
    lines += ["", "| module | mutants run | survived the explorer |", "|---|---:|---:|"]
    lines += [f"| {module} | {run} | {left} |" for module, (run, left) in by_module.items()]
    survivors = [row for row in rows if row["status"] == "survived"]
    header = (
        "| where | operator | mutation | core tests | equivalent? |"
        if protocol
        else ("| where | operator | mutation | equivalent? |")
    )
    lines += [
        "",
        "Survivors of the explorer:",
        "",
        header,
        "|---|---|---|---|---|" if protocol else "|---|---|---|---|",
    ]
    for row in survivors:
        mutation = row["change"].replace("|", "\\|")
        cells = [f"{row['module']}:{row['line']}", row["operator"].split("/")[-1], f"`{mutation}`"]
        if protocol:
            cells.append(row.get("protocol", ""))
        cells.append(judged(row, equivalent))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rescore(args: argparse.Namespace) -> int:
    """The tables again from an earlier run's --json, with --equivalent applied."""
    earlier = json.loads(args.rescore.read_text())
    rows, equivalent = earlier["mutants"], {}
    if args.equivalent:
        equivalent = json.loads(args.equivalent.read_text())
    scores = {"explorer": score(rows, equivalent, "explorer")}
    protocol = all("both" in row for row in rows)
    if protocol:
        scores["explorer + core tests"] = score(rows, equivalent, "both")
    run = earlier["run"]
    report = markdown(rows, equivalent, scores, run["command"], earlier["commit"],
                      run["sample"], run["total"], run["finished"], protocol,
                      run.get("annotations", 0))  # fmt: skip
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill", action="store_true", help="run the killer alone")
    parser.add_argument("--seeds", type=int, default=200, help="explorer seeds per mutant")
    parser.add_argument("--jobs", type=int, default=2, help="explorer processes (default 2)")
    parser.add_argument("--sample", type=int, default=None, help="mutants drawn at random")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--module", action="append", default=[], help="only this core module")
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument(
        "--protocol-tests",
        action="store_true",
        help="also run the core's tests (tests/protocol, tests/unit) on the survivors",
    )
    parser.add_argument(
        "--protocol-minutes",
        type=float,
        default=15.0,
        help="time for the core-tests stage (default 15)",
    )
    parser.add_argument("--equivalent", type=Path, help="JSON: mutant key -> why equivalent")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--json", type=Path, help="write every mutant's outcome here")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pbft-mutation"))
    parser.add_argument("--rescore", type=Path, help="re-report a --json file; run nothing")
    parser.add_argument(
        "--recheck", type=Path, help="run a --json file's survivors again against today's killers"
    )
    args = parser.parse_args()
    if args.kill:
        return kill(args.seeds, args.jobs)
    if args.rescore:
        return rescore(args)
    if args.recheck:
        return recheck(args)
    if shutil.which("cosmic-ray") is None:
        parser.error("Cosmic Ray is needed: pip install -e '.[verify]'")
    workdir = args.workdir.resolve()
    if workdir == ROOT or ROOT in workdir.parents:
        parser.error("--workdir must be outside the checkout: mutants are written there")
    started = time.monotonic()
    commit = make_copy(workdir)
    modules = core_modules(workdir, args.module)
    clean = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    baseline_started = time.monotonic()
    baseline = subprocess.run(
        [
            sys.executable,
            "scripts/mutation_score.py",
            "--kill",
            "--seeds",
            str(args.seeds),
            "--jobs",
            str(args.jobs),
        ],
        cwd=workdir,
        env=clean,
    )
    baseline_s = time.monotonic() - baseline_started
    if baseline.returncode != 0:
        raise SystemExit("the killer fails on the unmutated code: no score can mean anything")
    timeout = max(3 * baseline_s, baseline_s + 30)
    print(f"clean killer run: {baseline_s:.1f} s; timeout {timeout:.0f} s", file=sys.stderr)
    config = write_config(workdir, modules, args.seeds, args.jobs, timeout)
    session = workdir / "session.sqlite"
    subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=workdir, check=True)
    sample, total, annotations = sample_session(session, workdir, args.sample, args.sample_seed)
    print(
        f"{total} mutants, {annotations} equivalent by construction (not run), {sample} to run",
        file=sys.stderr,
        flush=True,
    )
    budget_s = args.budget_minutes * 60 - (time.monotonic() - started)
    finished = run_session(workdir, config, session, budget_s)
    restore_core(workdir, commit)
    rows = outcomes(session)
    equivalent = json.loads(args.equivalent.read_text()) if args.equivalent else {}
    for row in rows:
        row["explorer"] = row["status"]
    scores = {"explorer": score(rows, equivalent, "explorer")}
    if args.protocol_tests:
        protocol_deadline = time.monotonic() + args.protocol_minutes * 60
        for row in rows:
            if row["status"] != "survived":
                row["protocol"] = "killed"
            elif judged(row, equivalent):
                row["protocol"] = "equivalent"
            elif time.monotonic() < protocol_deadline:
                row["protocol"] = protocol_tests(workdir, row, timeout=300)
            else:
                row["protocol"] = "not run"
            # Equivalent survivors, and those the unit tests did not reach, survive both.
            row["both"] = "killed" if row["protocol"] == "killed" else "survived"
        scores["explorer + core tests"] = score(rows, equivalent, "both")
    command = "python scripts/mutation_score.py " + " ".join(sys.argv[1:])
    report = markdown(
        rows,
        equivalent,
        scores,
        command.strip(),
        commit,
        sample,
        total,
        finished,
        args.protocol_tests,
        annotations,
    )
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    if args.json:
        run = {"command": command.strip(), "sample": sample, "total": total,
               "annotations": annotations, "finished": finished}  # fmt: skip
        args.json.write_text(
            json.dumps({"commit": commit, "run": run, "scores": scores, "mutants": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
