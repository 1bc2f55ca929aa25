"""Coverage-guided fuzzing of the decoder, the handshake and ``Replica.step`` (atheris).

    python scripts/fuzz.py --target {decoder,handshake,step,all} --seconds N [--json]

Each target runs in a subprocess (``python -m fuzz.run``) for ``--seconds``,
starting from its corpus ``fuzz/corpus/<target>/`` copied to a scratch folder.
Afterwards a libFuzzer merge (``-merge=1``) adds to the repository's corpus only
the new inputs that add coverage, so the corpus stays small. The report gives,
per target: executions and executions per second, libFuzzer's ``cov:`` (edges
and Python branches covered) when the corpus was loaded and at the end, the
corpus files added, and any crash, timeout or out-of-memory input, which
libFuzzer saves under ``fuzz/artifacts/<target>/`` (not committed): pin it as a
regression in ``fuzz/corpus/<target>/`` with a test in
``tests/unit/test_fuzz_corpus.py``, then fix the bug. Exit status 1 if a target
found one, 2 if atheris is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
ARTIFACTS = ROOT / "fuzz" / "artifacts"
TARGETS = ("decoder", "handshake", "step")
#: Longest input per target: a frame with some nesting; a handshake's two frames;
#: a few dozen events.
MAX_LEN = {"decoder": 4096, "handshake": 1024, "step": 4096}
#: Seconds one input may take before libFuzzer calls it a hang.
TIMEOUT_SECONDS = 10
CORPUS_BUDGET_BYTES = 2 * 1024 * 1024

_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+)")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.exists() else set()


def parse_libfuzzer(output: str) -> dict[str, Any]:
    """Coverage at INITED and at the end, and the final statistics, from libFuzzer's log."""
    result: dict[str, Any] = {"cov_start": None, "cov_end": None, "ft_start": None, "ft_end": None}
    for line in output.splitlines():
        status = _STATUS.match(line)
        if status:
            _, kind, cov, ft = status.groups()
            if kind == "INITED":
                result["cov_start"], result["ft_start"] = int(cov), int(ft)
            result["cov_end"], result["ft_end"] = int(cov), int(ft)
            continue
        stat = _STAT.match(line)
        if stat:
            result[stat.group(1)] = int(stat.group(2))
    return result


def _fuzz_command(target: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "fuzz.run", target, f"-timeout={TIMEOUT_SECONDS}",
            f"-max_len={MAX_LEN[target]}", *args]  # fmt: skip


def run_target(target: str, seconds: int, merge: bool) -> dict[str, Any]:
    corpus = CORPUS / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = ARTIFACTS / target
    artifacts.mkdir(parents=True, exist_ok=True)
    before_artifacts = _files(artifacts)
    before = _files(corpus)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as scratch:
        work = Path(scratch) / "corpus"
        shutil.copytree(corpus, work)
        started = time.monotonic()
        run = subprocess.run(
            _fuzz_command(target, f"-max_total_time={seconds}", "-print_final_stats=1",
                          f"-artifact_prefix={artifacts}/", str(work)),
            cwd=ROOT, capture_output=True, text=True, errors="replace",
        )  # fmt: skip
        elapsed = time.monotonic() - started
        result = parse_libfuzzer(run.stderr + run.stdout)
        new_found = len(_files(work) - before)
        if merge:  # a crashing input is an artifact, not in ``work``: the rest is sound
            merged = subprocess.run(
                _fuzz_command(target, "-merge=1", str(corpus), str(work)),
                cwd=ROOT, capture_output=True, text=True, errors="replace",
            )  # fmt: skip
            if merged.returncode != 0:
                result["merge_error"] = merged.stderr.strip().splitlines()[-1:]
    found = sorted(_files(artifacts) - before_artifacts)
    executions = result.get("number_of_executed_units", 0)
    return {
        "target": target,
        "seconds": round(elapsed, 1),
        "executions": executions,
        "exec_per_sec": result.get("average_exec_per_sec", round(executions / elapsed)),
        "cov_start": result["cov_start"],
        "cov_end": result["cov_end"],
        "ft_start": result["ft_start"],
        "ft_end": result["ft_end"],
        "inputs_found": new_found,
        "corpus_added": len(_files(corpus) - before),
        "corpus_files": len(_files(corpus)),
        "corpus_bytes": sum(p.stat().st_size for p in corpus.iterdir()),
        "artifacts": [str(artifacts / name) for name in found],
        "exit_code": run.returncode,
        "log_tail": [] if run.returncode == 0 else (run.stderr.splitlines()[-30:]),
        **({"merge_error": result["merge_error"]} if "merge_error" in result else {}),
    }


def _print(report: dict[str, Any]) -> None:
    print(
        f"{report['target']:>9}: {report['executions']} runs in {report['seconds']} s, "
        f"{report['exec_per_sec']} exec/s; cov {report['cov_start']} -> {report['cov_end']} "
        f"(ft {report['ft_start']} -> {report['ft_end']}); {report['inputs_found']} inputs "
        f"found, {report['corpus_added']} merged into the corpus "
        f"({report['corpus_files']} files, {report['corpus_bytes']} bytes)"
    )
    for artifact in report["artifacts"]:
        print(f"           FOUND: {artifact}")
    if report["exit_code"] not in (0,) and not report["artifacts"]:
        print("\n".join(report["log_tail"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target", choices=(*TARGETS, "all"), default="all",
        help="what to fuzz (default: all, one after the other)",
    )  # fmt: skip
    parser.add_argument(
        "--seconds", type=int, default=60, help="fuzzing time per target (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-merge", action="store_true", help="leave fuzz/corpus as it is")
    args = parser.parse_args(argv)
    if args.seconds < 1:
        parser.error(f"--seconds must be at least 1, not {args.seconds}")
    if importlib.util.find_spec("atheris") is None:
        print("error: atheris is not installed: pip install -e '.[fuzz]' (Linux x86_64 only)",
              file=sys.stderr)  # fmt: skip
        return 2
    targets = TARGETS if args.target == "all" else (args.target,)
    reports = []
    for target in targets:
        print(f"fuzzing {target} for {args.seconds} s...", file=sys.stderr, flush=True)
        report = run_target(target, args.seconds, merge=not args.no_merge)
        reports.append(report)
        if not args.json:
            _print(report)
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    if args.json:
        print(json.dumps({"targets": reports, "corpus_bytes": total}, indent=2))
    elif total > CORPUS_BUDGET_BYTES:
        print(f"warning: fuzz/corpus holds {total} bytes, over its {CORPUS_BUDGET_BYTES} budget")
    return 1 if any(r["artifacts"] or r["exit_code"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
