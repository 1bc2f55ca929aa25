"""Refusals are logged once per peer, reason and interval (pbft.runtime.ratelimit)."""

from __future__ import annotations

import io

from pbft.events import Dropped
from pbft.runtime.eventlog import EventLog
from pbft.runtime.handshake import HandshakeError
from pbft.runtime.ratelimit import RateLimiter, RejectionLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_event_per_key_per_interval_and_the_next_line_counts_the_rest() -> None:
    clock = Clock()
    limiter = RateLimiter(interval_seconds=10, clock=clock)
    assert limiter.allow("a") == 0
    assert [limiter.allow("a") for _ in range(5)] == [None] * 5
    assert limiter.allow("b") == 0  # another key has its own interval
    clock.now = 10
    assert limiter.allow("a") == 5
    assert limiter.allow("a") is None
    assert limiter.suppressed_total == 6


def test_keys_are_bounded_and_a_key_that_evicts_an_active_one_gets_no_free_line() -> None:
    clock = Clock()
    limiter = RateLimiter(interval_seconds=10, max_keys=3, clock=clock)
    assert [limiter.allow(key) for key in "abc"] == [0, 0, 0]
    for key in range(100):
        clock.now += 0.01
        assert limiter.allow(key) is None  # the table is full of keys active this interval
    assert len(limiter) == 3
    clock.now = 20  # every remembered line is older than the interval: forgetting one is free
    assert limiter.allow("new") == 0


def test_many_keys_cycling_cost_at_most_the_global_cap_per_interval() -> None:
    """Regression (B1): 100 addresses x 11 reasons, more keys than the table holds, cycling:
    every event evicted the key about to recur and got a fresh line: 5,500 lines in 5.5 s."""
    clock = Clock()
    limiter = RateLimiter(interval_seconds=10, clock=clock)
    keys = [(f"10.0.0.{a}", f"reason-{r}") for a in range(100) for r in range(11)]
    lines = 0
    for _ in range(5):
        for key in keys:
            clock.now += 0.001
            lines += limiter.allow(key) is not None
    assert lines <= limiter.max_lines, lines
    assert limiter.suppressed_total == 5 * len(keys) - lines


def test_a_full_log_says_how_many_lines_it_held_back_from_other_peers() -> None:
    clock = Clock()
    stream = io.StringIO()
    limiter = RateLimiter(interval_seconds=10, max_lines=5, clock=clock)
    rejections = RejectionLog(EventLog("replica 1", stream=stream), limiter)
    for host in range(50):
        clock.now += 0.01
        rejections.handshake_failed(f"10.0.0.{host}", HandshakeError("handshake timed out"))
    assert len(stream.getvalue().splitlines()) == 5
    rejections.flush()  # the interval is not over: nothing to say yet
    assert len(stream.getvalue().splitlines()) == 5
    clock.now = 11
    rejections.flush()
    rejections.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6, lines
    assert "handshake-failed peer=other peers suppressed=45" in lines[-1], lines[-1]


def test_a_flood_of_hostile_input_is_a_few_lines() -> None:
    stream = io.StringIO()
    rejections = RejectionLog(EventLog("replica 1", stream=stream), RateLimiter(clock=Clock()))
    for _ in range(1000):
        rejections.handshake_failed("127.0.0.1", HandshakeError("handshake timed out"))
        rejections.dropped(("client", 2), [Dropped("REQUEST", "bad-signature")])
        rejections.connection("connected", ("client", 2))
        rejections.refused("127.0.0.1", "too-many-connections")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert "handshake-failed peer=127.0.0.1 reason=timeout" in lines[0]
    assert "input-rejected peer=client 2 reason=REQUEST/bad-signature" in lines[1]
