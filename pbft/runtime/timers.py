"""Named one-shot timers on Trio's clock, for the core's SetTimer/CancelTimer effects.

One task sleeps until the earliest deadline (or until the set of timers
changes) and fires what is due. Deadlines come from ``trio.current_time()``,
so ``trio.testing.MockClock`` drives them in tests.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class Timers:
    def __init__(self, tick_seconds: float) -> None:
        self.tick_seconds = tick_seconds
        self._deadlines: dict[str, float] = {}
        self._changed = trio.Event()

    def set(self, name: str, ticks: int) -> None:
        """(Re)start ``name`` to fire after ``ticks`` ticks."""
        self._deadlines[name] = trio.current_time() + ticks * self.tick_seconds
        self._changed.set()

    def cancel(self, name: str) -> None:
        if self._deadlines.pop(name, None) is not None:
            self._changed.set()

    def pending(self) -> dict[str, float]:
        return dict(self._deadlines)

    async def run(self, fire: Callable[[str], None]) -> None:
        """Forever: wait for the earliest deadline, then ``fire`` each timer due, in order."""
        while True:
            self._changed = trio.Event()
            if self._deadlines:
                with trio.move_on_at(min(self._deadlines.values())):
                    await self._changed.wait()
            else:
                await self._changed.wait()
            now = trio.current_time()
            due = sorted(
                (deadline, name) for name, deadline in self._deadlines.items() if deadline <= now
            )
            for deadline, name in due:
                if self._deadlines.get(name) == deadline:
                    del self._deadlines[name]
                    fire(name)
