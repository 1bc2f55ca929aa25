"""Checkers that run after every simulated run, and on any run report.

Each checker takes the report's raw material (replicas' executions, stable
checkpoints, clients' histories) and returns the violations it finds, each a
:class:`Violation` naming the checker and the first conflicting entries:

* :func:`check_agreement`: no two honest replicas executed different batches
  at one sequence number, and their state digests agree at every stable
  checkpoint (safety, Castro & Liskov §4.5.1);
* :func:`check_validity`: only requests that clients issued are executed, and
  each (client, timestamp) at most once by each replica;
* :func:`check_linearizability`: the honest clients' key-value history is
  linearizable (:mod:`faults.verification.linearizability`);
* :func:`check_liveness`: after the stabilization time, every operation of a
  correct client completed within the bound;
* :func:`check_quiet` (runs without any fault only): no view change, and no
  operation waited for a retransmission.

A field missing from a report (a real cluster's report has no request
timestamps, say) makes the checker that needs it skip, never fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from faults.verification.linearizability import check_history


@attrs.frozen
class Violation:
    checker: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"checker": self.checker, "detail": self.detail}


Replicas = Sequence[Mapping[str, Any]]
Operations = Sequence[Mapping[str, Any]]


def check_agreement(replicas: Replicas) -> list[Violation]:
    executed: dict[int, tuple[int, str]] = {}
    for replica in replicas:
        if not replica["honest"]:
            continue
        for entry in replica["executed"]:
            known = executed.setdefault(entry["seq"], (replica["id"], entry["digest"]))
            if known[1] != entry["digest"]:
                return [
                    Violation(
                        "agreement",
                        f"seq {entry['seq']}: replica {known[0]} executed {known[1][:16]}, "
                        f"replica {replica['id']} executed {entry['digest'][:16]}",
                    )
                ]
    checkpoints: dict[int, tuple[int, str]] = {}
    for replica in replicas:
        if not replica["honest"]:
            continue
        for checkpoint in replica.get("checkpoints", ()):
            known = checkpoints.setdefault(checkpoint["seq"], (replica["id"], checkpoint["digest"]))
            if known[1] != checkpoint["digest"]:
                return [
                    Violation(
                        "agreement",
                        f"stable checkpoint {checkpoint['seq']}: replica {known[0]} has state "
                        f"{known[1][:16]}, replica {replica['id']} has {checkpoint['digest'][:16]}",
                    )
                ]
    return []


def check_validity(replicas: Replicas, operations: Operations) -> list[Violation]:
    issued = {
        (op["client"], op["timestamp"]) for op in operations if op.get("timestamp") is not None
    }
    byzantine = {op["client"] for op in operations if op.get("byzantine")}
    if not issued and operations:
        return []  # no timestamps in this report: nothing to check against
    for replica in replicas:
        if not replica["honest"]:
            continue
        seen: set[tuple[int, int]] = set()
        for entry in replica["executed"]:
            for client, timestamp in entry.get("requests", ()):
                request = (client, timestamp)
                if request in seen:
                    return [
                        Violation(
                            "validity",
                            f"replica {replica['id']} executed request {request} twice "
                            f"(again at seq {entry['seq']})",
                        )
                    ]
                seen.add(request)
                if client not in byzantine and request not in issued:
                    return [
                        Violation(
                            "validity",
                            f"replica {replica['id']} executed request {request} at seq "
                            f"{entry['seq']}, which no client issued",
                        )
                    ]
    return []


def check_linearizability(operations: Operations) -> list[Violation]:
    honest = [op for op in operations if not op.get("byzantine") and op["op"] != "invalid"]
    verdict = check_history(honest)
    if verdict.linearizable:
        return []
    return [Violation("linearizability", verdict.describe())]


def check_liveness(operations: Operations, stabilization_ms: int, bound_ms: int) -> list[Violation]:
    """Every correct client's operation returned by max(invoke, stabilization) + bound."""
    for op in operations:
        if op.get("byzantine"):
            continue
        deadline = max(op["invoke_ms"], stabilization_ms) + bound_ms
        if op["return_ms"] is None or op["return_ms"] > deadline:
            returned = (
                "never returned" if op["return_ms"] is None else f"returned at {op['return_ms']}"
            )
            return [
                Violation(
                    "liveness",
                    f"client {op['client']} {op['op']} {op['key']!r} invoked at "
                    f"{op['invoke_ms']} ms {returned} (deadline {deadline} ms)",
                )
            ]
    return []


def check_quiet(
    final_views: Sequence[int], operations: Operations, retransmit_ms: int
) -> list[Violation]:
    """A run without any fault: no honest replica left view 0 and every operation
    returned before its client's first retransmission. Protocols that stay safe and
    live only by way of view changes and retransmissions (a primary that skips a
    sequence number, a backup that believes it is the primary) fail here."""
    if any(view != 0 for view in final_views):
        return [Violation("quiet", f"a run without faults changed view: views {list(final_views)}")]
    for op in operations:
        returned = op["return_ms"]
        if returned is None or returned - op["invoke_ms"] >= retransmit_ms:
            took = "never returned" if returned is None else f"took {returned - op['invoke_ms']} ms"
            return [
                Violation(
                    "quiet",
                    f"a run without faults: client {op['client']} {op['op']} {op['key']!r} "
                    f"invoked at {op['invoke_ms']} ms {took} (retransmission at {retransmit_ms})",
                )
            ]
    return []


def check_run(
    replicas: Replicas,
    operations: Operations,
    stabilization_ms: int | None = None,
    bound_ms: int | None = None,
) -> list[Violation]:
    """Every checker; liveness only when the run had a stabilization time and bound."""
    violations = [
        *check_agreement(replicas),
        *check_validity(replicas, operations),
        *check_linearizability(operations),
    ]
    if stabilization_ms is not None and bound_ms is not None:
        violations += check_liveness(operations, stabilization_ms, bound_ms)
    return violations


def check_report(report: Mapping[str, Any]) -> list[Violation]:
    """Run the checkers on a run report (``pbft scenario run --json``'s output)."""
    return check_run(report["replicas"], report["clients"])
