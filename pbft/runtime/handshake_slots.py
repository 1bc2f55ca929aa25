"""A cap on the handshakes a replica has in progress, that no claim can use to lock others out.

When a replica restarts, every client and peer that was connected to it dials
again, at about the same time. Each handshake costs the replica an X25519 key,
a signature verification and (for a dialer that proved itself) a signature,
plus a task and a socket until it ends. Until its PROOF verified, a dialer's
identity is only a claim: anyone able to open a connection can send a HELLO
naming any member of the cluster.

Theory of operation
-------------------
:meth:`HandshakeSlots.acquire` is asked once per connection, after a
well-formed HELLO from a member of the cluster and before any cryptography
(:func:`~pbft.runtime.handshake.accept_handshake`). The :class:`Slot` it gives
is held while the handshake is *unproven*: from HELLO until PROOF arrives
(:func:`awaiting_proof`). Then verifying PROOF is one synchronous step, and
:meth:`HandshakeSlots.release` gives the slot back (again, harmlessly, when the
handshake ends, however it ends).

Slots are kept in *pools*, and a claim counts against these only:

* a claim to be replica ``i``: the pool of replica ``i``, ``max_per_principal``
  slots (2). Claims of other replicas and of clients never touch it, so
  no one can crowd a replica out by claiming *other* identities, and a storm
  of clients never delays the replicas' reconnection (without which the
  cluster cannot recover its speed);
* a claim to be client ``c``: the pool of client ``c`` (``max_per_principal``),
  the pool of all clients (``max_in_progress``, 64) and, given
  ``max_per_host``, the pool of its source address (off by default: many
  clients often share one address, an application server or a NAT, and on
  loopback every client does).

Only members get slots, so the replica pools hold at most
``max_per_principal`` times the number of replicas, the client pools
``max_in_progress``.

A HELLO that finds one of its pools full does not wait and is not simply
refused: it *evicts* that pool's oldest unproven handshake, the one waiting
longest for its PROOF (its :attr:`Slot.scope` is cancelled; it ends with
:class:`~pbft.runtime.handshake.HandshakeEvicted`). Why this works: a genuine
dialer sends PROOF one round trip after HELLO, while a dialer that holds no
key stalls until a deadline. Refusing newcomers would let whoever came first
keep the slots (an earlier version gave 80 slots to 200 HELLOs claiming one
replica, and locked the real replicas out); evicting the oldest keeps the slots
turning over, so a stalling attacker must out-dial each victim continuously,
at least ``max_per_principal`` HELLOs per round trip of the victim for one
identity, 64 per round trip for the clients' common pool, and keep that up
for as long as the victim retries. Stalled handshakes are short-lived anyway:
PROOF must come within :data:`PROOF_TIMEOUT_SECONDS` of WELCOME.

Eviction alone would let a flood of HELLOs thrash the slots: each newcomer
would evict the previous one before any could finish, honest or not. So a
handshake younger than ``min_age_seconds`` (50 ms: a LAN or a nearby region's
round trip) is never evicted: a pool whose oldest member is that young refuses
the newcomer with REFUSED ``busy`` (:data:`~pbft.runtime.handshake.BUSY_REASON`),
and the dialer backs off with full jitter (:class:`~pbft.runtime.links.Backoff`)
and tries again. That bounds the churn of a pool to its size every 50 ms, and
guarantees each handshake that long to finish. A dialer farther away than that
competes with a flood of claims to its own identity only; against claims to
other identities it is safe however far it is.

Everything runs on the node's Trio thread, between awaits: plain integers and
insertion-ordered dicts (oldest first).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

from pbft.runtime.handshake_types import REPLICA, HandshakeError, HandshakeEvicted, Identity

#: Client handshakes a replica has in progress at once, by default.
DEFAULT_MAX_IN_PROGRESS = 64
#: Client handshakes in progress from one source address, by default (None: no such cap).
DEFAULT_MAX_PER_HOST: int | None = None
#: Unproven handshakes in progress claiming one principal (a replica or a client), by default.
DEFAULT_MAX_PER_PRINCIPAL = 2
#: An unproven handshake this young is never evicted: a full pool refuses as busy instead.
DEFAULT_MIN_AGE_SECONDS = 0.05
#: How long after sending WELCOME the acceptor waits for PROOF (a round trip and a signature).
PROOF_TIMEOUT_SECONDS = 2.0

#: A pool's key: a claimed identity, ("host", address) or :data:`_CLIENTS`.
_Pool = tuple[str, int | str]
#: The pool of all client claims.
_CLIENTS: _Pool = ("clients", "")


class Slot:
    """One unproven handshake in progress; :attr:`scope` is cancelled to evict it."""

    __slots__ = ("dialer", "evicted", "host", "owner", "pools", "scope", "since")

    def __init__(
        self, owner: HandshakeSlots, host: str, dialer: Identity, since: float, pools: list[_Pool]
    ) -> None:
        self.owner = owner
        self.host = host
        self.dialer = dialer
        self.since = since
        self.pools = pools
        self.scope = trio.CancelScope()
        self.evicted = False

    def release(self) -> None:
        """Give the slot back (:meth:`HandshakeSlots.release`)."""
        self.owner.release(self)


class HandshakeSlots:
    """Counts unproven handshakes in progress by pool; evicts the oldest, or refuses."""

    def __init__(
        self,
        max_in_progress: int = DEFAULT_MAX_IN_PROGRESS,
        max_per_host: int | None = DEFAULT_MAX_PER_HOST,
        max_per_principal: int = DEFAULT_MAX_PER_PRINCIPAL,
        *,
        min_age_seconds: float = DEFAULT_MIN_AGE_SECONDS,
    ) -> None:
        if max_in_progress < 1 or max_per_principal < 1 or min_age_seconds < 0:
            raise ValueError(
                "handshake slots need max_in_progress >= 1, max_per_principal >= 1, "
                "min_age_seconds >= 0"
            )
        if max_per_host is not None and max_per_host < 1:
            raise ValueError("max_per_host must be at least 1 (or None: no per-host cap)")
        self.max_in_progress = max_in_progress
        self.max_per_host = max_per_host
        self.max_per_principal = max_per_principal
        self.min_age_seconds = min_age_seconds
        #: Handshakes holding a slot now, all roles.
        self.in_progress = 0
        #: The most ever in progress at once.
        self.peak = 0
        #: Handshakes refused as busy so far.
        self.refused = 0
        #: Unproven handshakes evicted for a newer one so far.
        self.evicted = 0
        self._pools: dict[_Pool, dict[Slot, None]] = {}

    def _limits(self, host: str, dialer: Identity) -> list[tuple[_Pool, int]]:
        if dialer[0] == REPLICA:
            return [(dialer, self.max_per_principal)]
        limits: list[tuple[_Pool, int]] = [
            (dialer, self.max_per_principal),
            (_CLIENTS, self.max_in_progress),
        ]
        if self.max_per_host is not None:
            limits.append((("host", host), self.max_per_host))
        return limits

    def acquire(self, host: str, dialer: Identity, now: float | None = None) -> Slot | None:
        """A slot for ``dialer`` (claimed, not proven) at ``host``, evicting the oldest
        unproven handshake of each full pool; None (busy) when one of those is too young."""
        now = trio.current_time() if now is None else now
        limits = self._limits(host, dialer)
        victims: list[Slot] = []
        for pool, limit in limits:
            members = [slot for slot in self._pools.get(pool, ()) if slot not in victims]
            if len(members) < limit:
                continue
            if now - members[0].since < self.min_age_seconds:
                self.refused += 1
                return None
            victims.append(members[0])
        for victim in victims:
            self.evicted += 1
            victim.evicted = True
            victim.scope.cancel()
            self.release(victim)
        slot = Slot(self, host, dialer, now, [pool for pool, _ in limits])
        for pool in slot.pools:
            self._pools.setdefault(pool, {})[slot] = None
        self.in_progress += 1
        self.peak = max(self.peak, self.in_progress)
        return slot

    def release(self, slot: Slot) -> None:
        """Give back ``slot`` (the handshake was proven, ended or was evicted); idempotent."""
        if not slot.pools:
            return
        for pool in slot.pools:
            members = self._pools[pool]
            del members[slot]
            if not members:
                del self._pools[pool]
        slot.pools = []
        self.in_progress -= 1

    def describe(self, host: str, dialer: Identity) -> str:
        """The numbers behind a refusal, for the log."""
        full = [
            f"{len(self._pools.get(pool, ()))} of {limit} for {_pool_name(pool)}"
            for pool, limit in self._limits(host, dialer)
        ]
        return f"{self.in_progress} in progress; " + ", ".join(full)


def _pool_name(pool: _Pool) -> str:
    if pool == _CLIENTS:
        return "all clients"
    kind, name = pool
    return f"host {name}" if kind == "host" else f"{kind} {name}"


@contextmanager
def awaiting_proof(slot: Slot | None, seconds: float = PROOF_TIMEOUT_SECONDS) -> Iterator[None]:
    """Around sending WELCOME and receiving PROOF: the part of the handshake that may be
    evicted (given ``slot``) and must end within ``seconds``."""
    scope = trio.CancelScope() if slot is None else slot.scope
    scope.deadline = trio.current_time() + seconds
    with scope:
        yield
    if slot is not None and slot.evicted and scope.cancelled_caught:
        raise HandshakeEvicted(
            f"evicted after {trio.current_time() - slot.since:.3f} s without PROOF: "
            f"a newer handshake needed the slot"
        )
    if scope.cancelled_caught:
        raise HandshakeError(f"timed out: no PROOF within {seconds:g} s of WELCOME", "timeout")
