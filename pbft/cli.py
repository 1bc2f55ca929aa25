"""The ``pbft`` command."""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from pbft import service as kv
from pbft.simnet import make_cluster


def _demo(args: argparse.Namespace) -> int:
    cluster = make_cluster(f=args.f, clients=args.clients, seed=args.seed)
    per_client = -(-args.requests // args.clients)
    remaining = args.requests
    for client in cluster.clients:
        count = min(per_client, remaining)
        remaining -= count
        cluster.network.submit(client, [kv.put(f"key-{client}-{i}", str(i)) for i in range(count)])
    live = cluster.network.run_until_idle(max_ticks=10_000_000)
    operations = cluster.network.operations
    latencies = [op.return_tick - op.invoke_tick for op in operations if op.return_tick is not None]
    histories = cluster.honest_histories()
    seqs: dict[int, bytes] = {}
    safe = True
    for executed in histories.values():
        for seq, _view, digest in executed:
            safe &= seqs.setdefault(seq, digest) == digest
    committed = len(latencies)
    elapsed = max(cluster.network.now, 1)
    summary = {
        "committed": committed,
        "requests": args.requests,
        "throughput_ops": round(committed / (elapsed / 1000), 1),
        "latency_ms": {
            "p50": statistics.median(latencies) if latencies else None,
            "p99": sorted(latencies)[int(0.99 * (len(latencies) - 1))] if latencies else None,
        },
        "views": sorted({replica.view for replica in cluster.replicas.values()}),
        "safe": safe,
        "live": live and committed == args.requests,
        "transport": "simulated (1 tick = 1 ms)",
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>15}: {value}")
    return 0 if summary["safe"] and summary["live"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbft", description="Practical Byzantine Fault Tolerance")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a throw-away cluster and a workload")
    demo.add_argument("--f", type=int, default=1, help="faults tolerated (n = 3f+1)")
    demo.add_argument("--clients", type=int, default=4)
    demo.add_argument("--requests", type=int, default=200)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
