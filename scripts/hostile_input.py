"""Hostile input at one replica's socket while a workload needs that replica.

Starts a 4-replica cluster on loopback (or uses ``--dir``, a ``pbft init`` folder),
stops one backup so that every quorum needs the attacked replica, and sends that
replica random bytes, broken length prefixes, slow loris frames, handshakes stopped
at each step, keys outside the configuration, malformed, badly signed and replayed
messages after a valid handshake (with a configured client's key), and a flood of
``--connections`` connections held open. Reports hostile inputs per second, the
connections held at peak, the replica's resident memory before, at peak and after,
operations committed during the attack against a baseline, and the log lines the
replica wrote (rate-limited: far fewer than the inputs)::

    python scripts/hostile_input.py [--duration 30] [--replica 1] [--json]

Progress goes to stderr, one line a second. The exit status is 1 if the replica
died or no operation committed during the attack.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faults.scenarios.hostile import HostileSettings, run_hostile
from faults.traitors.socket_attacks import KINDS
from pbft.runtime.files import load_cluster


def print_report(report: dict[str, Any]) -> None:
    rss = report["rss_mb"]
    print(f"attacked replica {report['replica']} (replica {report['stopped_replica']} stopped, "
          f"so every quorum needs it): {'alive' if report['alive'] else 'DEAD'}")  # fmt: skip
    print(f"hostile inputs: {report['hostile_inputs']:,} in {report['duration_s']} s "
          f"({report['hostile_inputs_per_s']:,.0f}/s); connections held at peak: "
          f"{report['connections_peak']:,}")  # fmt: skip
    for kind, count in report["by_kind"].items():
        print(f"  {kind:20} {count:>9,}")
    print(f"resident memory: {rss['before']} MB before, {rss['peak']} MB at peak, "
          f"{rss['after']} MB after")  # fmt: skip
    print(f"CPU during the attack (% of one core): {report['cpu_percent']}")
    print(
        f"operations: {report['baseline_ops_per_s']} ops/s baseline, "
        f"{report['attack_ops_per_s']} ops/s under attack ({report['attack_ops']} ops)"
    )
    print(f"log lines during the attack: {report['log_lines']} ({report['log_lines_by_event']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="a `pbft init` folder (default: a temporary one)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of attack")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of baseline")
    parser.add_argument("--replica", type=int, default=1, help="the attacked replica")
    parser.add_argument("--connections", type=int, default=2000, help="connections held open")
    parser.add_argument("--clients", type=int, default=2, help="closed-loop workload clients")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"attacks to run, of: {', '.join(KINDS)}"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    settings = HostileSettings(
        duration_s=args.duration, baseline_s=args.baseline, replica=args.replica,
        connections=args.connections, clients=args.clients, directory=args.dir,
        kinds=tuple(kind for kind in args.kinds.split(",") if kind),
    )  # fmt: skip
    unknown = set(settings.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    if not settings.kinds:
        parser.error("--kinds names no attack")
    for name, value, least in (
        ("--duration", args.duration, 1), ("--baseline", args.baseline, 0),
        ("--connections", args.connections, 0), ("--clients", args.clients, 1),
    ):  # fmt: skip
        if value < least:
            parser.error(f"{name} must be at least {least}, not {value}")
    n = 4
    if args.dir is not None:
        try:
            n = load_cluster(args.dir).config.n
        except (OSError, ValueError) as error:
            parser.error(f"--dir {args.dir}: {error}")
    if not 0 <= args.replica < n:
        parser.error(f"--replica {args.replica}: the cluster's replicas are 0 to {n - 1}")
    report = run_hostile(settings, lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0 if report["alive"] and report["attack_ops"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
