"""The byte bounds of the runtime's stores, all derived from the configuration.

Theory of operation
-------------------
The Byzantine model says a faulty replica or client may send anything it can
sign; it must not be able to pin this process's memory or disk. Every store
a peer can make grow is therefore bounded in bytes, and every bound comes from
:class:`pbft.config.ProtocolParams` so that one ``[protocol]`` table sizes
them all (docs/runtime.md, "Bounded resources"):

* a frame is at most ``max_message_bytes`` plus :data:`FRAME_OVERHEAD_BYTES`;
  a frame from a client at most :func:`client_frame_bytes` (its signed REQUEST
  or READ), so that each client connection's read buffer stays small;
* a peer link's queue holds at most :func:`link_queue_bytes`: two of the
  largest messages an honest replica sends (a NEW-VIEW,
  :func:`pbft.bounds.message_bounds`), and never less than one
  frame, so anything that may be sent at all fits into an empty queue;
* a client's reply queue holds at most :func:`client_queue_bytes`;
* the evidence folder holds at most :func:`evidence_sender_bytes` per sender.

:func:`check_limits` refuses, with one :class:`~pbft.config.ConfigError`, a
configuration whose largest honest message would not fit in a frame.
"""

from __future__ import annotations

from pbft.bounds import message_bounds
from pbft.config import ClusterConfig, ConfigError, ProtocolParams
from pbft.runtime.framing import LARGEST_ENCODABLE_FRAME_BYTES

#: Room in a frame beyond ``max_message_bytes`` (the signed envelope's encoding).
FRAME_OVERHEAD_BYTES = 1024
#: A peer link's queue holds this many of the largest honest messages.
LINK_QUEUE_LARGEST_MESSAGES = 2
#: Frames a peer link's queue holds, whatever their size.
LINK_QUEUE_FRAMES = 10_000
#: REPLY frames waiting for a slow client before newer ones are dropped.
CLIENT_QUEUE_FRAMES = 1024
#: The smallest evidence budget per sender, whatever the protocol parameters.
EVIDENCE_SENDER_MIN_BYTES = 1024 * 1024


def max_frame_bytes(params: ProtocolParams) -> int:
    """The largest frame replicas and clients send or accept."""
    return params.max_message_bytes + FRAME_OVERHEAD_BYTES


def client_frame_bytes(params: ProtocolParams, config: ClusterConfig) -> int:
    """The largest frame a replica reads from a client: a signed REQUEST or READ.

    A client's channel carries only its own REQUESTs and READs (:mod:`pbft.auth`),
    whose payloads are at most ``max_request_bytes`` (:func:`pbft.bounds.message_bounds`);
    the signature and the envelope take the rest. An honest client refuses to sign
    a larger request (:class:`pbft.client.Client`), so a larger frame ends the
    connection. About 5 KiB at the defaults, instead of :func:`max_frame_bytes`.
    """
    bounds = message_bounds(config, params)
    signed = bounds.request + bounds.signature + FRAME_OVERHEAD_BYTES
    return min(signed, max_frame_bytes(params))


def link_queue_bytes(params: ProtocolParams, config: ClusterConfig) -> int:
    """Bytes one :class:`~pbft.runtime.links.PeerLink` may hold queued."""
    largest = message_bounds(config, params).frame + FRAME_OVERHEAD_BYTES
    return max(LINK_QUEUE_LARGEST_MESSAGES * largest, max_frame_bytes(params))


def client_queue_bytes(params: ProtocolParams) -> int:
    """Bytes of REPLYs queued for one client connection: one frame of the limit."""
    return max_frame_bytes(params)


def evidence_sender_bytes(params: ProtocolParams, config: ClusterConfig) -> int:
    """Bytes of evidence files kept about one sender (one file per phase at most)."""
    return max(EVIDENCE_SENDER_MIN_BYTES, message_bounds(config, params).frame)


def check_limits(params: ProtocolParams, config: ClusterConfig) -> None:
    """Raise ConfigError, in one line, if the runtime could not carry an honest message."""
    frame = max_frame_bytes(params)
    if frame > LARGEST_ENCODABLE_FRAME_BYTES:
        most = LARGEST_ENCODABLE_FRAME_BYTES - FRAME_OVERHEAD_BYTES
        raise ConfigError(
            f"max_message_bytes = {params.max_message_bytes} is too large: a frame's "
            f"4-byte length allows at most {most}"
        )
    largest = message_bounds(config, params).frame
    if largest > params.max_message_bytes:
        raise ConfigError(
            f"max_message_bytes = {params.max_message_bytes} is too small: a NEW-VIEW of "
            f"n = {config.n} replicas may take {largest} bytes (lower batch_size, "
            f"max_request_bytes or log_window, or raise max_message_bytes)"
        )
