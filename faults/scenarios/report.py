"""The report of a scenario run: what each replica executed, what each client saw, verdicts.

A report is a plain JSON-ready dict (``pbft scenario run --json`` prints it):

* ``replicas``: per replica ``id``, ``honest``, ``behaviours`` (traitors),
  final ``view``, ``last_executed``, ``executed`` (the ordered list of
  ``{seq, view, digest}`` from its journal) and ``state_digest``;
* ``clients``: every operation ``{client, op, key, value, invoke_ms,
  return_ms, result, byzantine}`` on one millisecond clock for the whole run
  (``return_ms`` is null when the operation never returned; a ``cas`` has
  ``value = [expected, new]``);
* verdicts: ``safe`` (the honest replicas' executed histories agree entry by
  entry, :func:`pbft.runtime.demo.agreement`), ``live`` (every honest client's
  operation returned), ``view_change`` (an honest replica ended in a view
  above 0), ``evidence`` (equivocation the honest replicas proved,
  :mod:`pbft.evidence`);
* views, the same on both drivers: ``views_seen`` is every view an honest
  replica was in during the run (0, each view it entered, and its final one;
  the simulator records every NEW-VIEW entered, a real run samples its
  replicas every 20 ms), ``final_views`` the views the honest replicas ended in;
* ``mode``: ``real`` (Trio replicas over loopback TCP,
  :mod:`faults.scenarios.runner`) or ``simulated``
  (:mod:`faults.scenarios.simulated`), named in the report for people too;
* ``expectations``: ``{name: {expected, actual, met}}`` and ``passed``.

:func:`build_report` computes the verdicts from the raw material the runner
gathers; :func:`format_report` renders a report for people.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pbft.runtime.demo import agreement, percentile

if TYPE_CHECKING:
    from faults.scenarios.document import Scenario

#: A report: a JSON-ready dict (see the module docstring).
Report = dict[str, Any]


def build_report(
    scenario: Scenario,
    seed: int,
    replicas: Sequence[Mapping[str, Any]],
    operations: Sequence[Mapping[str, Any]],
    views_seen: Iterable[int],
    evidence: Sequence[Mapping[str, Any]],
    elapsed_s: float,
    mode: str = "real",
) -> Report:
    """Verdicts and expectations from what the replicas executed and the clients saw."""
    histories = {
        replica["id"]: [
            (entry["seq"], entry["view"], bytes.fromhex(entry["digest"]))
            for entry in replica["executed"]
        ]
        for replica in replicas
        if replica["honest"]
    }
    safe, conflict = agreement(histories)
    final_views = sorted({replica["view"] for replica in replicas if replica["honest"]})
    honest_operations = [op for op in operations if not op["byzantine"]]
    live = all(op["return_ms"] is not None for op in honest_operations)
    actual = {
        "safe": safe,
        "live": live,
        "view_change": any(r["view"] > 0 for r in replicas if r["honest"]),
        "evidence": bool(evidence),
    }
    expectations = {
        name: {"expected": expected, "actual": actual[name], "met": expected == actual[name]}
        for name, expected in scenario.expect.items()
    }
    latencies = [
        op["return_ms"] - op["invoke_ms"] for op in honest_operations if op["return_ms"] is not None
    ]
    return {
        "name": scenario.name,
        "source": scenario.source,
        "seed": seed,
        "f": scenario.f,
        "n": scenario.n,
        "traitors": scenario.traitor_ids,
        "passed": all(item["met"] for item in expectations.values()),
        "expectations": expectations,
        **actual,
        "conflict": conflict or None,
        "mode": mode,
        "views_seen": sorted(set(views_seen) | set(final_views)),
        "final_views": final_views,
        "evidence": list(evidence),
        "operations": {
            "total": len(honest_operations),
            "returned": len(latencies),
            "byzantine": len(operations) - len(honest_operations),
            "latency_ms": {
                "p50": _round(statistics.median(latencies) if latencies else None),
                "p99": _round(percentile(latencies, 0.99)),
            },
        },
        "elapsed_s": round(elapsed_s, 3),
        "replicas": list(replicas),
        "clients": list(operations),
        "replay": f"pbft scenario run {scenario.source} --seed {seed}",
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# ---------------------------------------------------------------------- for people


def format_report(report: Report) -> str:
    """A short table and one PASS/FAIL line per expectation."""
    operations = report["operations"]
    latency = operations["latency_ms"]
    traitors = [r for r in report["replicas"] if not r["honest"]]
    rows = [
        ("scenario", f"{report['name']} (seed {report['seed']}, {report['elapsed_s']} s)"),
        ("cluster", f"n = {report['n']} replicas, f = {report['f']}, {_driver(report)}"),
        (
            "traitors",
            "; ".join(f"{r['id']}: {', '.join(r['behaviours'])}" for r in traitors) or "none",
        ),
        (
            "operations",
            f"{operations['returned']} / {operations['total']} returned"
            + (f" (+{operations['byzantine']} Byzantine)" if operations["byzantine"] else "")
            + f", latency p50 {latency['p50']} ms, p99 {latency['p99']} ms",
        ),
        (
            "views",
            f"seen {', '.join(map(str, report['views_seen']))}; "
            f"final {', '.join(map(str, report['final_views']))} (honest replicas)",
        ),
        (
            "executed",
            ", ".join(
                f"{r['id']}{'' if r['honest'] else '*'}: up to seq {r['last_executed']} "
                f"(view {r['view']})"
                for r in report["replicas"]
            ),
        ),
        ("evidence", _evidence_line(report["evidence"])),
        ("safety", "SAFE" if report["safe"] else f"UNSAFE: {report['conflict']}"),
        ("liveness", "LIVE" if report["live"] else "NOT LIVE (an operation never returned)"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:>{width}}  {value}" for name, value in rows]
    lines.append("")
    for name, item in report["expectations"].items():
        verdict = "PASS" if item["met"] else "FAIL"
        lines.append(
            f"{verdict}  {name}: expected {_bool(item['expected'])}, got {_bool(item['actual'])}"
        )
    lines.append("PASSED" if report["passed"] else f"FAILED (replay: {report['replay']})")
    return "\n".join(lines)


def _driver(report: Report) -> str:
    if report.get("mode") == "simulated":
        return f"deterministic simulator ({report['simulated_ms']} ms of simulated time)"
    return "real Trio replicas over loopback TCP"


def _evidence_line(evidence: Sequence[Mapping[str, Any]]) -> str:
    if not evidence:
        return "none"
    slots = sorted({(e["sender"], e["phase"]) for e in evidence})
    shown = ", ".join(f"{phase} from replica {sender}" for sender, phase in slots[:4])
    more = f" and {len(slots) - 4} more" if len(slots) > 4 else ""
    return f"{len(evidence)} report(s): {shown}{more}"


def _bool(value: bool) -> str:
    return "true" if value else "false"
