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
