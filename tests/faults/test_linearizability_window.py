"""The checker's search looks only at the operations open near its frontier; it must decide
exactly as the plain search over every operation did (kept here as the reference)."""

from __future__ import annotations

import random
import time
from typing import Any

from faults.verification.linearizability import INFINITY, Operation, apply, check_key


def reference_check_key(operations: list[Operation], initial: Any = None) -> bool:
    ops = sorted(operations, key=lambda o: o.invoke_ms)
    count = len(ops)
    returns = [INFINITY if op.return_ms is None else op.return_ms for op in ops]
    must = sum(1 << i for i, op in enumerate(ops) if op.returned)
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = [(0, initial)]
    while stack:
        done, state = stack.pop()
        if done & must == must:
            return True
        if (done, state) in seen:
            continue
        seen.add((done, state))
        horizon = min((returns[i] for i in range(count) if not done >> i & 1), default=INFINITY)
        for i in range(count):
            if done >> i & 1 or ops[i].invoke_ms > horizon:
                continue
            ok, after = apply(ops[i], state)
            if ok:
                stack.append((done | 1 << i, after))
    return False


def random_history(rng: random.Random, size: int) -> list[Operation]:
    """Small concurrent histories with made-up results: some linearizable, most not."""
    values = ["a", "b", "c", None]
    history = []
    for number in range(size):
        invoke = rng.randrange(20)
        ret = None if rng.random() < 0.15 else invoke + rng.randrange(1, 8)
        name = rng.choice(["get", "put", "cas", "delete"])
        value: Any = {"put": rng.choice("abc"), "cas": (rng.choice(values), rng.choice("abc"))}
        result: Any = {"get": rng.choice(values), "delete": rng.random() < 0.5}.get(
            name, rng.random() < 0.7
        )
        history.append(
            Operation(
                number, name, "k", value.get(name), invoke, ret, None if ret is None else result
            )
        )
    return history


def test_the_windowed_search_decides_as_the_plain_search() -> None:
    rng = random.Random(17)
    verdicts = {True: 0, False: 0}
    for _ in range(3000):
        history = random_history(rng, rng.randrange(1, 9))
        expected = reference_check_key(history)
        assert check_key(history) == expected, history
        verdicts[expected] += 1
    assert min(verdicts.values()) > 100  # both kinds were tried


def test_a_long_sequential_history_is_checked_quickly() -> None:
    history = []
    for t in range(6000):
        history.append(Operation(t % 4, "put", "k", f"v{t}", 3 * t, 3 * t + 4, True))
    history.append(Operation(9, "put", "k", "lost", 1, None, None))  # pending from the start
    started = time.monotonic()
    assert check_key(history)
    assert time.monotonic() - started < 5
