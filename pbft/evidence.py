"""Equivocation evidence: two signed messages in which one replica contradicts itself.

Theory of operation
-------------------
PBFT's safety rests on every honest replica saying one thing per slot: a
primary sends one PRE-PREPARE per (v, n), every replica one PREPARE and one
COMMIT per (v, n) (Castro & Liskov §4.2), one CHECKPOINT per n (§4.3) and one
VIEW-CHANGE per new view (§4.4). Every message is signed by its sender, so two
validly signed messages from one sender that disagree about one such slot are
a *proof* that the sender is faulty. Anyone who knows the sender's public key
can check it offline, without trusting whoever kept it.

An honest replica already refuses a second message from a sender for a slot
(the sender-keyed dicts of :class:`pbft.replica.Replica`). At exactly those
places it compares the two with :func:`conflicting`; if they conflict it keeps
an :class:`Evidence` and emits :class:`pbft.events.EquivocationDetected`. It
goes on using the first message: evidence changes what is recorded, never what
is accepted.

What counts as a contradiction (:func:`conflicting`):

* PRE-PREPARE, PREPARE, COMMIT: same sender, same view and seq, another digest;
* CHECKPOINT: same sender and seq, another state digest;
* VIEW-CHANGE: same sender and new view, other content. Content, not bytes:
  two VIEW-CHANGEs that differ only in the signatures they carry (of nested
  CHECKPOINTs and certificates) say the same thing and are no proof.

Checking evidence (:func:`verify_evidence`, :func:`verify_evidence_offline`):
both messages must be signed by the sender's key under the cluster's
domain-separation prefix (:func:`pbft.crypto.signing_prefix`), each signature
over the canonical encoding of exactly the message it claims, and the two
must conflict. A file (:func:`encode_evidence`) carries the sender's public
key so that it can be checked alone; but then it proves only that *whoever
holds that key* equivocated. :func:`check_against_cluster` ties the key to the
replica by the cluster's own configuration (``pbft verify-evidence --cluster``).

Only Ed25519 evidence is written or read: with the simulator's keyed-hash
scheme the "public" key is the secret, so a file would leak it, and anyone
holding it could forge the other message.

Pure: no I/O. The runtime writes the files; ``pbft verify-evidence`` reads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from pbft.config import ClusterConfig, ProtocolParams
from pbft.crypto import (
    ED25519,
    SIGNATURE_BYTES,
    UnsafeKeyError,
    check_public_key,
    make_verifier,
    signing_prefix,
)
from pbft.encoding import DecodeError, decode_signed, encode_message, encode_signed
from pbft.messages import Checkpoint, Commit, Prepare, PrePrepare, Signed, ViewChange

if TYPE_CHECKING:
    from pbft.auth import Authenticator

FORMAT = "pbft-evidence/1"
#: Message types whose sender promises to say one thing per slot.
EVIDENCE_TYPES: tuple[type, ...] = (PrePrepare, Prepare, Commit, Checkpoint, ViewChange)
#: Largest message in a file: the largest a replica accepts with the default tuning.
DEFAULT_MAX_MESSAGE_BYTES = ProtocolParams().max_message_bytes


def file_limit(max_message_bytes: int) -> int:
    """The largest file that can hold two messages of ``max_message_bytes``, in hex."""
    return 4 * max_message_bytes + 64 * 1024


#: Largest file :func:`decode_evidence` reads with the default message limit.
MAX_FILE_BYTES = file_limit(DEFAULT_MAX_MESSAGE_BYTES)
_FIELDS = (
    "format",
    "cluster_id",
    "scheme",
    "sender",
    "sender_public_key",
    "phase",
    "view",
    "seq",
    "first",
    "second",
)
_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})*")

#: (sender, phase, view, seq): the slot one piece of evidence is about.
EvidenceKey = tuple[int, str, int | None, int | None]


class EvidenceError(ValueError):
    """Evidence that cannot even be read: the message names the defect, on one line."""


def _evidence_type(instance: Any, attribute: attrs.Attribute[Any], value: Signed[Any]) -> None:
    if not isinstance(value, Signed) or type(value.message) not in EVIDENCE_TYPES:
        kind = getattr(getattr(value, "message", None), "TYPE", type(value).__name__)
        raise EvidenceError(f"{attribute.name}: a {kind} is not a message one can equivocate with")


@attrs.frozen(slots=True)
class Evidence:
    """Two signed messages from one replica for one slot; ``first`` is the one kept."""

    first: Signed[Any] = attrs.field(validator=_evidence_type)
    second: Signed[Any] = attrs.field(validator=_evidence_type)

    @property
    def sender(self) -> int:
        return int(self.first.message.sender)

    @property
    def phase(self) -> str:
        return str(self.first.message.TYPE)

    @property
    def view(self) -> int | None:
        """The view the slot belongs to: v, or v+1 for a VIEW-CHANGE; None for a CHECKPOINT."""
        message = self.first.message
        if type(message) is ViewChange:
            return message.new_view
        return getattr(message, "view", None)

    @property
    def seq(self) -> int | None:
        """The sequence number of the slot; None for a VIEW-CHANGE."""
        message = self.first.message
        return None if type(message) is ViewChange else int(message.seq)

    @property
    def key(self) -> EvidenceKey:
        return (self.sender, self.phase, self.view, self.seq)

    def describe(self) -> str:
        """``PREPARE (view 0, seq 5)``, ``CHECKPOINT (seq 32)``, ``VIEW-CHANGE (view 2)``."""
        where = []
        if self.view is not None:
            where.append(f"view {self.view}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        return f"{self.phase} ({', '.join(where)})"

    def summary(self) -> dict[str, Any]:
        """A JSON-ready line for reports: who, which phase, which slot."""
        return {"sender": self.sender, "phase": self.phase, "view": self.view, "seq": self.seq}


def evidence_file_name(evidence: Evidence) -> str:
    """``prepare-v0-n5-from-2.json``; a CHECKPOINT has no ``v``, a VIEW-CHANGE no ``n``."""
    parts = [evidence.phase.lower()]
    if evidence.view is not None:
        parts.append(f"v{evidence.view}")
    if evidence.seq is not None:
        parts.append(f"n{evidence.seq}")
    parts.append(f"from-{evidence.sender}.json")
    return "-".join(parts)


# --------------------------------------------------------------------- conflicts


def _slot(message: Any) -> tuple[int | None, int | None]:
    if type(message) is ViewChange:
        return (message.new_view, None)
    if type(message) is Checkpoint:
        return (None, message.seq)
    return (message.view, message.seq)


def _claim(message: Any) -> Any:
    """What the sender says about the slot, the part that must not change."""
    if type(message) is Checkpoint:
        return message.state_digest
    if type(message) is ViewChange:
        return message  # equality ignores signatures, nested ones included
    return message.digest


def why_not_conflicting(a: Signed[Any], b: Signed[Any]) -> str | None:
    """None if ``a`` and ``b`` contradict each other (see the module docstring), else why not."""
    first, second = a.message, b.message
    if type(first) is not type(second):
        return f"the messages are of different types ({first.TYPE} and {second.TYPE})"
    if type(first) not in EVIDENCE_TYPES:
        return f"a {first.TYPE} is not a message one can equivocate with"
    if first.sender != second.sender:
        return f"the messages are from different senders ({first.sender} and {second.sender})"
    if _slot(first) != _slot(second):
        return "the messages are about different slots (view or seq differ)"
    if _claim(first) == _claim(second):
        return "the messages agree"
    return None


def conflicting(a: Signed[Any], b: Signed[Any]) -> bool:
    """True when one sender signed both and they say different things about one slot."""
    return why_not_conflicting(a, b) is None


# -------------------------------------------------------------------- verifying


def _check(
    evidence: Evidence, signature_problem: Callable[[Signed[Any]], str | None]
) -> str | None:
    """Each message is what was signed, the two conflict, and each signature holds."""
    for name, signed in (("first", evidence.first), ("second", evidence.second)):
        if encode_message(signed.message) != signed.payload:
            return f"the {name} message is not the one its signature covers"
    reason = why_not_conflicting(evidence.first, evidence.second)
    if reason is not None:
        return reason
    for name, signed in (("first", evidence.first), ("second", evidence.second)):
        problem = signature_problem(signed)
        if problem is not None:
            return f"the {name} message's signature is not valid ({problem})"
    return None


def verify_evidence(evidence: Evidence, auth: Authenticator) -> str | None:
    """None if ``evidence`` proves equivocation under ``auth``'s cluster keys; else why not."""
    return _check(evidence, auth.verify)


def verify_evidence_offline(
    evidence: Evidence, cluster_id: str, scheme: str, public_key: bytes
) -> str | None:
    """None if both messages are signed by ``public_key`` for ``cluster_id`` and conflict.

    This proves that the holder of ``public_key`` equivocated; whether that is
    the replica named in the messages is for :func:`check_against_cluster`.
    """
    if scheme != ED25519:
        return f"{scheme} signatures prove nothing to a third party; only {ED25519} does"
    try:
        check_public_key(public_key, scheme)
    except UnsafeKeyError as error:
        return f"the sender's public key cannot be trusted: {error}"
    verifier = make_verifier(scheme)

    def signature_problem(signed: Signed[Any]) -> str | None:
        data = signing_prefix(cluster_id, signed.message.TYPE) + signed.payload
        if len(signed.signature) != SIGNATURE_BYTES[scheme] or not verifier.verify(
            public_key, signed.signature, data
        ):
            return f"not made by the sender's key for cluster {cluster_id!r}"
        return None

    return _check(evidence, signature_problem)


def check_against_cluster(
    evidence: Evidence, cluster_id: str, public_key: bytes, config: ClusterConfig
) -> str | None:
    """None if the file's cluster and key are those the configuration gives the sender."""
    if cluster_id != config.cluster_id:
        return f"the evidence is for cluster {cluster_id!r}, not {config.cluster_id!r}"
    if evidence.sender >= config.n:
        return f"replica {evidence.sender} is not a member of the cluster"
    if public_key != config.replica_keys[evidence.sender]:
        return f"the key in the file is not replica {evidence.sender}'s key in the cluster"
    return None


# ------------------------------------------------------------------------ files


def encode_evidence(evidence: Evidence, config: ClusterConfig) -> bytes:
    """The canonical file form: a UTF-8 JSON document (see :func:`decode_evidence`)."""
    if config.scheme != ED25519:
        raise ValueError(f"{config.scheme} evidence cannot be shown to anyone: its key is secret")
    if evidence.sender >= config.n:
        raise ValueError(f"replica {evidence.sender} is not a member of the cluster")
    document = {
        "format": FORMAT,
        "cluster_id": config.cluster_id,
        "scheme": config.scheme,
        "sender": evidence.sender,
        "sender_public_key": config.replica_keys[evidence.sender].hex(),
        "phase": evidence.phase,
        "view": evidence.view,
        "seq": evidence.seq,
        "first": encode_signed(evidence.first).hex(),
        "second": encode_signed(evidence.second).hex(),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def decode_evidence(
    data: bytes, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[Evidence, str, str, bytes]:
    """Read a file: (evidence, cluster_id, scheme, sender_public_key).

    Raises :class:`EvidenceError` for anything that is not exactly what
    :func:`encode_evidence` writes. Whether the evidence *proves* anything is
    the verifiers' question, not this one's.
    """
    limit = file_limit(max_message_bytes)
    if len(data) > limit:
        raise EvidenceError(f"{len(data)} bytes is more than evidence ever takes ({limit})")
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as error:
        raise EvidenceError(_one_line(f"not a JSON document: {error}")) from None
    if not isinstance(document, dict):
        raise EvidenceError("not a JSON object")
    if document.get("format") != FORMAT:
        raise EvidenceError(f"format is {_shown(document.get('format'))}, expected {FORMAT!r}")
    missing = [name for name in _FIELDS if name not in document]
    unknown = sorted(set(document) - set(_FIELDS))
    if missing:
        raise EvidenceError(f"missing fields: {', '.join(missing)}")
    if unknown:
        raise EvidenceError(f"unknown fields: {', '.join(_shown(name) for name in unknown)}")
    cluster_id = _text(document, "cluster_id")
    if not cluster_id or "|" in cluster_id:
        raise EvidenceError("cluster_id must be a non-empty string without '|'")
    scheme = _text(document, "scheme")
    if scheme != ED25519:
        raise EvidenceError(f"scheme is {_shown(scheme)}: only {ED25519!r} evidence is a proof")
    public_key = _hex(document, "sender_public_key", 64)
    if len(public_key) != 32:
        raise EvidenceError("sender_public_key: an Ed25519 public key is 32 bytes")
    first = _signed(document, "first", max_message_bytes)
    second = _signed(document, "second", max_message_bytes)
    evidence = Evidence(first, second)  # may raise EvidenceError: not an evidence type
    header = (
        _natural(document, "sender"),
        _text(document, "phase"),
        _natural(document, "view", optional=True),
        _natural(document, "seq", optional=True),
    )
    if header != evidence.key:
        raise EvidenceError(
            f"sender, phase, view and seq {list(header)} do not describe the first message "
            f"{list(evidence.key)}"
        )
    return evidence, cluster_id, scheme, public_key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("a field appears twice")
    return document


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(document: dict[str, Any], name: str) -> str:
    value = document[name]
    if type(value) is not str:
        raise EvidenceError(f"{name} must be a string, not {_shown(value)}")
    return value


def _natural(document: dict[str, Any], name: str, optional: bool = False) -> int | None:
    value = document[name]
    if value is None and optional:
        return None
    if type(value) is not int or not 0 <= value < 2**63:
        raise EvidenceError(f"{name} must be an integer in 0..2**63-1, not {_shown(value)}")
    return value


def _hex(document: dict[str, Any], name: str, max_characters: int) -> bytes:
    value = _text(document, name)
    if len(value) > max_characters:
        raise EvidenceError(f"{name} is {len(value)} hex digits long, more than {max_characters}")
    if not _LOWER_HEX.fullmatch(value):
        raise EvidenceError(f"{name} must be an even number of lowercase hex digits (0-9, a-f)")
    return bytes.fromhex(value)


def _signed(document: dict[str, Any], name: str, max_message_bytes: int) -> Signed[Any]:
    data = _hex(document, name, 2 * (max_message_bytes + 1024))
    try:
        return decode_signed(data, max_message_bytes + 1024)
    except DecodeError as error:
        raise EvidenceError(_one_line(f"{name}: not a signed message: {error}")) from None
