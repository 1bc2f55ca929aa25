"""Traitors from the command line: ``ID:BEHAVIOUR[:key=value,...]``.

``pbft demo --traitor 0:equivocate:targets=1+2`` makes replica 0 an
equivocating primary towards replicas 1 and 2. Keys are the trigger's
(``from_seq``, ``until_seq``, ``from_view``, ``until_view``, ``at_ms``,
``until_ms``, ``types``, ``targets``) or the behaviour's own parameters;
lists are written with ``+`` (``targets=1+2``, ``types=prepare+commit``);
numbers and ``true``/``false`` are read as such.

The checks shared with scenario files (:mod:`faults.scenarios.parser`) live
here, so that ``--traitor`` and ``[[traitor]]`` refuse the same values:
:func:`message_types` (only the protocol's message types) and
:func:`check_parameters` (no negative counts, sizes or delays).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from faults.traitors.base import Behaviour, BehaviourError, Traitor, Trigger, normalise_type
from faults.traitors.behaviours import make_behaviour
from pbft.messages import MESSAGE_TYPES
from pbft.replica import Replica

TRIGGER_KEYS = ("from_seq", "until_seq", "from_view", "until_view", "at_ms", "until_ms")
MESSAGE_TYPE_NAMES = tuple(cls.TYPE for cls in MESSAGE_TYPES)


@attrs.frozen
class TraitorSpec:
    replica: int
    behaviour: str
    trigger: Trigger
    params: dict[str, Any]

    def build(self) -> Behaviour:
        return make_behaviour(self.behaviour, self.trigger, **self.params)


def _value(text: str) -> Any:
    if "+" in text:
        return [_value(part) for part in text.split("+") if part]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def make_trigger(values: dict[str, Any]) -> Trigger:
    """Build a Trigger from plain values, checking types and that ranges are not empty."""
    fields: dict[str, Any] = {}
    for key in TRIGGER_KEYS:
        if key in values:
            value = values[key]
            if type(value) is not int or value < 0:
                raise BehaviourError(f"{key} must be a whole number >= 0, got {value!r}")
            fields[key] = value
    for start, end in (("from_seq", "until_seq"), ("from_view", "until_view"),
                       ("at_ms", "until_ms")):  # fmt: skip
        if start in fields and end in fields and fields[end] <= fields[start]:
            raise BehaviourError(f"{end} = {fields[end]} is not after {start} = {fields[start]}")
    if "types" in values:
        types = values["types"] if isinstance(values["types"], list) else [values["types"]]
        fields["types"] = message_types([str(t) for t in types])
    if "targets" in values:
        targets = values["targets"] if isinstance(values["targets"], list) else [values["targets"]]
        if not all(type(t) is int for t in targets):
            raise BehaviourError(f"targets must be replica ids, got {values['targets']!r}")
        fields["targets"] = frozenset(targets)
    return Trigger(**fields)


def message_types(names: Sequence[str]) -> frozenset[str]:
    """The message types ``names`` stand for (any case, ``_`` or ``-``); BehaviourError
    for a name that is no message type of the protocol, which would silently match nothing."""
    normalised = [normalise_type(name) for name in names]
    for name in normalised:
        if name not in MESSAGE_TYPE_NAMES:
            raise BehaviourError(
                f"types: unknown message type {name!r} (types: {', '.join(MESSAGE_TYPE_NAMES)})"
            )
    return frozenset(normalised)


def check_parameters(behaviour: str, params: dict[str, Any]) -> None:
    """Refuse a negative number (a delay, a count, a size): none of them has a meaning."""
    for key, value in params.items():
        if type(value) in (int, float) and value < 0:
            raise BehaviourError(f"behaviour {behaviour!r}: {key} must be >= 0, got {value!r}")


def parse_traitor(text: str, replica: int | None = None) -> TraitorSpec:
    """Parse ``ID:BEHAVIOUR[:k=v,...]`` (or ``BEHAVIOUR[:k=v,...]`` when ``replica`` is given)."""
    parts = text.split(":", 2 if replica is None else 1)
    if replica is None:
        if len(parts) < 2 or not parts[0].isdigit():
            raise BehaviourError(f"--traitor {text!r}: expected ID:BEHAVIOUR[:key=value,...]")
        replica, parts = int(parts[0]), parts[1:]
    behaviour = parts[0]
    values: dict[str, Any] = {}
    if len(parts) > 1 and parts[1]:
        for item in parts[1].split(","):
            key, equals, raw = item.partition("=")
            if not equals or not key:
                raise BehaviourError(f"--traitor {text!r}: {item!r} is not key=value")
            values[key.strip()] = _value(raw.strip())
    trigger = make_trigger(values)
    params = {k: v for k, v in values.items() if k not in (*TRIGGER_KEYS, "types", "targets")}
    check_parameters(behaviour, params)
    spec = TraitorSpec(replica, behaviour, trigger, params)
    spec.build()  # refuse unknown behaviours and parameters now, with their message
    return spec


def check_replica_ids(specs: Sequence[TraitorSpec], n: int) -> None:
    for spec in specs:
        for replica in (spec.replica, *spec.trigger.targets):
            if not 0 <= replica < n:
                raise BehaviourError(
                    f"replica {replica} does not exist (the replicas are 0..{n - 1})"
                )


def wrap(
    replica: Replica,
    specs: Sequence[TraitorSpec],
    clock: Callable[[], int],
    rebuild: Callable[[], Replica] | None = None,
    seed: int = 0,
) -> Traitor:
    """Make ``replica`` a traitor with every behaviour of ``specs`` (in order)."""
    return Traitor(replica, [spec.build() for spec in specs], seed, clock, rebuild)


def to_argument(spec_text: str) -> tuple[int, str]:
    """Split ``ID:REST`` into the replica id and what ``pbft replica --traitor`` takes."""
    spec = parse_traitor(spec_text)
    return spec.replica, spec_text.split(":", 1)[1]


def replica_arguments(spec_texts: Sequence[str], n: int) -> dict[int, list[str]]:
    """Check ``ID:BEHAVIOUR[:...]`` specs against a cluster of ``n`` replicas; return each
    replica's ``pbft replica --traitor`` arguments (``pbft demo`` and ``pbft cluster``)."""
    parsed = [parse_traitor(text) for text in spec_texts]
    check_replica_ids(parsed, n)
    by_replica: dict[int, list[str]] = {}
    for spec, text in zip(parsed, spec_texts, strict=True):
        by_replica.setdefault(spec.replica, []).append(text.split(":", 1)[1])
    return by_replica
