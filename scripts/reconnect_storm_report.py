"""The figures and the plot of scripts/reconnect_storm.py, from its samples."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any


def rates(points: list[tuple[float, float]], span: float) -> list[tuple[float, float]]:
    """(t, rate of a cumulative count over the last ``span`` seconds), once a span is known."""
    out, j = [], 0
    for t, count in points:
        while j + 1 < len(points) and points[j + 1][0] <= t - span:
            j += 1
        if t - points[j][0] >= span * 0.999:
            out.append((t, (count - points[j][1]) / (t - points[j][0])))
    return out


def analyse(samples: list[dict[str, Any]], back: list[float], t_kill: float, t_restart: float,
            settings: Any) -> dict[str, Any]:  # fmt: skip
    """Rates relative to the kill; the figures the report gives."""
    restart = t_restart - t_kill
    completed = [(s["t"] - t_kill, s["completed"]) for s in samples]
    dials = [(s["t"] - t_kill, s["dials"]) for s in samples]
    # The restarted process counts from 0; its counter reads 0 at the restart.
    accepted = [(restart, 0.0)] + [(s["t"] - t_kill, s["metrics"]["accepted"]) for s in samples
                                   if s["t"] >= t_restart and s["metrics"]]  # fmt: skip
    throughput = rates(completed, 1.0)
    steady = [r for t, r in throughput if -settings.before + 1 <= t < 0]
    baseline = statistics.median(steady) if steady else 0.0
    after = [(t, r) for t, r in throughput if t >= restart]
    # Back to full speed: from the first moment throughput stays at 90% for 2 s.
    recovered = next((t for t, _ in after
                      if all(r >= 0.9 * baseline for u, r in after if t <= u <= t + 2)
                      and after[-1][0] >= t + 2), None)  # fmt: skip
    # Back to full speed for good: after the last dip under 90% (the last 3 s, where the
    # 1 s window runs off the end of the run, excepted).
    dips = [t for t, r in after if r < 0.9 * baseline and t <= after[-1][0] - 3] if after else []
    for_good = (max(dips) if dips else restart) - restart
    full = next((s["t"] - t_restart for s in samples if s["t"] >= t_restart and s["metrics"]
                 and s["metrics"].get("clients", 0) >= settings.clients), None)  # fmt: skip
    last = next((s["metrics"] for s in reversed(samples) if s["metrics"]), None) or {}
    back_after = sorted(t - t_restart for t in back if t >= t_restart)
    up = next((s["t"] for s in samples if s["t"] >= t_restart and s["metrics"]), t_restart)
    first_100ms = sum(1 for t in back_after if t <= back_after[0] + 0.1) if back_after else 0
    down = [r for t, r in throughput if 0 <= t < restart]

    def quantile(q: float) -> float | None:
        return round(back_after[int(q * (len(back_after) - 1))], 3) if back_after else None

    def peak(points: list[tuple[float, float]], span: float) -> int:
        return round(max((r for _, r in rates(points, span)), default=0.0))

    def rounded(points: list[tuple[float, float]]) -> list[list[float]]:
        return [[round(t, 3), round(r, 1)] for t, r in points]

    return {
        "settings": asdict(settings),
        "baseline_ops_per_s": round(baseline, 1),
        "min_ops_per_s_while_down": round(min(down), 1) if down else None,
        "down_seconds": round(restart, 3),
        "metrics_up_after_restart_seconds": round(up - t_restart, 3),
        "peak_accepts_per_s_1s": peak(accepted, 1.0),
        "peak_accepts_per_s_100ms": peak(accepted, settings.interval),
        "peak_dials_per_s_1s": peak(dials, 1.0),
        "accepted_after_restart": int(last.get("accepted", 0)),
        "refused_busy": int(last.get("busy", 0)),
        "clients_back": len(back_after),
        "clients_back_in_first_100ms": first_100ms,
        "clients_back_quantiles_seconds": {"p10": quantile(0.1), "p50": quantile(0.5),
                                           "p90": quantile(0.9), "p100": quantile(1.0)},
        "all_clients_back_seconds": None if full is None else round(full, 3),
        "recovery_seconds_after_restart": None if recovered is None
        else round(max(0.0, recovered - restart), 3),
        "recovery_for_good_seconds_after_restart": round(for_good, 3),
        "min_ops_per_s_after_restart": round(min(r for _, r in after), 1) if after else None,
        "series": {
            "restart_at": round(restart, 3),
            "ops_per_s": rounded(throughput),
            "accepts_per_s": rounded(rates(accepted, 0.5)),
            "dials_per_s": rounded(rates(dials, 0.5)),
        },
    }  # fmt: skip


# -------------------------------------------------------------------------- output


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = summary["series"]
    restart = series["restart_at"]
    figure, attempts = plt.subplots(figsize=(10, 5.8), dpi=110)
    if series["dials_per_s"]:
        attempts.plot(*zip(*series["dials_per_s"], strict=True), color="tab:orange", linewidth=1,
                      label="clients' dials/s to it (refused ones too; 0.5 s)")  # fmt: skip
    if series["accepts_per_s"]:
        attempts.plot(*zip(*series["accepts_per_s"], strict=True), color="tab:red", linewidth=1.6,
                      label="connections/s the restarted replica accepted (0.5 s)")  # fmt: skip
    attempts.set_xlabel("seconds since SIGKILL")
    attempts.set_ylabel("connection attempts per second")
    attempts.axvspan(0, restart, color="0.88", label="replica down")
    attempts.axvline(0, color="black", linestyle="--", linewidth=1)
    attempts.axvline(restart, color="black", linestyle=":", linewidth=1)
    throughput = attempts.twinx()
    throughput.plot(*zip(*series["ops_per_s"], strict=True), color="tab:blue", linewidth=1.4,
                    label="throughput (ops/s, 1 s window)")  # fmt: skip
    throughput.axhline(0.9 * summary["baseline_ops_per_s"], color="tab:blue", linestyle=":",
                       linewidth=0.8, label="90% of the median before the kill")  # fmt: skip
    throughput.set_ylabel("operations per second")
    throughput.set_ylim(bottom=0)
    attempts.set_ylim(bottom=0)
    lines = attempts.get_legend_handles_labels()
    more = throughput.get_legend_handles_labels()
    attempts.legend(lines[0] + more[0], lines[1] + more[1], loc="upper center", fontsize=8,
                    bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)  # fmt: skip
    s = summary["settings"]
    attempts.set_title(
        f"Reconnect storm: {s['clients']} clients, replica {s['replica']} SIGKILLed at 0, "
        f"restarted at {restart:.1f} s; peak {summary['peak_accepts_per_s_1s']} accepts/s (1 s), "
        f"all back {summary['all_clients_back_seconds']} s after the restart",
        fontsize=9)  # fmt: skip
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def describe(summary: dict[str, Any]) -> str:
    s, q = summary["settings"], summary["clients_back_quantiles_seconds"]
    return "\n".join([
        f"{s['clients']} clients, {s['active']} of them busy; replica {s['replica']} SIGKILLed, "
        f"restarted {summary['down_seconds']} s later (metrics answering "
        f"{summary['metrics_up_after_restart_seconds']} s after the restart)",
        f"throughput: {summary['baseline_ops_per_s']} ops/s before the kill (median), "
        f"{summary['min_ops_per_s_while_down']} at the lowest while down, "
        f"{summary['min_ops_per_s_after_restart']} after the restart; at 90% for 2 s "
        f"{summary['recovery_seconds_after_restart']} s after the restart, for good "
        f"{summary['recovery_for_good_seconds_after_restart']} s after it",
        f"restarted replica: peak {summary['peak_accepts_per_s_1s']} accepts/s over 1 s "
        f"({summary['peak_accepts_per_s_100ms']} over {s['interval']} s), "
        f"{summary['accepted_after_restart']} accepted, {summary['refused_busy']} refused busy",
        f"clients' dials to it (refused ones too): "
        f"peak {summary['peak_dials_per_s_1s']}/s over 1 s",
        f"clients back: {summary['clients_back']}, {summary['clients_back_in_first_100ms']} of "
        f"them within 100 ms of the first; p10 {q['p10']} s, p50 {q['p50']} s, p90 {q['p90']} s, "
        f"last {q['p100']} s after the restart; all connected per its metrics after "
        f"{summary['all_clients_back_seconds']} s",
    ])  # fmt: skip
