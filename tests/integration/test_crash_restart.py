"""scripts/crash_restart.py: replicas SIGKILLed and restarted under load, all of them at once
near the end; no acknowledged write may be lost, the history must stay linearizable and the
replicas must agree. The checks themselves are tried first on fabricated runs that break
them, so that a run which passes has been judged by checks that can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from faults.scenarios.crash_restart import Run, Settings
from faults.scenarios.crash_restart_report import describe, verdict
from faults.verification.durability import lost_writes, unread_keys
from faults.verification.linearizability import Operation, check_history

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "crash_restart.py"


def op(
    client: int, name: str, key: str, value: Any, invoke: float, ret: float | None, result: Any
) -> Operation:
    return Operation(client, name, key, value, invoke, ret, result)


# --------------------------------------------------------------- the loss check


def test_a_final_value_older_than_an_acknowledged_write_is_a_loss() -> None:
    history = [op(0, "put", "k", "a", 0, 1, True), op(1, "put", "k", "b", 2, 3, True)]
    lost = lost_writes(history, {"k": "a"})
    assert [(w.key, w.operation.value) for w in lost] == [("k", "b")]
    assert "'b'" in lost[0].describe() and "'a'" in lost[0].describe()
    assert lost_writes(history, {"k": "b"}) == []


def test_an_absent_key_or_a_value_nobody_wrote_loses_every_acknowledged_write() -> None:
    history = [op(0, "put", "k", "a", 0, 1, True), op(0, "cas", "k", ("a", "b"), 2, 3, True)]
    assert len(lost_writes(history, {"k": None})) == 2
    assert len(lost_writes(history, {"k": "ghost"})) == 2


def test_concurrent_and_unknown_writes_may_be_the_last_one() -> None:
    history = [
        op(0, "put", "k", "a", 0, 10, True),
        op(1, "put", "k", "b", 5, 6, True),  # overlaps a: either may be last
        op(2, "put", "k", "c", 7, None, None),  # timed out: may have happened after b
        op(3, "cas", "k", ("x", "d"), 20, 21, False),  # a failed cas writes nothing
    ]
    assert lost_writes(history, {"k": "a"}) == []
    assert lost_writes(history, {"k": "b"}) == []
    assert lost_writes(history, {"k": "c"}) == []
    assert len(lost_writes(history, {"k": "d"})) == 2  # d was never written


def test_a_key_written_but_never_read_back_is_reported() -> None:
    history = [op(0, "put", "k", "a", 0, 1, True), op(0, "get", "j", None, 2, 3, None)]
    assert unread_keys(history, {}) == ["k"]
    assert unread_keys(history, {"k": "a"}) == []


def test_an_unknown_operation_is_pending_for_the_linearizability_checker() -> None:
    history = [
        op(0, "put", "k", "a", 0, 1, True),
        op(1, "put", "k", "b", 2, None, None),  # timed out at its client
        op(2, "get", "k", None, 50, 51, "b"),  # ... and took effect later
        op(2, "get", "k", None, 52, 53, "b"),
    ]
    assert check_history(history).linearizable
    assert not check_history([*history, op(2, "get", "k", None, 54, 55, "a")]).linearizable


def fabricated_run(
    final_value: str, second: bytes = b"x", exits: tuple[str, ...] = ()
) -> dict[str, Any]:
    run = Run(unexpected_exits=list(exits))
    run.kills, run.restarts, run.all_at_once, run.all_at_once_ms = 5, 5, 1, 100.0
    run.history = [
        op(0, "put", "key-0", "c0-0", 10, 20, True),
        op(0, "put", "key-0", "c0-1", 150, 160, True),  # after the all-at-once restart
        op(4, "get", "key-0", None, 300, 310, final_value),  # the final read
    ]
    settings = Settings(clients=4, duration=1, keys=1)
    histories = {0: [(1, 0, b"x")], 1: [(1, 0, second)]}
    return verdict(settings, run, {"key-0": final_value}, histories, True)


def test_the_script_fails_a_run_that_lost_a_write() -> None:
    good = fabricated_run("c0-1")
    assert good["ok"], good["problems"]
    bad = fabricated_run("c0-0")
    assert not bad["ok"]
    assert bad["lost"] == 1 and not bad["linearizable"]
    assert "FAILED" in describe(bad)


def test_the_script_fails_a_run_whose_replicas_diverge_or_die() -> None:
    diverged = fabricated_run("c0-1", second=b"y")
    assert not diverged["ok"] and not diverged["agreement"] and "seq 1" in diverged["conflict"]
    died = fabricated_run("c0-1", exits=("replica 2 exited at 3.0 s: Traceback",))
    assert not died["ok"] and "exited on their own" in died["problems"][0]


# --------------------------------------------------------------- a real run


@pytest.mark.slow
def test_crash_restart_under_load_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    command = [
        sys.executable, str(SCRIPT), "--duration", "24", "--seed", "3", "--json",
        "--history", str(tmp_path / "history.jsonl"),
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=150)
    assert finished.stdout, finished.stderr[-3000:]
    summary = json.loads(finished.stdout)
    assert finished.returncode == (0 if summary["ok"] else 1)
    assert summary["ok"], (summary["problems"], finished.stderr[-3000:])
    faults = summary["faults"]
    assert faults["all_at_once"] == 1
    assert faults["kills"] > 3 * summary["f"] + 1  # some single kills besides the all-at-once
    assert faults["restarts"] == faults["kills"]
    assert summary["acknowledged_before_all_at_once"] > 0
    assert summary["acknowledged_after_all_at_once"] > 0
    assert summary["lost"] == 0 and summary["unread_keys"] == []
    assert summary["linearizable"] and summary["agreement"]
    assert "acknowledged" in finished.stderr  # the progress lines
