"""The traitors' repertoire: one :class:`~faults.traitors.base.Behaviour` per way of lying.

Each behaviour rewrites what an honest replica sends (and, for ``crash``, what
it hears). Rewritten messages carry the traitor's own signature. Parameters
have defaults, so ``make_behaviour("equivocate")`` is a complete traitor;
``targets`` in the trigger chooses which peers are treated differently.

=============  ===============================================================
equivocate     different PRE-PREPAREs (as primary) or PREPARE/COMMIT/
               VIEW-CHANGE contents (as backup) to the targets than to others
lie            wrong digests, checkpoint digests, reply results, or a
               VIEW-CHANGE that hides or invents prepared certificates
stall          withhold its messages, or hold them back ``ms`` milliseconds
mute           send nothing at all
crash          stop (hear and say nothing); restart after ``restart_ms``
replay         resend old, validly signed messages from earlier views or seqs
forge          messages with bad signatures, or claiming another replica
flood          many junk or duplicate messages
selective      talk only to chosen replicas (targets) and clients
mutate         ByzzFuzz-style small corruption: view ±1, seq ±1 or another
               request's digest, re-signed
byzantine      anything the faulty keys can sign, to anyone, at any time
               (:mod:`faults.traitors.byzantine`)
=============  ===============================================================
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import attrs

from faults.traitors.base import Behaviour, BehaviourError, Traitor, Trigger, first_half
from faults.traitors.byzantine import Byzantine
from pbft.events import (
    Effect,
    Event,
    SendBytes,
    SendToClient,
    SendToReplicas,
    SetTimer,
)
from pbft.messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Reply,
    Signed,
    ViewChange,
    batch_digest,
)


def _other_digest(digest: bytes) -> bytes:
    return hashlib.sha256(b"lie|" + digest).digest()


def _send(replicas: tuple[int, ...], message: Signed[Any]) -> list[Effect]:
    return [SendToReplicas(replicas, message)] if replicas else []


class Equivocate(Behaviour):
    """Tell the targets one thing and everyone else another, for the same (view, seq)."""

    name = "equivocate"

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if type(effect) is not SendToReplicas or not self.applies(traitor, effect):
            return [effect]
        message = effect.message.message
        forked = self._fork(message)
        if forked is None:
            return [effect]
        targets, others = self.trigger.split(effect.replicas, first_half)
        return _send(targets, traitor.sign(forked)) + _send(others, effect.message)

    @staticmethod
    def _fork(message: Any) -> Any:
        kind = type(message)
        if kind is PrePrepare:
            # Another batch: the same requests but the last, or a null request.
            batch = message.batch[:-1]
            return attrs.evolve(message, batch=batch, digest=batch_digest(batch))
        if kind in (Prepare, Commit):
            return attrs.evolve(message, digest=_other_digest(message.digest))
        if kind is ViewChange and message.prepared:
            return attrs.evolve(message, prepared=())
        return None


class Lie(Behaviour):
    """Say false things with a valid signature. ``what``: digest, checkpoint, result,
    view-change (hide certificates), invent (claim certificates that do not exist) or
    new-view (as new primary, re-issue a null request where V demands a request);
    ``all`` (the default) lies in every way at once."""

    name = "lie"
    PARAMS: ClassVar = {"what": (str, "all")}
    CHOICES = ("all", "digest", "checkpoint", "result", "view-change", "invent", "new-view")

    def __init__(self, trigger: Trigger | None = None, **params: Any) -> None:
        super().__init__(trigger, **params)
        if self.what not in self.CHOICES:
            raise BehaviourError(f"lie: what must be one of {', '.join(self.CHOICES)}")

    def _lies_about(self, topic: str) -> bool:
        return self.what in ("all", topic)

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if not self.applies(traitor, effect):
            return [effect]
        message = effect.message.message
        kind = type(message)
        if kind in (Prepare, Commit) and self._lies_about("digest"):
            lie = attrs.evolve(message, digest=_other_digest(message.digest))
        elif kind is Checkpoint and self._lies_about("checkpoint"):
            lie = attrs.evolve(message, state_digest=_other_digest(message.state_digest))
        elif kind is Reply and self._lies_about("result"):
            lie = attrs.evolve(message, result=b"\xa3lie")
        elif kind is ViewChange and self._lies_about("view-change"):
            lie = attrs.evolve(message, prepared=())
        elif kind is ViewChange and self.what == "invent":
            lie = attrs.evolve(message, prepared=(*message.prepared, self._invented(traitor)))
        elif kind is NewView and self._lies_about("new-view"):
            lie = self._drop_a_request(traitor, message)
            if lie is None:
                return [effect]
        else:
            return [effect]
        return [attrs.evolve(effect, message=traitor.sign(lie))]

    @staticmethod
    def _drop_a_request(traitor: Traitor, new_view: NewView) -> NewView | None:
        """A NEW-VIEW whose O replaces the first re-issued request by a null request:
        O no longer follows from V, which honest backups must notice (§4.4)."""
        pre_prepares = list(new_view.pre_prepares)
        for index, signed in enumerate(pre_prepares):
            if signed.message.batch:
                null = attrs.evolve(signed.message, batch=(), digest=batch_digest(()))
                pre_prepares[index] = traitor.sign(null)
                return attrs.evolve(new_view, pre_prepares=tuple(pre_prepares))
        return None

    @staticmethod
    def _invented(traitor: Traitor) -> PreparedCertificate:
        """A certificate for a null request nobody prepared, 'signed' by others with our key."""
        seq = traitor.replica.low_watermark + 1
        view = max(traitor.replica.view - 1, 0)
        pre_prepare = traitor.sign(
            PrePrepare(view, seq, batch_digest(()), (), traitor.config.primary(view))
        )
        prepares = tuple(
            traitor.sign(Prepare(view, seq, batch_digest(()), sender))
            for sender in range(traitor.config.n)
            if sender != traitor.config.primary(view)
        )[: 2 * traitor.config.f]
        return PreparedCertificate(pre_prepare, prepares)


class Stall(Behaviour):
    """Withhold messages (``ms`` unset) or deliver them ``ms`` milliseconds late."""

    name = "stall"
    PARAMS: ClassVar = {"ms": (int, None)}

    def __init__(self, trigger: Trigger | None = None, **params: Any) -> None:
        super().__init__(trigger, **params)
        self._held: dict[str, list[Effect]] = {}
        self._count = 0

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if not self.applies(traitor, effect):
            return [effect]
        if self.ms is None:
            return []
        self._count += 1
        name = self.timer_name(str(self._count))
        self._held[name] = [effect]
        return [SetTimer(name, self.ms)]

    def timer(self, traitor: Traitor, name: str) -> list[Effect]:
        return self._held.pop(name, [])


class Mute(Behaviour):
    """Send nothing: no votes, no replies, no checkpoints."""

    name = "mute"

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if type(effect) in (SendToReplicas, SendToClient, SendBytes) and self.trigger.active(
            traitor, getattr(getattr(effect, "message", None), "message", None)
        ):
            return []
        return [effect]


class Crash(Behaviour):
    """Stop at the trigger: hear nothing, say nothing, forget timers. With
    ``restart_ms``, come back that long after, recovered from its journal."""

    name = "crash"
    PARAMS: ClassVar = {"restart_ms": (int, None)}

    def __init__(self, trigger: Trigger | None = None, **params: Any) -> None:
        super().__init__(trigger, **params)
        self.crashed_at: int | None = None
        self.restarted = False

    def _down(self, traitor: Traitor) -> bool:
        if self.restarted:
            return False
        if self.crashed_at is None and self.trigger.active(traitor):
            self.crashed_at = traitor.now_ms()
            if self.restart_ms is not None:
                # The only thing a crashed replica still asks for: its restart.
                self.wake.append(SetTimer(self.timer_name("restart"), self.restart_ms))
        return self.crashed_at is not None

    def incoming(self, traitor: Traitor, event: Event) -> Event | None:
        return None if self._down(traitor) else event

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        return [] if self._down(traitor) else [effect]

    def timer(self, traitor: Traitor, name: str) -> list[Effect]:
        if self.restarted or traitor.rebuild is None or self.crashed_at is None:
            return []
        self.restarted = True
        traitor.replica = traitor.rebuild()
        return traitor.transform(traitor.replica.recover(traitor.journal.load()))


class Replay(Behaviour):
    """With each message it sends, also resend ``count`` old ones it sent before
    (validly signed, from earlier views or sequence numbers) to the targets."""

    name = "replay"
    PARAMS: ClassVar = {"count": (int, 3)}

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if type(effect) is not SendToReplicas or not self.applies(traitor, effect):
            return [effect]
        current = effect.message.message
        old = [message for _, message in traitor.sent if _is_older(message.message, current)]
        if not old:
            return [effect]
        targets, _ = self.trigger.split(effect.replicas, lambda replicas: replicas)
        picks = [old[traitor.rng.randrange(len(old))] for _ in range(self.count)]
        return [effect, *(SendToReplicas(targets, message) for message in picks if targets)]


def _is_older(message: Any, current: Any) -> bool:
    view = getattr(message, "view", getattr(message, "new_view", 0))
    now_view = getattr(current, "view", getattr(current, "new_view", 0))
    return view < now_view or getattr(message, "seq", 0) < getattr(current, "seq", 0)


class Forge(Behaviour):
    """Send forgeries beside its real messages: ``mode`` = bad-signature (the same
    message with a corrupted signature) or impersonate (a message claiming another
    replica as sender, signed with its own key)."""

    name = "forge"
    PARAMS: ClassVar = {"mode": (str, "impersonate")}

    def __init__(self, trigger: Trigger | None = None, **params: Any) -> None:
        super().__init__(trigger, **params)
        if self.mode not in ("bad-signature", "impersonate"):
            raise BehaviourError("forge: mode must be bad-signature or impersonate")

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if type(effect) is not SendToReplicas or not self.applies(traitor, effect):
            return [effect]
        signed = effect.message
        if self.mode == "bad-signature":
            broken = bytes(b ^ 0xFF for b in signed.signature)
            forged = Signed(signed.message, broken, signed.payload)
        else:
            message = signed.message
            if not hasattr(message, "sender"):
                return [effect]
            victim = (message.sender + 1 + traitor.rng.randrange(traitor.config.n - 1)) % (
                traitor.config.n
            )
            forged = traitor.sign(attrs.evolve(message, sender=victim))
        targets, _ = self.trigger.split(effect.replicas, lambda replicas: replicas)
        return [effect, *_send(targets, forged)]


class Flood(Behaviour):
    """With each message, also send ``count`` junk byte strings (``junk``) or copies."""

    name = "flood"
    PARAMS: ClassVar = {"count": (int, 10), "junk": (bool, True), "size": (int, 256)}

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if type(effect) is not SendToReplicas or not self.applies(traitor, effect):
            return [effect]
        targets, _ = self.trigger.split(effect.replicas, lambda replicas: replicas)
        if not targets:
            return [effect]
        extra: list[Effect] = []
        for _ in range(self.count):
            if self.junk:
                data = traitor.rng.randbytes(traitor.rng.randrange(1, self.size + 1))
                extra.append(SendBytes(targets, data))
            else:
                extra.append(SendToReplicas(targets, effect.message))
        return [effect, *extra]


class Selective(Behaviour):
    """Talk only to the target replicas (default: the first half) and to the clients
    listed in ``clients`` (default: all of them)."""

    name = "selective"
    PARAMS: ClassVar = {"clients": (list, None)}

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if not self.applies(traitor, effect):
            return [effect]
        if type(effect) is SendToClient:
            if self.clients is None or effect.client in self.clients:
                return [effect]
            return []
        targets, _ = self.trigger.split(effect.replicas, first_half)
        return _send(targets, effect.message)


class Mutate(Behaviour):
    """ByzzFuzz-style small-scope mutation: with probability ``rate``, a message goes out
    with view ±1, seq ±1 or another request's digest, re-signed with the traitor's key."""

    name = "mutate"
    PARAMS: ClassVar = {"rate": (float, 0.3)}

    def __init__(self, trigger: Trigger | None = None, **params: Any) -> None:
        super().__init__(trigger, **params)
        if not 0 <= self.rate <= 1:
            raise BehaviourError("mutate: rate must be between 0 and 1")

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        if type(effect) is not SendToReplicas or not self.applies(traitor, effect):
            return [effect]
        if traitor.rng.random() >= self.rate:
            return [effect]
        message = effect.message.message
        mutated = self._mutate(traitor, message)
        if mutated is None:
            return [effect]
        targets, others = self.trigger.split(effect.replicas, lambda replicas: replicas)
        return _send(targets, traitor.sign(mutated)) + _send(others, effect.message)

    @staticmethod
    def _mutate(traitor: Traitor, message: Any) -> Any:
        rng = traitor.rng
        options = []
        if hasattr(message, "view"):
            options += ["view+1", "view-1"]
        if hasattr(message, "seq"):
            options += ["seq+1", "seq-1"]
        if hasattr(message, "digest") and traitor.sent:
            options.append("digest")
        if not options:
            return None
        choice = options[rng.randrange(len(options))]
        if choice.startswith("view"):
            return attrs.evolve(message, view=max(0, message.view + (1 if "+" in choice else -1)))
        if choice.startswith("seq"):
            return attrs.evolve(message, seq=max(0, message.seq + (1 if "+" in choice else -1)))
        digests = [
            signed.message.digest
            for _, signed in traitor.sent
            if getattr(signed.message, "digest", message.digest) != message.digest
        ]
        if not digests:
            return None
        return attrs.evolve(message, digest=digests[rng.randrange(len(digests))])


BEHAVIOURS: dict[str, type[Behaviour]] = {
    cls.name: cls
    for cls in (
        Equivocate, Lie, Stall, Mute, Crash, Replay, Forge, Flood, Selective, Mutate, Byzantine,
    )
}  # fmt: skip


def make_behaviour(name: str, trigger: Trigger | None = None, **params: Any) -> Behaviour:
    """Build a behaviour by name; :class:`BehaviourError` names what is wrong."""
    cls = BEHAVIOURS.get(name)
    if cls is None:
        raise BehaviourError(f"unknown behaviour {name!r} (choose one of: {', '.join(BEHAVIOURS)})")
    return cls(trigger, **params)
