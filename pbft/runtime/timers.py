"""Named one-shot timers on Trio's clock, for the core's SetTimer/CancelTimer effects.

One task sleeps until the earliest deadline and fires what is due. It is
woken early only when a timer is set to fire before the deadline it sleeps
towards: a replica restarts its timers on most steps, and waking the task for
each of those (a task switch per message) would buy nothing. A cancelled
timer's deadline may still wake the task once, to find nothing due. Deadlines
come from ``trio.current_time()``, so ``trio.testing.MockClock`` drives them in
tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio


class Timers:
    def __init__(self, tick_seconds: float) -> None:
        self.tick_seconds = tick_seconds
        self._deadlines: dict[str, float] = {}
        self._changed = trio.Event()
        #: The deadline the task sleeps towards (inf: none).
        self._waking_at = math.inf

    def set(self, name: str, ticks: int) -> None:
        """(Re)start ``name`` to fire after ``ticks`` ticks."""
        deadline = trio.current_time() + ticks * self.tick_seconds
        self._deadlines[name] = deadline
        if deadline < self._waking_at:
            self._changed.set()

    def cancel(self, name: str) -> None:
        self._deadlines.pop(name, None)

    def pending(self) -> dict[str, float]:
        return dict(self._deadlines)

    async def run(self, fire: Callable[[str], None]) -> None:
        """Forever: wait for the earliest deadline, then ``fire`` each timer due, in order."""
        while True:
            self._changed = trio.Event()
            self._waking_at = min(self._deadlines.values(), default=math.inf)
            with trio.move_on_at(self._waking_at):
                await self._changed.wait()
            self._waking_at = -math.inf  # awake: set() need not wake us
            now = trio.current_time()
            due = sorted(
                (deadline, name) for name, deadline in self._deadlines.items() if deadline <= now
            )
            for deadline, name in due:
                if self._deadlines.get(name) == deadline:
                    del self._deadlines[name]
                    fire(name)
