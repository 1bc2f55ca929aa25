"""``pbft demo``: a throw-away cluster of real processes, a workload, and the verdict."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from pbft.config import ConfigError


def run(args: argparse.Namespace) -> int:
    from pbft.runtime.demo import run_demo

    for name in ("f", "clients", "requests"):
        if getattr(args, name) < (0 if name == "f" else 1):
            raise ConfigError(f"--{name} must be at least {0 if name == 'f' else 1}")
    from pbft.cli.client import check_seconds

    check_seconds("--timeout", args.timeout)
    # The command line is the composition root: it alone wires traitors (faults) around
    # honest replicas.
    from faults.traitors.spec import replica_arguments

    traitors = replica_arguments(args.traitor, 3 * args.f + 1)
    if len(traitors) > args.f:
        print(
            f"pbft demo: warning: {len(traitors)} traitors exceed f = {args.f}; "
            "safety and liveness are no longer guaranteed",
            file=sys.stderr,
        )
    if args.trace is not None and not args.trace.parent.is_dir():
        raise ConfigError(f"--trace {args.trace}: folder {args.trace.parent} does not exist")
    if not args.json:
        # Starting the processes takes seconds: say so at once rather than show nothing.
        print(
            f"starting {3 * args.f + 1} replica processes on 127.0.0.1 (f = {args.f}), then "
            f"{args.requests} requests from {args.clients} clients...",
            file=sys.stderr,
            flush=True,
        )
    # The linearizability picture is faults' code; the demo takes it as a function.
    from faults.verification.linearizability_picture import picture_from_trace

    summary = run_demo(
        args.f, args.clients, args.requests, _progress(args.json), args.timeout, traitors,
        trace=args.trace, appendix=[picture_from_trace],
    )  # fmt: skip
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    for line in summary.get("trace", []):
        print(f"pbft demo: {line}", file=sys.stderr)
    return 0 if summary["safe"] and summary["live"] else 1


def _progress(quiet: bool) -> Callable[[int], Callable[[int], None]]:
    def factory(total: int) -> Callable[[int], None]:
        if quiet or not sys.stderr.isatty():
            return lambda advance: None
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task("requests", total=total)
        done = [0]

        def advance(count: int) -> None:
            done[0] += count
            progress.update(task, advance=count)
            if done[0] >= total:
                progress.stop()

        return advance

    return factory


def _print_summary(summary: dict[str, Any]) -> None:
    from pbft.runtime.demo import describe_executed

    verdict = "SAFE" if summary["safe"] else "UNSAFE: " + summary.get("conflict", "")
    rows = [
        (
            "cluster",
            f"n = {summary['n']} replicas (f = {summary['f']}), "
            f"{summary['clients']} clients, real processes over TCP",
        ),
        ("committed", f"{summary['committed']} / {summary['requests']} requests"),
        ("throughput", f"{summary['throughput_ops']} ops/s"),
        (
            "latency",
            f"p50 {summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms"
            if summary["committed"]
            else "none (no request completed)",
        ),
        ("final views", ", ".join(map(str, summary["views"]))),
        ("traitors", ", ".join(f"replica {r}" for r in summary["traitors"]) or "none"),
        ("executed", describe_executed(summary)),
        (
            "safety",
            verdict + " (every honest replica's executed history agrees)"
            if summary["safe"]
            else verdict,
        ),
        ("liveness", "LIVE (every request completed)" if summary["live"] else "NOT LIVE"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:>{width}}  {value}")
