"""Crash-restart under load, the verdict: lost writes, linearizability, agreement."""

from __future__ import annotations

import json
import time
from typing import Any

import attrs

from faults.scenarios.crash_restart import Run, Settings
from faults.verification.durability import last_acknowledged, lost_writes, unread_keys
from faults.verification.linearizability import check_history
from pbft.runtime.demo import agreement


def verdict(
    settings: Settings,
    run: Run,
    final: dict[str, Any],
    histories: dict[int, list[tuple[int, int, bytes]]],
    converged: bool,
) -> dict[str, Any]:
    if settings.history_path is not None:
        settings.history_path.write_text(
            "\n".join(json.dumps(attrs.asdict(op)) for op in run.history) + "\n"
        )
    workload = [op for op in run.history if op.client < settings.clients]
    split = run.all_at_once_ms if run.all_at_once_ms is not None else float("inf")
    acknowledged = [op for op in workload if op.returned]
    lost = lost_writes(run.history, final)
    unread = unread_keys(run.history, final)
    started = time.monotonic()
    linearizable = check_history(run.history)
    check_seconds = time.monotonic() - started
    safe, conflict = agreement(histories)
    before = sum(op.return_ms < split for op in acknowledged)  # type: ignore[operator]
    after = sum(op.invoke_ms > split for op in acknowledged)
    summary: dict[str, Any] = {
        "f": settings.f,
        "n": 3 * settings.f + 1,
        "clients": settings.clients,
        "duration_s": settings.duration,
        "seed": settings.seed,
        "faults": {
            "kills": run.kills,
            "restarts": run.restarts,
            "all_at_once": run.all_at_once,
            "all_at_once_at_s": None if run.all_at_once_ms is None else run.all_at_once_ms / 1000,
        },
        "operations": len(workload),
        "acknowledged": len(acknowledged),
        "acknowledged_before_all_at_once": before,
        "acknowledged_after_all_at_once": after,
        "unknown": len(workload) - len(acknowledged),
        "acknowledged_writes": sum(op.op != "get" and op.result is True for op in acknowledged),
        "lost": len(lost),
        "lost_writes": [write.describe() for write in lost[:10]],
        "unread_keys": unread,
        "final": final,
        "last_acknowledged": {k: op.return_ms for k, op in last_acknowledged(run.history).items()},
        "linearizable": linearizable.linearizable,
        "linearizability_check_s": round(check_seconds, 2),
        "agreement": safe,
        "executed_batches": {str(r): len(h) for r, h in sorted(histories.items())},
        "converged": converged,
        "end_states": run.end_states,
        "unexpected_exits": run.unexpected_exits,
    }
    if not linearizable.linearizable:
        summary["violation"] = linearizable.describe().splitlines()[:40]
    if conflict:
        summary["conflict"] = conflict
    problems = []
    if lost or unread:
        problems.append(f"{len(lost)} acknowledged writes lost, keys unread: {unread}")
    if not linearizable.linearizable:
        problems.append(f"not linearizable (key {linearizable.key})")
    if not safe:
        problems.append(f"replicas disagree: {conflict}")
    if run.unexpected_exits:
        problems.append(f"replicas exited on their own: {run.unexpected_exits}")
    if run.all_at_once == 0:
        problems.append("the all-at-once crash did not happen")
    if before == 0 or after == 0:
        problems.append(f"acknowledged before/after the all-at-once restart: {before}/{after}")
    summary["problems"] = problems
    summary["ok"] = not problems
    return summary


def describe(summary: dict[str, Any]) -> str:
    faults = summary["faults"]
    lines = [
        f"crash-restart: n = {summary['n']}, f = {summary['f']}, {summary['clients']} clients, "
        f"{summary['duration_s']:g} s, seed {summary['seed']}",
        f"faults: {faults['kills']} kills, {faults['restarts']} restarts, all at once "
        f"{faults['all_at_once']}x (at {faults['all_at_once_at_s']} s)",
        f"operations: {summary['operations']}, acknowledged {summary['acknowledged']} "
        f"({summary['acknowledged_before_all_at_once']} before the all-at-once restart, "
        f"{summary['acknowledged_after_all_at_once']} after), unknown {summary['unknown']}",
        f"acknowledged writes lost: {summary['lost']}",
        *(f"  {line}" for line in summary["lost_writes"]),
        f"linearizable: {'yes' if summary['linearizable'] else 'NO'} "
        f"(checked in {summary['linearizability_check_s']} s)",
        *(f"  {line}" for line in summary.get("violation", [])),
        f"agreement: {'yes' if summary['agreement'] else 'NO: ' + summary['conflict']}; "
        f"replicas caught up at the end: {'yes' if summary['converged'] else 'no'} "
        f"({summary['end_states']})",
        "verdict: " + ("OK" if summary["ok"] else "FAILED: " + "; ".join(summary["problems"])),
    ]
    return "\n".join(lines)
