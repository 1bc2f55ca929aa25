"""Rejections logged at most once per peer, reason and interval: no log flood from hostile input.

A replica refuses hostile input all the time: handshakes that time out or do not
verify, frames its core drops (bad signatures, malformed or replayed messages),
peers that connect and go away in a loop. Each refusal is worth one line for the
operator, but a line per frame or per connection would let any peer fill the
disk and bury everything else, at the cost of a few bytes each.

Theory of operation
-------------------
:class:`RateLimiter` keeps, per key, when it last let a line through and how
many it suppressed since. :meth:`RateLimiter.allow` says whether the next line
for a key may be written (at most one per ``interval_seconds``) and, when it
may, how many it held back since the last one, so that the line can say so
(``suppressed=N``). Two bounds hold whatever the keys:

* **lines**: at most ``max_lines`` lines per interval, all keys together (a fixed
  window). Many peers, or one varying its address and reason, cannot buy a line
  each: beyond the cap, events are held back;
* **keys**: at most ``max_keys`` remembered. A new key may take the place of the
  key whose last line is oldest; if that line is older than the interval,
  forgetting it costs nothing (its key would get a line anyway). If not, every
  remembered key has had a line this interval: the table is full of active keys,
  and the new key takes the place *without* a line of its own, so cycling more
  keys than the table holds buys no lines.

An event held back where no key's next line will count it (beyond the line cap
for a new key, a new key that evicted an active one, the count of a forgotten
key) is counted *for other peers*, per category (the log's event name):
:meth:`RateLimiter.take_others` hands those counts over once per interval, after
the window they fell in, and :class:`RejectionLog` writes one line for each
(``peer="other peers" suppressed=N``). Every event held back is also counted in
:attr:`RateLimiter.suppressed_total`.

:class:`RejectionLog` applies one limiter to a node's :class:`EventLog`: a peer
is an address before the handshake (its host: every connection of one host
has a new port) and the identity it proved after; a reason is a short label
(:func:`pbft.runtime.metrics.handshake_failure_reason`, the core's
``Dropped`` type and reason, or ``connected``/``disconnected``).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

from pbft.events import Dropped, Effect
from pbft.runtime.eventlog import EventLog
from pbft.runtime.handshake import HandshakeError, Identity, format_identity
from pbft.runtime.metrics import handshake_failure_reason

#: One line per (peer, reason) in this many seconds at most.
DEFAULT_INTERVAL_SECONDS = 10.0
#: (peer, reason) pairs remembered at once.
DEFAULT_MAX_KEYS = 1024
#: Lines in one interval, all (peer, reason) pairs together.
DEFAULT_MAX_LINES = 100
#: How a line about events held back from many peers names them.
OTHER_PEERS = "other peers"
#: A handshake error's text is cut to this many characters in the log.
MAX_DETAIL_CHARACTERS = 160


class _Key:
    """What a :class:`RateLimiter` remembers of a key."""

    __slots__ = ("category", "last_line", "suppressed")

    def __init__(self, last_line: float, category: str) -> None:
        self.last_line = last_line
        self.suppressed = 0
        self.category = category


class RateLimiter:
    """At most one event per key and ``max_lines`` in all per interval; counts the rest."""

    def __init__(
        self,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        max_lines: int = DEFAULT_MAX_LINES,
    ) -> None:
        if interval_seconds < 0 or max_keys < 1 or max_lines < 1:
            raise ValueError(
                "a rate limiter needs interval_seconds >= 0, max_keys >= 1 and max_lines >= 1"
            )
        self.interval_seconds = interval_seconds
        self.max_keys = max_keys
        self.max_lines = max_lines
        self._clock = clock
        #: key -> its last line, the events held back since; oldest line first.
        self._keys: OrderedDict[Hashable, _Key] = OrderedDict()
        #: Every event held back, forgotten keys included.
        self.suppressed_total = 0
        #: The window of the line cap: its start and the lines let through in it.
        self._window_start = -math.inf
        self._window_lines = 0
        #: Events held back for no key, by category: this window's, and those due.
        self._others: dict[str, int] = {}
        self._others_due: dict[str, int] = {}

    def allow(self, key: Hashable, category: str = "") -> int | None:
        """None: hold this event back (counted). Else: how many were held back before it.

        ``category`` groups, for :meth:`take_others`, events held back for no key.
        """
        now = self._clock()
        self._roll(now)
        entry = self._keys.get(key)
        if entry is not None and now - entry.last_line < self.interval_seconds:
            entry.suppressed += 1
            self.suppressed_total += 1
            return None
        if entry is None and len(self._keys) >= self.max_keys:
            _, oldest = self._keys.popitem(last=False)  # the key whose last line is oldest
            self._hold_for_others(oldest.category, oldest.suppressed, counted=True)
            if now - oldest.last_line < self.interval_seconds:
                # Every key had a line this interval: no free line for the newcomer.
                self._keys[key] = _Key(now, category)
                self._hold_for_others(category)
                return None
        if self._window_lines >= self.max_lines:
            if entry is None:
                self._hold_for_others(category)
            else:
                entry.suppressed += 1  # its next line says so
                self.suppressed_total += 1
            return None
        self._window_lines += 1
        suppressed = 0 if entry is None else entry.suppressed
        self._keys[key] = _Key(now, category)
        self._keys.move_to_end(key)
        return suppressed

    def take_others(self) -> dict[str, int]:
        """Events held back for no key, by category, from windows now over (then forgotten)."""
        self._roll(self._clock())
        due, self._others_due = self._others_due, {}
        return due

    def _hold_for_others(self, category: str, count: int = 1, *, counted: bool = False) -> None:
        if count:
            self._others[category] = self._others.get(category, 0) + count
            if not counted:
                self.suppressed_total += count

    def _roll(self, now: float) -> None:
        """Start a new window of the line cap once the interval is over."""
        if now - self._window_start >= self.interval_seconds:
            self._window_start = now
            self._window_lines = 0
            for category, count in self._others.items():
                self._others_due[category] = self._others_due.get(category, 0) + count
            self._others = {}

    def __len__(self) -> int:
        return len(self._keys)


class RejectionLog:
    """A node's refusals of its peers' input, written to its :class:`EventLog` rate-limited."""

    def __init__(self, log: EventLog, limiter: RateLimiter | None = None) -> None:
        self.log = log
        self.limiter = limiter if limiter is not None else RateLimiter()  # empty: falsy

    def flush(self) -> None:
        """Write the lines about events held back from other peers, once their window is over.

        Called before every line and by the node a few times a second, so that the
        count is written even when the flood stops.
        """
        for event, count in self.limiter.take_others().items():
            self.log.event(event, peer=OTHER_PEERS, suppressed=count)

    def _allow(self, key: Hashable, event: str) -> int | None:
        self.flush()
        return self.limiter.allow(key, event)

    def handshake_failed(self, address: str, error: HandshakeError) -> None:
        """An unauthenticated peer at ``address`` failed the handshake."""
        reason = handshake_failure_reason(error)
        suppressed = self._allow((address, reason), "handshake-failed")
        if suppressed is not None:
            detail = str(error)[:MAX_DETAIL_CHARACTERS]
            self.log.event(
                "handshake-failed", peer=address, reason=reason, detail=detail,
                suppressed=suppressed,
            )  # fmt: skip

    def refused(self, address: str, reason: str) -> None:
        """A connection from ``address`` was closed at once, unserved (``reason``)."""
        suppressed = self._allow((address, reason), "connection-refused")
        if suppressed is not None:
            self.log.event("connection-refused", peer=address, reason=reason,
                           suppressed=suppressed)  # fmt: skip

    def status_not_written(self, error: OSError) -> None:
        """The node could not write its status file (the replica goes on without)."""
        suppressed = self._allow(("status", error.errno), "error")
        if suppressed is not None:
            self.log.event("error", reason=f"status not written: {error}", suppressed=suppressed)

    def dropped(self, identity: Identity, effects: Sequence[Effect]) -> None:
        """The core refused frames of ``identity``: one line per (peer, type/reason)."""
        for effect in effects:
            if type(effect) is Dropped:
                reason = f"{effect.message_type}/{effect.reason}"
                suppressed = self._allow((identity, reason), "input-rejected")
                if suppressed is not None:
                    self.log.event(
                        "input-rejected", peer=format_identity(identity), reason=reason,
                        suppressed=suppressed,
                    )  # fmt: skip

    def connection(self, event: str, identity: Identity) -> None:
        """``connected`` or ``disconnected``: a peer that reconnects in a loop is one line."""
        suppressed = self._allow((identity, event), event)
        if suppressed is None:
            return
        if suppressed:
            self.log.event(event, peer=format_identity(identity), suppressed=suppressed)
        else:
            self.log.event(event, peer=format_identity(identity))


def peer_host(stream: object) -> str:
    """The host of a socket stream's peer ("127.0.0.1"), or "unknown" for other streams."""
    socket = getattr(stream, "socket", None)
    try:
        name = socket.getpeername() if socket is not None else None
    except OSError:
        return "unknown"
    if isinstance(name, tuple) and name:
        return str(name[0])
    return "unknown"
