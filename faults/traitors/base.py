"""How a traitor is built: an honest replica wrapped by behaviours, switched by triggers.

Theory of operation
-------------------
A :class:`Traitor` stands where a replica would (it has the same
``step(event) -> effects``), holds an honest :class:`pbft.replica.Replica`
and a list of :class:`Behaviour` objects. Each step:

1. every behaviour may alter or swallow the incoming event
   (:meth:`Behaviour.incoming`: a crashed replica hears nothing);
2. the honest replica steps;
3. every behaviour in turn may rewrite each outgoing effect
   (:meth:`Behaviour.outgoing`): send something else, to other replicas, more
   often, later, or not at all. Rewritten messages are signed with the
   traitor's own key (:meth:`Traitor.sign`): a traitor cannot forge another
   replica's signature, only lie with its own.

So the honest code in :mod:`pbft` has no traitor branches (the TLA+ habit of a
separate ``InjectMessage`` action), and behaviours combine: several
behaviours on one replica apply in order.

A driver that traces a run sets :attr:`Traitor.on_forged`: it is then told of
every send that leaves the traitor and that a behaviour made up (a rewritten,
forged, replayed or added message, or junk bytes) with the behaviour's name,
so the trace can mark that frame. Honest sends passed through unchanged (even
to fewer replicas, or later) are not reported.

A :class:`Trigger` says when and to what a behaviour applies: from/until a
sequence number, a view, a time in milliseconds since the run started, for
chosen message types, and which target replicas it treats differently.
Behaviours draw randomness from the traitor's seeded ``random.Random``, so
simulated runs stay reproducible.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from pbft.events import Effect, Event, SendBytes, SendToClient, SendToReplicas, TimerFired
from pbft.journal import MemoryJournal
from pbft.messages import Signed
from pbft.replica import Replica

#: Prefix of the timers behaviours set for themselves; never seen by the replica.
TIMER_PREFIX = "faults/"


class BehaviourError(ValueError):
    """A behaviour or trigger that cannot be built as asked; the message says why."""


def normalise_type(name: str) -> str:
    """'pre_prepare', 'pre-prepare' and 'PRE-PREPARE' all name PRE-PREPARE."""
    return name.strip().upper().replace("_", "-")


@attrs.frozen
class Trigger:
    """When (and to which messages and peers) a behaviour applies. Bounds are inclusive
    for ``from_*``/``at_ms`` and exclusive for ``until_*``; None means unbounded."""

    from_seq: int | None = None
    until_seq: int | None = None
    from_view: int | None = None
    until_view: int | None = None
    at_ms: int | None = None
    until_ms: int | None = None
    types: frozenset[str] = frozenset()
    targets: frozenset[int] = frozenset()

    def active(self, traitor: Traitor, message: Any = None) -> bool:
        now = traitor.now_ms()
        if self.at_ms is not None and now < self.at_ms:
            return False
        if self.until_ms is not None and now >= self.until_ms:
            return False
        view = getattr(message, "view", None)
        if view is None:
            view = getattr(message, "new_view", traitor.replica.view)
        if self.from_view is not None and view < self.from_view:
            return False
        if self.until_view is not None and view >= self.until_view:
            return False
        seq = getattr(message, "seq", None)
        if seq is None:
            seq = traitor.replica.last_executed + 1
        if self.from_seq is not None and seq < self.from_seq:
            return False
        if self.until_seq is not None and seq >= self.until_seq:
            return False
        return not (self.types and message is not None and message.TYPE not in self.types)

    def split(
        self, replicas: Iterable[int], default: Callable[[list[int]], list[int]]
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Divide destinations into (targets, others); ``default`` picks targets if none set."""
        replicas = list(replicas)
        chosen = set(self.targets) if self.targets else set(default(replicas))
        return (
            tuple(r for r in replicas if r in chosen),
            tuple(r for r in replicas if r not in chosen),
        )


def first_half(replicas: list[int]) -> list[int]:
    return replicas[: max(1, len(replicas) // 2)]


class Behaviour:
    """One way of misbehaving. Subclasses override what they need."""

    name: ClassVar[str] = ""
    #: Parameter name -> (type, default). Scenario files and --traitor use these.
    PARAMS: ClassVar[Mapping[str, tuple[type, Any]]] = {}

    def __init__(self, trigger: Trigger | None = None, **params: Any) -> None:
        self.trigger = trigger or Trigger()
        unknown = set(params) - set(self.PARAMS)
        if unknown:
            allowed = ", ".join(sorted(self.PARAMS)) or "none"
            raise BehaviourError(
                f"behaviour {self.name!r} has no parameter {sorted(unknown)[0]!r} "
                f"(its parameters: {allowed})"
            )
        for key, (kind, default) in self.PARAMS.items():
            value = params.get(key, default)
            if value is not None and not _is_instance(value, kind):
                raise BehaviourError(
                    f"behaviour {self.name!r}: {key} must be {kind.__name__}, got {value!r}"
                )
            setattr(self, key, value)
        self.index = 0
        #: Effects the behaviour wants carried out after the current step
        #: whatever happened to the event (say, a timer to restart).
        self.wake: list[Effect] = []

    def incoming(self, traitor: Traitor, event: Event) -> Event | None:
        return event

    def outgoing(self, traitor: Traitor, effect: Effect) -> list[Effect]:
        return [effect]

    def timer(self, traitor: Traitor, name: str) -> list[Effect]:
        return []

    def timer_name(self, what: str) -> str:
        return f"{TIMER_PREFIX}{self.index}/{what}"

    def applies(self, traitor: Traitor, effect: Effect) -> bool:
        """Is ``effect`` a send of a message this behaviour's trigger covers?"""
        if type(effect) not in (SendToReplicas, SendToClient):
            return False
        return self.trigger.active(traitor, effect.message.message)

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.PARAMS)
        return f"{type(self).__name__}({params})"


def _is_instance(value: Any, kind: type) -> bool:
    if kind is int:
        return type(value) is int
    if kind is float:
        return type(value) in (int, float)
    return isinstance(value, kind)


class Traitor:
    """A replica whose inputs and outputs pass through behaviours."""

    def __init__(
        self,
        replica: Replica,
        behaviours: Sequence[Behaviour],
        seed: int = 0,
        clock: Callable[[], int] | None = None,
        rebuild: Callable[[], Replica] | None = None,
        history_messages: int = 512,
    ) -> None:
        self.replica = replica
        self.behaviours = list(behaviours)
        for index, behaviour in enumerate(self.behaviours):
            behaviour.index = index
        self.rng = random.Random(seed)
        self._clock = clock or (lambda: 0)
        self.rebuild = rebuild
        #: The journal a crashed traitor restarts from (see ``crash``).
        self.journal = MemoryJournal()
        #: Messages this replica sent, oldest first: material for ``replay``.
        self.sent: deque[tuple[tuple[int, ...], Signed[Any]]] = deque(maxlen=history_messages)
        #: Every faulty principal's key this traitor may sign with (a
        #: :class:`faults.traitors.forgery.Keyring`); None: its own key only.
        self.keyring: Any = None
        #: Told (behaviour name, effect) of each send a behaviour made up; None: no one.
        self.on_forged: Callable[[str, Effect], None] | None = None

    # The honest replica's state, read through: view, last_executed, counters, ...
    def __getattr__(self, name: str) -> Any:
        return getattr(self.replica, name)

    @property
    def honest(self) -> bool:
        return False

    def now_ms(self) -> int:
        return self._clock()

    def sign(self, message: Any) -> Signed[Any]:
        """Sign as this replica (a traitor holds only its own key)."""
        return self.replica.auth.sign(message)

    def step(self, event: Event) -> list[Effect]:
        if type(event) is TimerFired and event.name.startswith(TIMER_PREFIX):
            index = int(event.name[len(TIMER_PREFIX) :].split("/", 1)[0])
            return self.behaviours[index].timer(self, event.name)
        effects: list[Effect] = []
        for behaviour in self.behaviours:
            incoming = behaviour.incoming(self, event)
            if incoming is None:
                break
            event = incoming
        else:
            effects = self.transform(self.replica.step(event))
        for behaviour in self.behaviours:
            if behaviour.wake:
                if self.on_forged is not None:
                    for effect in behaviour.wake:
                        if type(effect) in _SENDS:
                            self.on_forged(behaviour.name, effect)
                effects += behaviour.wake
                behaviour.wake = []
        return effects

    def transform(self, effects: list[Effect]) -> list[Effect]:
        self.journal.record(self.replica, effects)
        for effect in effects:
            if type(effect) is SendToReplicas:
                self.sent.append((effect.replicas, effect.message))
        if self.on_forged is None:
            for behaviour in self.behaviours:
                effects = [out for effect in effects for out in behaviour.outgoing(self, effect)]
            return effects
        return self._transform_reporting(effects, self.on_forged)

    def _transform_reporting(
        self, effects: list[Effect], report: Callable[[str, Effect], None]
    ) -> list[Effect]:
        """:meth:`transform`, reporting the made-up sends that survive every behaviour."""
        # id of a made-up effect -> (the behaviour that made it, the effect): holding the
        # effect keeps its id from being reused by another one within this step.
        made_by: dict[int, tuple[str, Effect]] = {}
        for behaviour in self.behaviours:
            rewritten: list[Effect] = []
            for effect in effects:
                for out in behaviour.outgoing(self, effect):
                    if out is not effect and _made_up(out, effect):
                        made_by[id(out)] = (behaviour.name, out)
                    elif id(effect) in made_by:
                        made_by[id(out)] = (made_by[id(effect)][0], out)
                    rewritten.append(out)
            effects = rewritten
        for effect in effects:
            entry = made_by.get(id(effect))
            if entry is not None and entry[1] is effect:
                report(entry[0], effect)
        return effects


_SENDS = (SendToReplicas, SendToClient, SendBytes)


def _made_up(out: Effect, original: Effect) -> bool:
    """Is ``out`` a send that carries something other than ``original`` carried?"""
    if type(out) is SendBytes:
        return True
    if type(out) not in _SENDS:
        return False
    return type(original) not in (SendToReplicas, SendToClient) or (
        out.message is not original.message  # type: ignore[union-attr]
    )
