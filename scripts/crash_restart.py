"""Crash-restart under load: SIGKILL replicas while clients work; are writes kept?

Starts a cluster of 3f+1 real replica processes on loopback (a throw-away
folder), runs a closed-loop workload of C clients doing put, get and cas on a
few keys, and records every operation (invocation and return times, result) as
a history. Meanwhile a seeded fault loop repeatedly SIGKILLs up to f replicas
at random, holds them down a random time and restarts them; at 65% of the run
it SIGKILLs every replica at once and restarts them all. Afterwards:

    * every key is read once more: the last acknowledged write, or a later one,
      must be visible (:mod:`faults.verification.durability`);
    * the history, those reads included, must be linearizable
      (:mod:`faults.verification.linearizability`); an operation that timed out
      at its client is *unknown* (it may or may not have taken effect) and is
      checked as pending, never as a failure;
    * the replicas' executed histories must agree seq by seq (as ``pbft demo``);
    * every replica must be running at the end, and operations must have been
      acknowledged both before and after the all-at-once restart.

    python scripts/crash_restart.py [--f 1] [--clients 4] [--duration 60] [--seed 1] [--json]
        [--keys 6] [--op-timeout 6] [--aggressive] [--history FILE.jsonl] [--keep DIR] [--quiet]

``--aggressive`` kills again without waiting for the replicas restarted last to
recover, so that more than f replicas may be behind at once: safety must hold
all the same (a crashed replica with its journal is a slow one, not a faulty
one); liveness waits for them.

A progress line goes to stderr every few seconds; the verdict goes to stdout
(one JSON object with ``--json``). The exit status is 1 on any loss or
violation, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faults.scenarios.crash_restart import Settings, run_crash_restart
from faults.scenarios.crash_restart_report import describe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--f", type=int, default=1, help="faults tolerated; n = 3f+1 (default: %(default)s)"
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="closed-loop clients (default: %(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of workload (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seeds the faults and the workload's draws"
    )
    parser.add_argument(
        "--keys", type=int, default=6, help="keys the workload shares (default: %(default)s)"
    )
    parser.add_argument(
        "--op-timeout", type=float, default=6.0,
        help="seconds before a client gives an operation up as unknown (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--aggressive",
        action="store_true",
        help="kill again without waiting for the last restarted replicas to recover",
    )
    parser.add_argument(
        "--keep", type=Path, help="run in this folder and keep it (logs, databases)"
    )
    parser.add_argument("--history", type=Path, help="write the client history here (JSONL)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    for name, value, least in (
        ("--f", args.f, 1), ("--clients", args.clients, 1), ("--keys", args.keys, 1),
        ("--duration", args.duration, 5), ("--op-timeout", args.op_timeout, 0.1),
    ):  # fmt: skip
        if value < least:
            parser.error(f"{name} must be at least {least}, not {value}")
    settings = Settings(
        f=args.f, clients=args.clients, duration=args.duration, seed=args.seed, keys=args.keys,
        op_timeout=args.op_timeout, history_path=args.history, quiet=args.quiet,
        aggressive=args.aggressive, keep=args.keep,
    )  # fmt: skip
    summary = run_crash_restart(settings)
    print(json.dumps(summary) if args.json else describe(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
