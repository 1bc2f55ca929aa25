"""The ``pbft bench`` command line: options, progress on stderr, report on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pbft.bench.model import AUTH_MODES
from pbft.bench.run import BenchSettings, print_report, run_bench

DEFAULTS = BenchSettings()


def add_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="throughput and latency of a local cluster, against this machine's ceiling",
        description=(
            "Start 3f+1 replica processes on loopback, drive them with closed-loop clients "
            "(each signs its requests and waits for f+1 matching replies), and report "
            "throughput, latency, CPU per operation and batch size. Before the run it "
            "measures sign, verify, MAC and one message hop here, and reports the "
            "throughput as a fraction of the ceiling those costs allow."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("--f", type=int, default=DEFAULTS.f, help="faults tolerated; n = 3f+1")
    bench.add_argument("--clients", type=int, default=DEFAULTS.clients,
                       help="closed-loop clients")  # fmt: skip
    bench.add_argument("--duration", type=float, default=DEFAULTS.duration,
                       help="seconds measured, after the warm-up")  # fmt: skip
    bench.add_argument("--warmup", type=float, default=DEFAULTS.warmup,
                       help="seconds run before measuring")  # fmt: skip
    bench.add_argument("--batch", type=int, default=DEFAULTS.batch,
                       help="most requests in one PRE-PREPARE (batch_size)")  # fmt: skip
    bench.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default=DEFAULTS.auth,
        help="macs: replies authenticated by their channel's MAC; signatures: every message signed",
    )
    bench.add_argument("--timeout", type=float, default=DEFAULTS.timeout,
                       help="seconds a request may take before it counts as a timeout")  # fmt: skip
    bench.add_argument(
        "--protocol", action="append", default=[], metavar="KEY=VALUE",
        help="a further [protocol] setting of the cluster, e.g. partial_batches_in_flight=4 "
        "(repeatable)",
    )  # fmt: skip
    bench.add_argument("--reads", type=float, default=DEFAULTS.reads,
                       help="share of operations that are reads (get); the rest are puts; with "
                       "--protocol fast_reads=1 reads skip the ordering")  # fmt: skip
    bench.add_argument("--value-bytes", type=int, default=DEFAULTS.value_bytes,
                       help="bytes of each value written, so of each read's result (0: a "
                       "few); e.g. with --protocol digest_replies=1")  # fmt: skip
    bench.add_argument("--json", action="store_true", help="print the report as one JSON line")


def parse_protocol(items: list[str]) -> dict[str, int]:
    """``KEY=VALUE`` pairs with integer values; ValueError names the bad one."""
    table: dict[str, int] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"--protocol {item!r}: expected KEY=VALUE")
        try:
            table[key.strip()] = int(value)
        except ValueError:
            raise ValueError(f"--protocol {item!r}: the value must be an integer") from None
    return table


def run(args: argparse.Namespace) -> int:
    settings = BenchSettings(
        f=args.f, clients=args.clients, duration=args.duration, warmup=args.warmup,
        batch=args.batch, auth=args.auth, timeout=args.timeout,
        protocol=parse_protocol(args.protocol), reads=args.reads, value_bytes=args.value_bytes,
    )  # fmt: skip
    settings.check()  # ValueError: one line, exit 2 (pbft.cli.main)
    tty = sys.stderr.isatty()

    def progress(line: str) -> None:
        if tty:
            print(f"\r\x1b[2K{line}", end="" if "/" in line and " s " in line else "\n",
                  file=sys.stderr, flush=True)  # fmt: skip
        else:
            print(line, file=sys.stderr, flush=True)

    report = run_bench(settings, progress)
    if tty:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0 if report["timeouts"] == 0 and report["operations"] > 0 else 1
