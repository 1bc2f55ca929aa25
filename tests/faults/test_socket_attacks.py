"""The hostile-input attacker's scheduling (:mod:`faults.traitors.socket_attacks`).

A replica keeps one authenticated connection per principal, so the attacker's sessions
evict each other; each session plays the kind that delivered in the fewest sessions. A
worker per kind once left ``malformed-message`` with no delivered frame in a CI run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import trio

from faults.traitors.socket_attacks import SESSION_KINDS, SocketAttacker
from tests.runtime.test_links import CONFIG, signer


def attacker() -> SocketAttacker:
    attacker = SocketAttacker(
        CONFIG, ("127.0.0.1", 9), 1, 1, signer(("client", 1)),
        max_frame_bytes=4096, connections=0,
    )  # fmt: skip
    attacker._session_kinds = SESSION_KINDS
    return attacker


async def test_an_evicted_kind_gets_the_next_sessions_until_it_delivers() -> None:
    """``malformed-message`` is evicted before its first frame 5 times; every other kind
    delivers at once. The evicted kind is retried first, then the kinds take turns."""
    hostile = attacker()
    played: list[str] = []
    evictions = 5

    def session(kind: str) -> Callable[[], Awaitable[None]]:
        async def attack() -> None:
            nonlocal evictions
            played.append(kind)
            await trio.lowlevel.checkpoint()
            if kind == "malformed-message" and evictions:
                evictions -= 1
                raise trio.BrokenResourceError("evicted by a newer session")
            hostile.sent[kind] += 1

        return attack

    for kind in SESSION_KINDS:
        setattr(hostile, "_" + kind.replace("-", "_"), session(kind))
    for _ in range(6 * len(SESSION_KINDS)):
        try:
            await hostile._next_session()
        except trio.BrokenResourceError:
            pass
    assert all(hostile.sent[kind] > 0 for kind in SESSION_KINDS), hostile.sent
    # The first round: each kind once in order, then malformed-message alone until it delivered.
    first = list(SESSION_KINDS)
    assert played[: len(first)] == first
    malformed = played[len(first) : len(first) + 5]
    assert malformed == ["malformed-message"] * 5, played
    # After that the delivered sessions are balanced: no kind more than one ahead.
    delivered = Counter(kind for kind in SESSION_KINDS for _ in range(hostile.sent[kind]))
    assert max(delivered.values()) - min(delivered.values()) <= 1, delivered
