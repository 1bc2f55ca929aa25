"""pbft: Practical Byzantine Fault Tolerance (Castro & Liskov), in clear Python.

The protocol core is sans-IO: :class:`Replica` and :class:`Client` take events
and return effects. Drivers (the in-memory :mod:`pbft.simnet`, the Trio
runtime) carry the effects out.
"""

from pbft.auth import Authenticator, Rejection
from pbft.client import Client, ClientBusy
from pbft.config import ClusterConfig, ConfigError, ProtocolParams
from pbft.crypto import (
    Ed25519Signer,
    Ed25519Verifier,
    KeyedHashSigner,
    KeyedHashVerifier,
    UnsafeKeyError,
    check_public_key,
)
from pbft.encoding import DecodeError, decode_signed, encode_message, encode_signed
from pbft.events import (
    CancelTimer,
    CheckpointStable,
    Completed,
    Dropped,
    Executed,
    Invoke,
    NewViewEntered,
    Receive,
    SendToClient,
    SendToReplicas,
    SetTimer,
    StateTransferred,
    TimerFired,
    ViewChangeStarted,
)
from pbft.messages import (
    Checkpoint,
    Commit,
    FetchState,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Reply,
    Request,
    Signed,
    StateSnapshot,
    ViewChange,
)
from pbft.replica import Replica
from pbft.service import KeyValueStore, Service

__all__ = [
    "Authenticator",
    "CancelTimer",
    "Checkpoint",
    "CheckpointStable",
    "Client",
    "ClientBusy",
    "ClusterConfig",
    "Commit",
    "Completed",
    "ConfigError",
    "DecodeError",
    "Dropped",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Executed",
    "FetchState",
    "Invoke",
    "KeyValueStore",
    "KeyedHashSigner",
    "KeyedHashVerifier",
    "NewView",
    "NewViewEntered",
    "PrePrepare",
    "Prepare",
    "PreparedCertificate",
    "ProtocolParams",
    "Receive",
    "Rejection",
    "Replica",
    "Reply",
    "Request",
    "SendToClient",
    "SendToReplicas",
    "Service",
    "SetTimer",
    "Signed",
    "StateSnapshot",
    "StateTransferred",
    "TimerFired",
    "UnsafeKeyError",
    "ViewChange",
    "ViewChangeStarted",
    "check_public_key",
    "decode_signed",
    "encode_message",
    "encode_signed",
]
