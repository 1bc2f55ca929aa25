"""The linearizability checker must accept linearizable histories and reject the rest.

Each history is written as (client, op, key, value, invoke_ms, return_ms, result).
"""

from __future__ import annotations

import random

import pytest

from faults.verification.linearizability import Operation, check_history


def h(*entries: tuple) -> list[Operation]:  # type: ignore[type-arg]
    return [Operation(*entry) for entry in entries]


LINEARIZABLE = {
    "empty": h(),
    "read of nothing": h((0, "get", "k", None, 0, 1, None)),
    "write then read": h((0, "put", "k", "a", 0, 1, True), (1, "get", "k", None, 2, 3, "a")),
    "concurrent read sees old": h(
        (0, "put", "k", "a", 0, 10, True), (1, "get", "k", None, 1, 2, None)
    ),
    "concurrent read sees new": h(
        (0, "put", "k", "a", 0, 10, True), (1, "get", "k", None, 1, 2, "a")
    ),
    "two writers, reader sees either": h(
        (0, "put", "k", "a", 0, 10, True),
        (1, "put", "k", "b", 0, 10, True),
        (2, "get", "k", None, 11, 12, "a"),
    ),
    "cas succeeds once": h(
        (0, "cas", "k", (None, "x"), 0, 5, True),
        (1, "cas", "k", (None, "y"), 0, 5, False),
        (2, "get", "k", None, 6, 7, "x"),
    ),
    "delete reports existence": h(
        (0, "put", "k", "a", 0, 1, True),
        (0, "delete", "k", None, 2, 3, True),
        (1, "delete", "k", None, 4, 5, False),
        (1, "get", "k", None, 6, 7, None),
    ),
    "pending write may have happened": h(
        (0, "put", "k", "a", 0, None, None), (1, "get", "k", None, 5, 6, "a")
    ),
    "pending write may not have happened": h(
        (0, "put", "k", "a", 0, None, None), (1, "get", "k", None, 5, 6, None)
    ),
    "keys are independent": h(
        (0, "put", "a", "1", 0, 1, True),
        (0, "put", "b", "2", 2, 3, True),
        (1, "get", "a", None, 4, 5, "1"),
        (1, "get", "b", None, 4, 5, "2"),
    ),
}

NOT_LINEARIZABLE = {
    "read of a value never written": h((0, "get", "k", None, 0, 1, "ghost")),
    "stale read after write returned": h(
        (0, "put", "k", "a", 0, 1, True), (1, "get", "k", None, 2, 3, None)
    ),
    "read goes back in time": h(
        (0, "put", "k", "a", 0, 1, True),
        (0, "put", "k", "b", 2, 3, True),
        (1, "get", "k", None, 4, 5, "a"),
    ),
    "two reads disagree on order": h(
        (0, "put", "k", "a", 0, 10, True),
        (1, "put", "k", "b", 0, 10, True),
        (2, "get", "k", None, 11, 12, "a"),
        (3, "get", "k", None, 13, 14, "b"),
        (2, "get", "k", None, 15, 16, "a"),
    ),
    "new then old (real time)": h(
        (0, "put", "k", "a", 0, 1, True),
        (1, "put", "k", "b", 2, 20, True),
        (2, "get", "k", None, 3, 4, "b"),
        (3, "get", "k", None, 5, 6, "a"),
    ),
    "both cas succeed": h(
        (0, "cas", "k", (None, "x"), 0, 5, True), (1, "cas", "k", (None, "y"), 0, 5, True)
    ),
    "cas fails on matching value": h(
        (0, "put", "k", "a", 0, 1, True), (1, "cas", "k", ("a", "b"), 2, 3, False)
    ),
    "cas succeeds on wrong value": h(
        (0, "put", "k", "a", 0, 1, True), (1, "cas", "k", ("z", "b"), 2, 3, True)
    ),
    "cas effect not visible": h(
        (0, "cas", "k", (None, "x"), 0, 1, True), (1, "get", "k", None, 2, 3, None)
    ),
    "failed cas has an effect": h(
        (0, "put", "k", "a", 0, 1, True),
        (1, "cas", "k", ("z", "b"), 2, 3, False),
        (2, "get", "k", None, 4, 5, "b"),
    ),
    "delete of absent key claims it existed": h((0, "delete", "k", None, 0, 1, True)),
    "delete of present key claims it did not": h(
        (0, "put", "k", "a", 0, 1, True), (1, "delete", "k", None, 2, 3, False)
    ),
    "read after delete sees value": h(
        (0, "put", "k", "a", 0, 1, True),
        (0, "delete", "k", None, 2, 3, True),
        (1, "get", "k", None, 4, 5, "a"),
    ),
    "put reported as failed": h((0, "put", "k", "a", 0, 1, False)),
    "lost update": h(
        (0, "put", "k", "a", 0, 1, True),
        (1, "put", "k", "b", 2, 3, True),
        (2, "get", "k", None, 4, 5, "a"),
    ),
    "double delete both succeed": h(
        (0, "put", "k", "a", 0, 1, True),
        (1, "delete", "k", None, 2, 5, True),
        (2, "delete", "k", None, 2, 5, True),
    ),
    "read sees write invoked later": h(
        (0, "get", "k", None, 0, 1, "a"), (1, "put", "k", "a", 2, 3, True)
    ),
    "pending write cannot explain value": h(
        (0, "put", "k", "a", 0, None, None), (1, "get", "k", None, 5, 6, "b")
    ),
    "pending write seen, then unseen": h(
        (0, "put", "k", "a", 0, None, None),
        (1, "get", "k", None, 5, 6, "a"),
        (1, "get", "k", None, 7, 8, None),
    ),
    "two cas chains conflict": h(
        (0, "put", "k", "0", 0, 1, True),
        (1, "cas", "k", ("0", "1"), 2, 3, True),
        (2, "cas", "k", ("0", "2"), 4, 5, True),
    ),
    "one key fine, the other not": h(
        (0, "put", "a", "1", 0, 1, True),
        (1, "get", "a", None, 2, 3, "1"),
        (0, "put", "b", "1", 0, 1, True),
        (1, "get", "b", None, 2, 3, "2"),
    ),
    "read of value from a different key": h(
        (0, "put", "a", "1", 0, 1, True), (1, "get", "b", None, 2, 3, "1")
    ),
}


@pytest.mark.parametrize("name", sorted(LINEARIZABLE))
def test_linearizable_histories_are_accepted(name: str) -> None:
    assert check_history(LINEARIZABLE[name]).linearizable


@pytest.mark.parametrize("name", sorted(NOT_LINEARIZABLE))
def test_non_linearizable_histories_are_rejected(name: str) -> None:
    verdict = check_history(NOT_LINEARIZABLE[name])
    assert not verdict.linearizable
    assert verdict.key is not None and verdict.key in verdict.describe()


def test_there_are_at_least_twenty_hand_made_violations() -> None:
    assert len(NOT_LINEARIZABLE) >= 20


def test_sequential_histories_of_a_real_store_are_linearizable() -> None:
    """Random sequential runs of the key-value model are accepted, however long."""
    from faults.verification.linearizability import apply

    rng = random.Random(5)
    state: dict[str, str | None] = {}
    history = []
    for t in range(400):
        key = f"k{rng.randrange(3)}"
        op = rng.choice(["get", "put", "delete", "cas"])
        value = {"put": f"v{t}", "cas": (rng.choice([None, f"v{t - 1}"]), f"v{t}")}.get(op)
        draft = Operation(0, op, key, value, 2 * t, 2 * t + 1, None)
        _, after = apply(draft, state.get(key))
        result = {
            "get": state.get(key),
            "put": True,
            "delete": state.get(key) is not None,
            "cas": value is not None and state.get(key) == value[0] if op == "cas" else None,
        }[op]
        history.append(Operation(0, op, key, value, 2 * t, 2 * t + 1, result))
        state[key] = after
    assert check_history(history).linearizable
    # Corrupt one read: the checker notices.
    reads = [i for i, op in enumerate(history) if op.op == "get"]
    i = reads[len(reads) // 2]
    history[i] = Operation(0, "get", history[i].key, None, 2 * i, 2 * i + 1, "corrupt")
    assert not check_history(history).linearizable


def test_report_entries_are_accepted() -> None:
    entries = [
        {"client": 0, "op": "cas", "key": "k", "value": [None, "x"], "invoke_ms": 0,
         "return_ms": 2, "result": True},
        {"client": 1, "op": "get", "key": "k", "value": None, "invoke_ms": 3,
         "return_ms": None, "result": None},
    ]  # fmt: skip
    assert check_history(entries).linearizable
