"""A long ``pbft bench`` run: does resident memory stay flat, do timeouts stay at zero?

Runs one benchmark for ``--duration`` seconds (10 minutes by default) and writes
a Markdown summary and a PNG plot of the largest replica's resident memory and
of throughput over the run::

    pip install -e '.[bench]'
    python scripts/bench_soak.py [--clients 64] [--duration 600] [--out docs/bench-soak]
    python scripts/bench_soak.py --report saved.json --out docs/bench-soak   # no new run

``--report`` takes a ``pbft bench --json`` line saved earlier instead of running.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pbft.bench.run import BenchSettings, run_bench


def summary(report: dict[str, Any], picture: str) -> str:
    timeline = report["rss_mb_timeline"]
    sizes = [size for _, size in timeline]
    latency = report["latency_ms"]
    settle = next((size for at, size in timeline if at >= 60), sizes[0])
    return "\n".join(
        [
            f"# Soak run: {report['duration_s']:.0f} s, n = {report['n']}, "
            f"{report['clients']} clients, auth {report['auth']}",
            "",
            "| figure | value |",
            "|---|---|",
            f"| operations | {report['operations']:,} |",
            f"| throughput | {report['throughput_ops']:,.1f} ops/s |",
            f"| latency p50 / p90 / p99 | {latency['p50']} / {latency['p90']} / "
            f"{latency['p99']} ms |",
            f"| timeouts | {report['timeouts']} |",
            f"| largest replica's resident memory | {sizes[0]} MB at the start, {settle} MB "
            f"after 60 s, {sizes[-1]} MB at the end, at most {max(sizes)} MB |",
            f"| growth after the first minute | {sizes[-1] - settle:+.1f} MB |",
            "",
            f"![resident memory over the run]({picture})",
            "",
        ]
    )


OUT_NAME = "bench-soak"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["rss_mb_timeline"]
    figure, axis = plt.subplots(figsize=(7, 3.2))
    axis.plot([at for at, _ in timeline], [size for _, size in timeline], marker=".")
    axis.set_xlabel("seconds into the measured window")
    axis.set_ylabel("resident MB (largest replica)")
    axis.set_ylim(0, max(size for _, size in timeline) * 1.25)
    axis.set_title(
        f"pbft bench, n = {report['n']}, {report['clients']} clients: "
        f"{report['throughput_ops']:,.0f} ops/s, {report['timeouts']} timeouts"
    )
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--out", default=f"docs/{OUT_NAME}",
                        help="writes OUT.md and OUT.png")  # fmt: skip
    parser.add_argument("--report", help="a saved `pbft bench --json` line instead of a run")
    args = parser.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "bench_soak: the plot needs matplotlib: pip install -e '.[bench]'"
        ) from None
    if args.report:
        try:
            lines = Path(args.report).read_text().strip().splitlines()
            report = json.loads(lines[-1])
        except (OSError, ValueError, IndexError) as error:
            raise SystemExit(
                f"bench_soak: {args.report}: not a pbft bench --json report ({error})"
            ) from None
    else:
        settings = BenchSettings(clients=args.clients, duration=args.duration, warmup=5.0)
        try:
            settings.check()
        except ValueError as error:
            raise SystemExit(f"bench_soak: {error}") from None
        report = run_bench(settings, lambda line: print(line, file=sys.stderr, flush=True))
    if not report.get("rss_mb_timeline"):
        raise SystemExit("bench_soak: the report has no rss_mb_timeline (an older pbft bench?)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(report, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(summary(report, out.with_suffix(".png").name))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
