"""Cluster membership and protocol parameters, as plain immutable values.

:class:`ClusterConfig` is who is in the cluster (f, the replicas' and clients'
public keys); :class:`ProtocolParams` is how the protocol is tuned. Loading
either from a file is the runtime's business; this module only validates.
Time is counted in abstract *ticks*: the driver decides how long one lasts
(the Trio runtime uses one millisecond).
"""

from __future__ import annotations

import attrs

from pbft.crypto import ED25519, SCHEMES, UnsafeKeyError, check_public_key


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the problem."""


#: How hard a replica's journal insists that a step is on disk before its messages
#: leave (``cluster.toml``'s ``[storage] durability``, ``pbft replica --durability``).
#: "normal": SQLite ``synchronous=NORMAL`` (WAL synced only at checkpoints): survives
#: the process being killed, not an operating-system crash or power loss.
#: "full": ``synchronous=FULL`` (the WAL synced at every commit): survives power loss.
#: docs/deploy.md, "Durability", says what each guarantees.
DURABILITY_LEVELS = ("normal", "full")
DEFAULT_DURABILITY = "normal"


def check_durability(value: object) -> str:
    """``value`` if it is a durability level; else :class:`ConfigError` naming the choices."""
    if value not in DURABILITY_LEVELS:
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise ConfigError(
            f"durability must be one of {', '.join(map(repr, DURABILITY_LEVELS))}, got {shown}"
        )
    return value  # type: ignore[return-value]


@attrs.frozen(slots=True)
class ClusterConfig:
    """The members of one PBFT cluster.

    Replica ``i`` has public key ``replica_keys[i]``; client ``c`` has
    ``client_keys[c]``. ``n`` may exceed 3f+1 but never fall below it.
    """

    cluster_id: str
    f: int
    replica_keys: tuple[bytes, ...] = attrs.field(converter=tuple)
    client_keys: tuple[bytes, ...] = attrs.field(converter=tuple)
    scheme: str = ED25519

    def __attrs_post_init__(self) -> None:
        if not self.cluster_id or "|" in self.cluster_id:
            raise ConfigError("cluster_id must be a non-empty string without '|'")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown signature scheme {self.scheme!r}")
        if self.f < 0:
            raise ConfigError(f"f must be at least 0, got {self.f}")
        if len(self.replica_keys) < 3 * self.f + 1:
            raise ConfigError(
                f"n = {len(self.replica_keys)} replicas cannot tolerate f = {self.f}: "
                f"PBFT needs n >= 3f+1 = {3 * self.f + 1}"
            )
        seen: dict[bytes, str] = {}
        named = [(f"replica {i}", key) for i, key in enumerate(self.replica_keys)]
        named += [(f"client {c}", key) for c, key in enumerate(self.client_keys)]
        for name, key in named:
            try:
                check_public_key(key, self.scheme)
            except UnsafeKeyError as error:
                raise ConfigError(f"{name}: {error}") from None
            if key in seen:
                raise ConfigError(f"{name} has the same public key as {seen[key]}")
            seen[key] = name

    @property
    def n(self) -> int:
        return len(self.replica_keys)

    @property
    def quorum(self) -> int:
        """2f+1 when n = 3f+1; in general ceil((n+f+1)/2), so that any two quorums
        share at least f+1 replicas, one of them honest."""
        return (self.n + self.f) // 2 + 1

    @property
    def weak_quorum(self) -> int:
        """f+1: at least one of them is honest."""
        return self.f + 1

    def primary(self, view: int) -> int:
        """The primary of a view is v mod n (§4.1)."""
        return view % self.n


@attrs.frozen(slots=True)
class ProtocolParams:
    """Tuning of the protocol; defaults suit a local cluster with 1 tick = 1 ms."""

    #: K: a checkpoint every K sequence numbers (§4.3).
    checkpoint_interval: int = 32
    #: L: the window of sequence numbers above the low watermark h (§4.2).
    log_window: int = 64
    #: Most requests in one PRE-PREPARE; 1 disables batching.
    batch_size: int = 16
    #: Most batches the primary keeps in flight (assigned, not yet executed);
    #: requests arriving meanwhile queue up and go out together (§4.2).
    max_inflight_batches: int = 4
    #: Adaptive batching: a batch that is not full goes out only while fewer than
    #: this many batches are in flight. A lone client is never delayed (nothing is
    #: in flight when its request arrives); under load requests gather while a
    #: batch is agreed on, and batches grow towards ``batch_size``. Set it to
    #: ``max_inflight_batches`` to send every request as soon as a slot is free.
    partial_batches_in_flight: int = 1
    #: 1: every REPLY is signed. 0 (the default): a REPLY is authenticated by the
    #: channel it travels on (the runtime's connections carry a MAC keyed per
    #: session, :mod:`pbft.runtime.channel`), as a point-to-point message that
    #: never has to convince a third party. Clients and replicas must agree.
    signed_replies: int = 0
    #: 1: clients send read-only operations as READs that every replica answers at
    #: once, without ordering (§5.1.3), and then need 2f+1 matching replies for
    #: every operation, writes included (:mod:`pbft.client`). 0 (the default):
    #: every operation is ordered and f+1 matching replies suffice. Replicas answer
    #: READs either way; the setting is for the clients, which must all agree.
    fast_reads: int = 0
    #: 1: only a request's designated replier (``messages.designated_replier``) sends
    #: the result; the others send its SHA-256 (a REPLY-DIGEST), which saves bytes
    #: when results are longer than 32 (§5.1.1). 0 (the default): every replica sends
    #: the result. Clients take either; a cached reply resent on retransmission is
    #: always in full.
    digest_replies: int = 0
    #: T: how long a backup waits for a pending request before a view change (§4.4).
    view_change_timeout_ticks: int = 1000
    #: How long before a state fetch is retried with other peers.
    state_transfer_timeout_ticks: int = 500
    #: Largest signed REQUEST accepted; a PRE-PREPARE carries at most
    #: ``batch_size`` of them, and VIEW-CHANGE and NEW-VIEW carry whole windows
    #: of PRE-PREPAREs, so this bounds every message (see :mod:`pbft.bounds`).
    max_request_bytes: int = 4096
    #: Largest encoded message accepted.
    max_message_bytes: int = 64 * 1024 * 1024
    #: Messages of a view not yet entered that are kept until its NEW-VIEW, in all
    #: (each sender gets an n-th share of both figures; see pbft.replica_gate).
    future_buffer_messages: int = 1024
    #: Bytes of such messages kept, in all.
    future_buffer_bytes: int = 8 * 1024 * 1024
    #: Signature checks remembered (32 bytes each); the cache empties when full.
    verified_cache_entries: int = 8192
    #: Admission control (runtime only, :mod:`pbft.runtime.admission`): a replica stops
    #: reading its client connections while its core holds this many requests received
    #: and not yet executed (``Replica.requests_waiting``), and resumes below it; requests
    #: wait in the socket buffers, never dropped. The default, two pipelines' worth
    #: (2 x ``batch_size`` x ``max_inflight_batches``, 128), keeps the batches in flight
    #: full plus as many queued behind them, so the bound costs no throughput; a bound at
    #: least the number of clients never triggers. The core never reads it.
    admission_requests: int = attrs.field(
        default=attrs.Factory(
            lambda params: 2 * params.batch_size * params.max_inflight_batches, takes_self=True
        )
    )

    def __attrs_post_init__(self) -> None:
        if self.checkpoint_interval < 1:
            raise ConfigError("checkpoint_interval must be at least 1")
        if self.log_window < self.checkpoint_interval:
            raise ConfigError("log_window must be at least checkpoint_interval")
        if self.log_window % self.checkpoint_interval:
            raise ConfigError("log_window must be a multiple of checkpoint_interval")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        if self.max_inflight_batches < 1:
            raise ConfigError("max_inflight_batches must be at least 1")
        if not 1 <= self.partial_batches_in_flight <= self.max_inflight_batches:
            raise ConfigError("partial_batches_in_flight must lie in [1, max_inflight_batches]")
        if self.digest_replies not in (0, 1):
            raise ConfigError("digest_replies must be 0 (full results from all) or 1")
        if self.fast_reads not in (0, 1):
            raise ConfigError("fast_reads must be 0 (every operation ordered) or 1")
        if self.signed_replies not in (0, 1):
            raise ConfigError("signed_replies must be 0 (replies MAC-authenticated) or 1 (signed)")
        for name in ("view_change_timeout_ticks", "state_transfer_timeout_ticks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.max_request_bytes < 128:
            raise ConfigError("max_request_bytes must be at least 128")
        if self.max_message_bytes < 1024:
            raise ConfigError("max_message_bytes must be at least 1024")
        if self.admission_requests < 1:
            raise ConfigError(
                "admission_requests must be at least 1 (requests a replica holds before "
                "it stops reading its clients)"
            )
        for name in ("future_buffer_messages", "future_buffer_bytes", "verified_cache_entries"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be at least 0")
