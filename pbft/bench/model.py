"""The ceiling: the most operations per second the design allows on this machine.

It counts what the normal case costs for one batch of ``b`` requests in a
cluster of n = 3f+1 replicas whose replicas and clients share ``cores`` cores,
and prices each item with the same run's calibration (:mod:`pbft.bench.calibrate`):

* every message is one hop (its sender's encoding and write, its receiver's
  read and decoding): b REQUESTs, n-1 PRE-PREPAREs, (n-1)(n-1) PREPAREs (the
  primary sends none), n(n-1) COMMITs, n·b REPLYs, and every K batches n(n-1)
  CHECKPOINTs;
* every message travels on an authenticated channel: one MAC to seal it, one
  to check it (:mod:`pbft.runtime.channel`);
* with ``auth="signatures"`` every message is also signed once by its sender
  and verified once by each receiver, and each request's signature is verified
  by every replica (the backups see it inside the PRE-PREPARE); a client
  verifies the f+1 replies it needs;
* with ``auth="macs"`` (the default) the same, except that REPLYs carry no
  signature: their channel's MAC authenticates them (``signed_replies = 0``).

With fast reads (``fast_reads = 1``) a read is no batch: the client's READ
goes to all n replicas (signed only with ``auth="signatures"``; otherwise its
channel vouches for it) and each replies, so it costs 2n hops and, signed,
1 + n signatures and n + 2f+1 verifications; a write's client then checks
2f+1 replies instead of f+1. The ceiling of a mix is the harmonic one: the
cores divided by the mean cost of an operation.

Nothing is counted for SQLite, scheduling or the service itself, so the ceiling
is an upper bound that no implementation reaches; the measured throughput as a
fraction of it (the *efficiency*) says how much the rest costs.
"""

from __future__ import annotations

import attrs

from pbft.bench.calibrate import Costs

#: How messages are authenticated: "macs" (replies by their channel's MAC, the
#: default) or "signatures" (every message signed; ``signed_replies = 1``).
AUTH_MODES = ("macs", "signatures")


@attrs.frozen
class BatchCost:
    """What one batch of ``batch`` requests costs the whole system."""

    batch: float
    messages: float
    signs: float
    verifies: float
    macs: float = 0.0

    def cpu_seconds(self, costs: Costs) -> float:
        return (
            self.messages * costs.hop_s
            + self.signs * costs.sign_s
            + self.verifies * costs.verify_s
            + self.macs * costs.mac_s
        )


def batch_cost(
    n: int, f: int, batch: float, checkpoint_interval: int, auth: str, reply_quorum: int = 0
) -> BatchCost:
    """Count the messages, signatures and verifications of one batch in the normal case.

    ``reply_quorum``: replies a client checks (default f+1; 2f+1 with fast reads)."""
    if auth not in AUTH_MODES:
        raise ValueError(f"unknown --auth {auth!r}; choose from {', '.join(AUTH_MODES)}")
    if batch <= 0:
        raise ValueError("a batch holds at least one request")
    pre_prepares = n - 1
    prepares = (n - 1) * (n - 1)
    commits = n * (n - 1)
    checkpoints = n * (n - 1) / checkpoint_interval
    requests = batch
    replies = n * batch
    messages = requests + pre_prepares + prepares + commits + replies + checkpoints
    # Signed by the sender: the client's request, the primary's PRE-PREPARE, each
    # backup's PREPARE, each replica's COMMIT, CHECKPOINT and reply.
    signed_replies = replies if auth == "signatures" else 0
    signs = requests + 1 + (n - 1) + n + n / checkpoint_interval + signed_replies
    # Verified by each receiver; the request once by every replica; the client
    # needs f+1 replies.
    reply_verifies = (reply_quorum or f + 1) * batch if auth == "signatures" else 0
    verifies = n * requests + pre_prepares + prepares + commits + checkpoints + reply_verifies
    return BatchCost(batch, messages, signs, verifies, macs=2 * messages)


def read_cost(n: int, f: int, auth: str) -> BatchCost:
    """What one fast read costs: READ to n replicas, n REPLYs, 2f+1 of them checked."""
    messages = 2 * n
    signed = auth == "signatures"
    return BatchCost(
        1, messages, signs=(1 + n) * signed, verifies=(n + 2 * f + 1) * signed, macs=2 * messages
    )


def ceiling_ops(costs: Costs, n: int, f: int, batch: float, checkpoint_interval: int,
                auth: str, cores: int, fast_reads: float = 0.0) -> float:  # fmt: skip
    """Operations per second if ``cores`` cores did nothing but what the count says.

    ``fast_reads``: the share of operations that are fast reads (0 when off)."""
    quorum = 2 * f + 1 if fast_reads else f + 1
    cost = batch_cost(n, f, batch, checkpoint_interval, auth, quorum)
    per_write = cost.cpu_seconds(costs) / batch
    per_read = read_cost(n, f, auth).cpu_seconds(costs)
    return cores / ((1 - fast_reads) * per_write + fast_reads * per_read)


def latency_floor_ms(costs: Costs, n: int, f: int, auth: str) -> float:
    """One request alone: the crypto and hops on its critical path, in milliseconds.

    Client signs; request hop; primary verifies it, signs the PRE-PREPARE; hop;
    a backup verifies it and the request, signs its PREPARE; hop; the primary
    (or any replica) verifies 2f PREPAREs, signs its COMMIT; hop; 2f+1 COMMITs
    verified; reply signed (``signatures``); hop; the client verifies f+1
    replies (``signatures``). Every hop seals and checks one MAC.
    """
    if auth not in AUTH_MODES:
        raise ValueError(f"unknown --auth {auth!r}; choose from {', '.join(AUTH_MODES)}")
    signed = auth == "signatures"
    signs = 4 + signed
    verifies = 1 + 2 + 2 * f + (2 * f + 1) + (f + 1) * signed
    hops = 5
    seconds = (
        signs * costs.sign_s + verifies * costs.verify_s + hops * (costs.hop_s + 2 * costs.mac_s)
    )
    return seconds * 1000
