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
    Committed,
    Completed,
    Dropped,
    EquivocationDetected,
    Executed,
    Invoke,
    NewViewEntered,
    Prepared,
    Receive,
    SendBytes,
    SendToClient,
    SendToReplicas,
    SetTimer,
    StateTransferred,
    TimerFired,
    ViewChangeStarted,
)
from pbft.evidence import Evidence, verify_evidence
from pbft.journal import MemoryJournal
from pbft.messages import (
    Checkpoint,
    Commit,
    CommitCertificate,
    FetchCommitted,
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
from pbft.replica_recovery import DurableState
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
    "CommitCertificate",
    "Committed",
    "Completed",
    "ConfigError",
    "DecodeError",
    "Dropped",
    "DurableState",
    "Ed25519Signer",
    "Ed25519Verifier",
    "EquivocationDetected",
    "Evidence",
    "Executed",
    "FetchCommitted",
    "FetchState",
    "Invoke",
    "KeyValueStore",
    "KeyedHashSigner",
    "KeyedHashVerifier",
    "MemoryJournal",
    "NewView",
    "NewViewEntered",
    "PrePrepare",
    "Prepare",
    "Prepared",
    "PreparedCertificate",
    "ProtocolParams",
    "Receive",
    "Rejection",
    "Replica",
    "Reply",
    "Request",
    "SendBytes",
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
    "verify_evidence",
]
