"""How cost grows with cluster size and load: ``pbft bench`` over n x clients.

Runs the benchmark for n = 4, 7, 10 (f = 1, 2, 3) and 1, 8, 64, 256 closed-loop
clients, on this machine, one cell after the other (each cell starts its own
replica processes). The costs of sign, verify and one hop are calibrated once,
at the start, so every cell's ceiling comes from the same measurement. With
``--repeat R`` each cell runs R times and the table shows medians.

Writes a Markdown table and a PNG plot (throughput, p50 and p99 latency, and
replica CPU per operation against clients, one line per n)::

    pip install -e '.[bench]'
    python scripts/bench_matrix.py [--f 1,2,3] [--clients 1,8,64,256] [--duration 10]
        [--repeat 1] [--out docs/bench-matrix] [--json FILE]

``--out docs/bench-matrix`` writes ``docs/bench-matrix.md`` and
``docs/bench-matrix.png``. Progress goes to stderr. The machine should be
otherwise idle: the figures are only as quiet as it is.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pbft.bench.calibrate import calibrate
from pbft.bench.run import BenchSettings, cores, run_bench

AUTH_TEXT = {
    "macs": "REPLYs authenticated by their channel's MAC, every other message Ed25519-signed",
    "signatures": "every message Ed25519-signed",
}


def parse_list(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(
            f"bench_matrix: --{name} {text!r}: expected integers, e.g. 1,8,64"
        ) from None
    if not values or min(values) < 1:
        raise SystemExit(f"bench_matrix: --{name} {text!r}: expected integers of at least 1")
    return values


def median_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with every figure the table shows as a median."""
    ordered = sorted(reports, key=lambda r: r["throughput_ops"])
    middle = dict(ordered[len(ordered) // 2])

    def med(path: tuple[str, ...]) -> float | None:
        values = []
        for report in reports:
            value: Any = report
            for key in path:
                value = value[key]
            if value is not None:
                values.append(value)
        return round(statistics.median(values), 2) if values else None

    middle["throughput_ops"] = med(("throughput_ops",))
    middle["latency_ms"] = {p: med(("latency_ms", p)) for p in ("p50", "p90", "p99")}
    middle["batch_mean"] = med(("batch_mean",))
    middle["efficiency"] = med(("efficiency",))
    middle["cpu_ms_per_op"] = {
        side: med(("cpu_ms_per_op", side)) for side in ("replicas", "clients")
    }
    middle["timeouts"] = sum(report["timeouts"] for report in reports)
    middle["runs"] = len(reports)
    return middle


def markdown(cells: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Benchmark matrix",
        "",
        f"`python scripts/bench_matrix.py {meta['arguments']}` at commit {meta['commit']}, "
        f"{meta['date']}, on {meta['cores']} cores ({meta['machine']}); "
        f"{meta['duration']:g} s measured per cell after a {meta['warmup']:g} s warm-up, "
        f"median of {meta['repeat']} run(s) per cell; `--auth {meta['auth']}` "
        f"({AUTH_TEXT[meta['auth']]}); replicas and clients share the machine's cores.",
        "",
        "Calibrated once for all cells: "
        + ", ".join(f"{k} {v}" for k, v in meta["calibration_us"].items())
        + ".",
        "",
        "| n | clients | ops/s | p50 ms | p99 ms | batch | ceiling ops/s | efficiency "
        "| replica CPU ms/op | client CPU ms/op | timeouts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        latency, cpu = cell["latency_ms"], cell["cpu_ms_per_op"]
        lines.append(
            f"| {cell['n']} | {cell['clients']} | {cell['throughput_ops']:,.1f} "
            f"| {latency['p50']} | {latency['p99']} | {cell['batch_mean']} "
            f"| {cell['ceiling_ops']:,.0f} | {cell['efficiency']:.0%} "
            f"| {cpu['replicas']} | {cpu['clients']} | {cell['timeouts']} |"
        )
    lines += [
        "",
        "Ceiling: what the calibrated costs allow for the design in use at the batch size "
        "the run reached (`pbft/bench/model.py`); efficiency is throughput over ceiling.",
        "",
        f"![throughput, latency and CPU per operation against clients]({meta['png']})",
        "",
    ]
    return "\n".join(lines)


def plot(cells: list[dict[str, Any]], path: Path, auth: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    for n in sorted({cell["n"] for cell in cells}):
        row = sorted((c for c in cells if c["n"] == n), key=lambda c: c["clients"])
        clients = [c["clients"] for c in row]
        label = f"n = {n}"
        axes[0].plot(clients, [c["throughput_ops"] for c in row], marker="o", label=label)
        (line,) = axes[1].plot(
            clients, [c["latency_ms"]["p50"] for c in row], marker="o", label=f"{label} p50"
        )
        axes[1].plot(
            clients, [c["latency_ms"]["p99"] for c in row], marker="x", linestyle="--",
            color=line.get_color(), label=f"{label} p99",
        )  # fmt: skip
        axes[2].plot(clients, [c["cpu_ms_per_op"]["replicas"] for c in row], marker="o",
                     label=label)  # fmt: skip
    titles = ("throughput (ops/s)", "latency (ms, log)", "replica CPU per operation (ms)")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("closed-loop clients")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    axes[1].set_yscale("log")
    figure.suptitle(f"pbft bench: cost against cluster size and load (--auth {auth})")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).parent)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--f", default="1,2,3", help="values of f (n = 3f+1), comma-separated")
    parser.add_argument("--clients", default="1,8,64,256", help="client counts, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (medians shown)")
    parser.add_argument("--out", default="docs/bench-matrix",
                        help="writes OUT.md and OUT.png")  # fmt: skip
    parser.add_argument("--auth", choices=sorted(AUTH_TEXT), default="macs",
                        help="how messages are authenticated (as pbft bench --auth)")  # fmt: skip
    parser.add_argument("--json", help="also write every run's report here")
    args = parser.parse_args(argv)
    fs, client_counts = parse_list(args.f, "f"), parse_list(args.clients, "clients")
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0:
        raise SystemExit("bench_matrix: --repeat must be >= 1, --duration > 0, --warmup >= 0")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "bench_matrix: the plot needs matplotlib: pip install -e '.[bench]'"
        ) from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def progress(line: str) -> None:
        print(f"    {line}", file=sys.stderr, flush=True)

    print("calibrating sign, verify, MAC and one message hop ...", file=sys.stderr, flush=True)
    costs = calibrate()
    total = len(fs) * len(client_counts) * args.repeat
    cells, runs, done, started = [], [], 0, time.monotonic()
    for f in fs:
        for clients in client_counts:
            reports = []
            for _ in range(args.repeat):
                done += 1
                print(f"[{done}/{total}] n = {3 * f + 1}, {clients} clients "
                      f"({time.monotonic() - started:.0f} s so far)", file=sys.stderr,
                      flush=True)  # fmt: skip
                settings = BenchSettings(f=f, clients=clients, duration=args.duration,
                                         warmup=args.warmup, auth=args.auth)  # fmt: skip
                report = run_bench(settings, progress, costs)
                reports.append(report)
                runs.append(report)
            cells.append(median_report(reports))
    meta = {
        "arguments": " ".join(argv if argv is not None else sys.argv[1:]) or "(defaults)",
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d"),
        "cores": cores(),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "duration": args.duration,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "auth": args.auth,
        "calibration_us": costs.as_us(),
        "png": out.with_suffix(".png").name,
    }
    plot(cells, out.with_suffix(".png"), args.auth)
    out.with_suffix(".md").write_text(markdown(cells, meta))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "runs": runs, "cells": cells}))
    print(out.with_suffix(".md").read_text())
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
