"""Counts of messages accepted and dropped, by type and by reason.

Reading the counters never changes them; the runtime publishes them in each
replica's status file.
"""

from __future__ import annotations

from collections import Counter


class Counters:
    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()

    def accept(self, message_type: str) -> None:
        self.accepted[message_type] += 1

    def drop(self, message_type: str, reason: str) -> None:
        self.dropped[(message_type, reason)] += 1

    def dropped_for(self, reason: str) -> int:
        return sum(count for (_, why), count in self.dropped.items() if why == reason)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy: ``{"accepted": {type: n}, "dropped": {"TYPE/reason": n}}``."""
        return {
            "accepted": dict(sorted(self.accepted.items())),
            "dropped": {f"{t}/{r}": n for (t, r), n in sorted(self.dropped.items())},
        }
