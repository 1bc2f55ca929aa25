"""Timers run on Trio's clock, so MockClock drives them (no real waiting)."""

from __future__ import annotations

import trio
import trio.testing

from pbft.runtime.timers import Timers


async def test_timers_fire_in_deadline_order_and_can_be_reset_or_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timers = Timers(tick_seconds=0.001)
    fired: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run, lambda name: fired.append((name, trio.current_time())))
        start = trio.current_time()
        timers.set("view-change", 1000)
        timers.set("retransmit", 200)
        timers.set("cancelled", 100)
        timers.cancel("cancelled")
        await trio.sleep(0.5)
        timers.set("view-change", 1000)  # restarted: now due at 1.5 s
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in fired] == ["retransmit", "view-change"]
    assert abs(fired[0][1] - start - 0.2) < 1e-9
    assert abs(fired[1][1] - start - 1.5) < 1e-9


async def test_a_timer_set_earlier_than_the_one_awaited_wakes_the_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The task sleeps towards the earliest deadline and is woken only for an earlier one;
    later and cancelled timers never make it fire early or late."""
    timers = Timers(tick_seconds=0.001)
    fired: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run, lambda name: fired.append((name, trio.current_time())))
        start = trio.current_time()
        timers.set("late", 1000)
        await trio.sleep(0.1)  # the task now sleeps towards 1.0 s
        timers.set("early", 100)  # due at 0.2 s: must wake the task
        timers.set("later", 2000)  # due at 2.1 s: must not disturb it
        timers.set("gone", 50)
        timers.cancel("gone")
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert [(name, round(at - start, 6)) for name, at in fired] == [
        ("early", 0.2), ("late", 1.0), ("later", 2.1),
    ]  # fmt: skip


async def test_a_timer_set_while_timers_fire_is_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timers = Timers(tick_seconds=0.001)
    fired: list[tuple[str, float]] = []

    def fire(name: str) -> None:
        fired.append((name, trio.current_time()))
        if name == "first":
            timers.set("second", 10)  # set from inside fire(), as the core does

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run, fire)
        start = trio.current_time()
        timers.set("first", 100)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [(name, round(at - start, 6)) for name, at in fired] == [
        ("first", 0.1), ("second", 0.11),
    ]  # fmt: skip
