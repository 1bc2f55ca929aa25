"""A simulated run written in the trace format of :mod:`pbft.trace.format` (``docs/trace.md``).

:class:`SimTrace` watches a :class:`pbft.simnet.SimCluster` through hooks and writes what it
sees; it changes nothing the nodes or the network do, draws no randomness, and is not installed
at all when no trace is asked for (tracing then costs nothing). It listens to:

* ``Network.on_step`` (chained like the other hooks): each node's effects become ``send``
  events (the frame's bytes encoded exactly as the network encodes them, so frame ids match),
  protocol progress, and the clients' ``invoke``/``complete``; a step caused by a delivery
  first gets its ``receive`` event, accepted unless the step reported a ``Dropped`` of the
  frame's type (the core reports a refused message that way, in the step that refused it);
* ``Network.on_deliver``: which frame, from whom, is handed to which node now;
* ``Network.on_transmit``: the network's decision for each frame; a dropped, duplicated or
  delayed frame becomes a ``fault`` event (loss, duplicate, delay) naming the network rule
  that did it (``faults.traitors.network``'s per-rule counters say which ones changed);
* ``Traitor.on_forged``: the sends a behaviour made up, marked ``fault: traitor``;
* :meth:`SimTrace.fault` for crashes and restarts, and the partitions' start and end times
  (written when the run's clock passes them);
* :meth:`SimTrace.violation` after the run, with the sequence numbers at which honest
  replicas executed different batches.

Times are the simulator's ticks, which are milliseconds. The output is a function of the run,
so the same plan and seed give a byte-identical file.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from faults.traitors.base import Traitor, Trigger
from faults.traitors.clients import ByzantineClient
from faults.traitors.network import PARTITION, NetworkFaults, NetworkRule
from pbft.encoding import encode_signed
from pbft.events import (
    CheckpointStable,
    Committed,
    Completed,
    Dropped,
    EquivocationDetected,
    Executed,
    NewViewEntered,
    Prepared,
    SendBytes,
    SendToClient,
    SendToReplicas,
    StateTransferred,
    ViewChangeStarted,
)
from pbft.simnet import Address, SimCluster
from pbft.trace.format import (
    RAW_BYTES,
    TraceWriter,
    digest_prefix,
    frame_id,
    make_header,
    message_fields,
    node_name,
    operation_fields,
    result_value,
)


def traitor_text(behaviour: str, trigger: Trigger, params: Iterable[tuple[str, Any]]) -> str:
    """A behaviour as ``--traitor I:`` would take it: ``equivocate:targets=1+2``."""
    values = [
        (field.name, getattr(trigger, field.name))
        for field in attrs.fields(Trigger)
        if getattr(trigger, field.name) not in (None, frozenset())
    ]
    values += sorted(params)
    text = ",".join(f"{key}={_spec_value(value)}" for key, value in values)
    return f"{behaviour}:{text}" if text else behaviour


def _spec_value(value: Any) -> str:
    if isinstance(value, frozenset | set | list | tuple):
        return "+".join(str(item).lower() for item in sorted(value, key=str))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sim_header(plan: Any, seed: int, description: Any) -> dict[str, Any]:
    """The header of a simulated run: ``plan`` a SimPlan, ``description`` its JSON form."""
    traitors: dict[int, list[str]] = {}
    for traitor in plan.traitors:
        text = traitor_text(traitor.behaviour, traitor.trigger, traitor.params)
        traitors.setdefault(traitor.replica, []).append(text)
    if plan.twin is not None:
        traitors.setdefault(plan.twin.replica, []).append("twin")
    return make_header(
        driver="sim",
        n=plan.n,
        f=plan.f,
        clients=list(range(plan.clients)),
        replicas=list(range(plan.n)),
        traitors={replica: "; ".join(texts) for replica, texts in traitors.items()},
        seed=seed,
        plan=description,
    )


def _lane(address: Address) -> str:
    # A twin holds replica k's identity: its events go on replica k's lane, marked "twin".
    return node_name("replica" if address[0] == "twin" else address[0], address[1])


class SimTrace:
    """Writes one simulated run to ``writer`` (whose header the caller wrote)."""

    def __init__(self, writer: TraceWriter) -> None:
        self.writer = writer
        self.network: Any = None
        self._honest: set[int] = set()
        #: frame id -> the message fields of that frame, for its receive events.
        self._frames: dict[str, dict[str, Any]] = {}
        #: address -> (frame id, sender) of the delivery being stepped at that address.
        self._delivering: dict[Address, tuple[str, Address]] = {}
        #: id of a made-up effect -> (behaviour, effect), until the step's sends are written.
        self._forged: dict[int, tuple[str, Any]] = {}
        self._operations_seen = 0
        self._rules: NetworkFaults | None = None
        self._rule_counts: list[int] = []
        self._boundaries: list[tuple[int, int, str, int]] = []
        #: (seq -> {digest: [replica, ...]}) of honest replicas' executions, for violations.
        self._executed: dict[int, dict[str, list[int]]] = {}

    # ------------------------------------------------------------------ install

    def install(self, cluster: SimCluster, faulty: set[int]) -> None:
        """Hook into ``cluster`` (after its traitors and fault model are in place)."""
        network = self.network = cluster.network
        self._honest = set(cluster.replicas) - faulty
        previous = network.on_step

        def record(address: Address, effects: list[Any]) -> None:
            self._step(address, effects)
            if previous is not None:
                previous(address, effects)

        network.on_step = record
        network.on_deliver = self._delivered
        network.on_transmit = self._transmitted
        replace = network.replace

        def replace_traced(address: Address, node: Any, effects: Iterable[Any] = ()) -> None:
            # A restarted replica's first effects (its recovery's) skip on_step: write them
            # here so that their frames' receive events have a send.
            effects = list(effects)
            self._step(address, effects)
            replace(address, node, effects)

        network.replace = replace_traced
        for node in network.nodes.values():
            if isinstance(node, Traitor | ByzantineClient):
                node.on_forged = self._forged_by
        if isinstance(network.fault_model, NetworkFaults):
            self._rules = network.fault_model
            self._rule_counts = list(self._rules.took_effect)
            self._boundaries = _partition_boundaries(self._rules.rules)

    def fault(self, address: Address, fault: str, detail: str, **fields: Any) -> None:
        """A crash, a restart, or another fault the driver injected at ``address`` now."""
        self._event(address, "fault", fault=fault, detail=detail, **fields)

    def violation(self, checker: str, detail: str) -> None:
        """A checker's verdict on the run, with the seqs where honest executions conflict."""
        seqs = conflicting_seqs(self._executed)
        node = node_name("replica", min(self._honest)) if self._honest else "replica-0"
        now = self.network.now if self.network is not None else 0
        self.writer.event(now, node, "violation", checker=checker, detail=detail, seqs=seqs)

    # ----------------------------------------------------------------- the hooks

    def _event(self, address: Address, event: str, **fields: Any) -> None:
        now = self.network.now
        self._pass_boundaries(now)
        if address[0] == "twin":
            fields["twin"] = True
        self.writer.event(now, _lane(address), event, **fields)

    def _delivered(self, source: Address, destination: Address, data: bytes) -> None:
        self._delivering[destination] = (frame_id(data), source)

    def _forged_by(self, behaviour: str, effect: Any) -> None:
        self._forged[id(effect)] = (behaviour, effect)

    def _step(self, address: Address, effects: list[Any]) -> None:
        if address[0] not in ("replica", "client", "twin"):
            return  # the simulator's own helpers (crash watchers, the pacer)
        delivery = self._delivering.pop(address, None)
        if delivery is not None:
            self._receive(address, delivery, effects)
        if address[0] == "client" and len(self.network.operations) > self._operations_seen:
            self._invoke(address)
        for effect in effects:
            kind = type(effect)
            if kind in (SendToReplicas, SendToClient, SendBytes):
                self._send(address, effect)
            elif kind is not Dropped:
                self._progress(address, effect)
        self._forged.clear()

    def _receive(self, address: Address, delivery: tuple[str, Address], effects: list[Any]) -> None:
        frame, source = delivery
        fields = self._frames.get(frame, {"type": RAW_BYTES})
        reason = None
        for effect in effects:
            if type(effect) is Dropped and (
                fields["type"] == RAW_BYTES or effect.message_type == fields["type"]
            ):
                reason = effect.reason
                break
        extra: dict[str, Any] = {"accepted": reason is None}
        if reason is not None:
            extra["reason"] = reason
        rest = {key: value for key, value in fields.items() if key != "type"}
        self._event(
            address, "receive", type=fields["type"], frame=frame, **{"from": _lane(source)},
            **extra, **rest,
        )  # fmt: skip

    def _send(self, address: Address, effect: Any) -> None:
        kind = type(effect)
        if kind is SendBytes:
            data, fields = effect.data, {"type": RAW_BYTES}
            receivers = [node_name("replica", r) for r in effect.replicas]
        else:
            data, fields = encode_signed(effect.message), message_fields(effect.message)
            if kind is SendToReplicas:
                receivers = [node_name("replica", r) for r in effect.replicas]
            else:
                receivers = [node_name("client", effect.client)]
        frame = frame_id(data)
        self._frames.setdefault(frame, fields)
        rest = {key: value for key, value in fields.items() if key != "type"}
        self._event(address, "send", type=fields["type"], frame=frame, to=receivers, **rest)
        forged = self._forged.get(id(effect))
        if forged is not None and forged[1] is effect:
            self._event(
                address, "fault", fault="traitor", behaviour=forged[0], forged=True, frame=frame,
                detail=f"{fields['type']} made up by {forged[0]}",
            )  # fmt: skip

    def _progress(self, address: Address, effect: Any) -> None:
        kind = type(effect)
        if kind is Prepared or kind is Committed:
            pre_prepare = (
                effect.certificate.pre_prepare if kind is Prepared else effect.pre_prepare
            ).message
            name = "prepared" if kind is Prepared else "committed"
            self._event(
                address, name, view=pre_prepare.view, seq=pre_prepare.seq,
                digest=digest_prefix(pre_prepare.digest),
            )  # fmt: skip
        elif kind is Executed:
            digest = digest_prefix(effect.digest)
            if address[0] == "replica" and address[1] in self._honest:
                self._executed.setdefault(effect.seq, {}).setdefault(digest, []).append(address[1])
            self._event(
                address, "executed", view=effect.view, seq=effect.seq, digest=digest,
                requests=len(effect.requests),
            )  # fmt: skip
        elif kind is CheckpointStable:
            digest = digest_prefix(effect.state_digest)
            self._event(address, "checkpoint-stable", seq=effect.seq, digest=digest)
        elif kind is ViewChangeStarted:
            self._event(address, "view-change-started", new_view=effect.new_view)
        elif kind is NewViewEntered:
            self._event(address, "view-change-completed", view=effect.view)
        elif kind is StateTransferred:
            self._event(address, "state-transferred", seq=effect.seq)
        elif kind is EquivocationDetected:
            # Not in the shared list: the runtime logs the same event when it keeps a proof.
            evidence = effect.evidence
            self._event(
                address, "equivocation", view=evidence.view, seq=evidence.seq,
                sender=evidence.sender, phase=evidence.phase,
            )  # fmt: skip
        elif kind is Completed:
            self._event(
                address, "complete", **_operation_only(effect.operation),
                result=result_value(effect.result), timestamp=effect.timestamp,
            )  # fmt: skip

    def _invoke(self, address: Address) -> None:
        # Network.invoke records the operation, then steps the client with it: this step.
        operation = self.network.operations[-1]
        self._operations_seen = len(self.network.operations)
        timestamp = getattr(self.network.nodes[address], "timestamp", None)
        self._event(address, "invoke", **operation_fields(operation.operation), timestamp=timestamp)

    def _transmitted(
        self, source: Address, destination: Address, data: bytes, arrivals: list[int]
    ) -> None:
        fired = self._rules_fired()
        if not fired and len(arrivals) == 1 and arrivals[0] <= 1:
            return  # delivered as usual: its receive event tells the rest
        frame, receiver = frame_id(data), _lane(destination)
        if not arrivals:
            self.fault(source, "loss", _loss_detail(fired), frame=frame, to=receiver)
            return
        if len(arrivals) > 1:
            self.fault(source, "duplicate", f"{len(arrivals)} copies", frame=frame, to=receiver)
        if max(arrivals) > 1:
            kinds = sorted({rule.kind for _, rule in fired} - {"duplicate"}) or ["delay"]
            detail = f"{' and '.join(kinds)}: arrives after {', '.join(map(str, arrivals))} ms"
            self.fault(source, "delay", detail, frame=frame, to=receiver, delay_ms=max(arrivals))

    def _rules_fired(self) -> list[tuple[int, NetworkRule]]:
        """The network rules (by position) that changed the frame just decided."""
        if self._rules is None:
            return []
        counts = self._rules.took_effect
        fired = [
            (index, self._rules.rules[index])
            for index, count in enumerate(counts)
            if count != self._rule_counts[index]
        ]
        self._rule_counts = list(counts)
        return fired

    def _pass_boundaries(self, now: int) -> None:
        """Write the partitions that began or ended by ``now`` (at their own times)."""
        while self._boundaries and self._boundaries[0][0] <= now:
            at, _, fault, index = heapq.heappop(self._boundaries)
            assert self._rules is not None
            groups = self._rules.rules[index].groups
            detail = f"network rule {index + 1}: {_groups(groups)}"
            for replica in sorted(self.network.executed):
                self.writer.event(
                    at, node_name("replica", replica), "fault", fault=fault, detail=detail,
                    groups=[list(group) for group in groups],
                )  # fmt: skip


def _loss_detail(fired: list[tuple[int, NetworkRule]]) -> str:
    for index, rule in fired:
        if rule.kind == PARTITION:
            return f"cut by network rule {index + 1}: partition {_groups(rule.groups)}"
    if fired:
        index, rule = fired[0]
        return f"lost by network rule {index + 1}: {rule.kind} at rate {rule.rate}"
    return "lost"  # the simulator's own link faults, or an isolated replica


def _operation_only(operation: bytes) -> dict[str, Any]:
    fields = operation_fields(operation)
    return {"op": fields["op"], "key": fields["key"]}


def _groups(groups: Iterable[Iterable[int]]) -> str:
    return " | ".join("{" + ",".join(map(str, group)) + "}" for group in groups)


def _partition_boundaries(rules: Iterable[NetworkRule]) -> list[tuple[int, int, str, int]]:
    """(time, order, fault, rule index) of each partition's start and end, soonest first."""
    boundaries = []
    for index, rule in enumerate(rules):
        if rule.kind != PARTITION:
            continue
        boundaries.append((rule.at_ms, 2 * index, "partition-on", index))
        if rule.until_ms is not None:
            boundaries.append((rule.until_ms, 2 * index + 1, "partition-off", index))
    heapq.heapify(boundaries)
    return boundaries


def conflicting_seqs(executed: Mapping[int, Mapping[str, list[int]]]) -> list[int]:
    """The sequence numbers at which honest replicas executed more than one batch."""
    return sorted(seq for seq, digests in executed.items() if len(digests) > 1)
