"""What the explored runs reached: fired faults and the drop reasons of honest replicas.

A fault schedule proves something only if its faults happen while the
protocol runs, and an adversary only if honest replicas actually had to refuse
what it sent. Two summaries over many seeds say how far the explorer gets:

* :func:`fault_summary`: scheduled and fired faults by kind (network rules,
  crashes, restarts, timed traitor triggers; see
  :mod:`faults.verification.timeline` for what counts as fired), the
  fraction that fired, and the number of messages the byzantine traitors
  injected and the Byzantine clients rewrote;
* :func:`drop_reason_summary`: for every reason the core can drop a message
  for (:func:`known_drop_reasons`, read from the core's source so the list
  never goes stale), the fraction of seeds in which an honest replica dropped
  a message for it.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Sequence
from functools import cache
from typing import Any

from faults.verification.timeline import FAULT_KINDS

#: The modules whose handlers return or count a replica's drop reasons.
_REASON_MODULES = (
    "pbft.auth",
    "pbft.certificates",
    "pbft.replica",
    "pbft.replica_checkpoints",
    "pbft.replica_recovery",
    "pbft.replica_view_change",
)
_REASON_PATTERNS = (
    re.compile(r'(?:return|else) "([a-z][a-z-]+)"'),
    re.compile(r'Rejection\([^()]*?, "([a-z][a-z-]+)"\)'),
    re.compile(r'(?:_count_drop|counters\.drop)\([^()]*?, "([a-z][a-z-]+)"\)'),
)


@cache
def known_drop_reasons() -> tuple[str, ...]:
    """Every drop reason an honest replica can count, found in the core's source."""
    found: set[str] = set()
    for name in _REASON_MODULES:
        try:
            source = inspect.getsource(importlib.import_module(name))
        except (ImportError, OSError):
            continue
        for pattern in _REASON_PATTERNS:
            found.update(pattern.findall(source))
    found.discard("buffered")  # a handler's "kept for later", not a drop
    return tuple(sorted(found))


def drop_reason_summary(results: Sequence[Any]) -> dict[str, float]:
    """Reason -> fraction of seeds in which an honest replica dropped a message for it."""
    runs = len(results)
    reasons = set(known_drop_reasons())
    for result in results:
        reasons |= result.drop_reasons
    return {
        reason: round(sum(reason in r.drop_reasons for r in results) / runs, 3) if runs else 0.0
        for reason in sorted(reasons)
    }


def fault_summary(results: Sequence[Any]) -> dict[str, Any]:
    scheduled = dict.fromkeys(FAULT_KINDS, 0)
    fired = dict.fromkeys(FAULT_KINDS, 0)
    injections = rewrites = 0
    for result in results:
        faults = result.faults
        for kind in FAULT_KINDS:
            scheduled[kind] += faults.get("scheduled", {}).get(kind, 0)
            fired[kind] += faults.get("fired", {}).get(kind, 0)
        injections += faults.get("injections", 0)
        rewrites += faults.get("client_rewrites", 0)
    total_scheduled = sum(scheduled.values())
    total_fired = sum(fired.values())
    return {
        "scheduled": total_scheduled,
        "fired": total_fired,
        "fired_fraction": round(total_fired / total_scheduled, 3) if total_scheduled else 1.0,
        "scheduled_by_kind": scheduled,
        "fired_by_kind": fired,
        "byzantine_injections": injections,
        "byzantine_client_rewrites": rewrites,
    }
