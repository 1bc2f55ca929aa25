"""Network faults between replicas: partitions that heal, delay, jitter, loss, duplication,
reordering. Pure logic, shared by the in-memory network and the Trio runtime.

Theory of operation
-------------------
A scenario describes the network as a list of :class:`NetworkRule` objects,
each of one ``kind`` and active from ``at_ms`` (inclusive) until ``until_ms``
(exclusive; None means for ever), in milliseconds since the run started::

    partition   groups=[[0, 1], [2, 3]]    messages between groups are dropped
    loss        rate=0.1                   each message is dropped with probability rate
    duplicate   rate=0.1                   one extra copy with probability rate
    delay       ms=20, jitter_ms=10        each copy waits ms + uniform{0..jitter_ms}
    reorder     rate=0.2, ms=50            with probability rate a copy waits an extra
                                           uniform{0..ms} (50 when ms is 0)

Every kind but ``partition`` may name ``links``, directed (source, destination)
pairs of replicas; no links means every link between two replicas.

:meth:`NetworkFaults.decide` is asked once per message a replica sends to
another replica, by the sender (the simulator's ``Network._send`` or the
runtime's ``ReplicaNode``), and answers with the delay in milliseconds of each
copy to deliver: ``[]`` drops the message, ``[0]`` delivers it as usual,
``[0, 35]`` delivers it and a duplicate 35 ms later. Since every sender applies
the rules to what *it* sends, a partition cuts both directions.

Choices worth knowing:

* A replica that a partition's groups do not list is in a group of its own:
  it is cut off from every other replica while the partition lasts. So
  ``groups=[[0, 1, 2]]`` isolates replica 3 of four.
* Only messages between two replicas are affected. Clients talk to replicas
  directly (in the runtime over their own connections, which carry REPLYs back),
  and a client cut off from the cluster is a different experiment: the
  retransmitting client would only hide the effect of replica-to-replica faults.
* Delays are whole milliseconds (ticks of the simulator).
* Randomness comes from one ``random.Random`` handed in (or built from a seed),
  drawn in a fixed order: the active rules by kind (loss, duplicate, delay,
  reorder), in the order given, then copy by copy. The same seed and the same
  sequence of calls give the same decisions.
* Several active rules of one kind combine: two partitions cut the union of
  their cuts, losses are independent chances, delays add up.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import attrs

__all__ = [
    "DEFAULT_REORDER_WINDOW_MS",
    "KINDS",
    "PARAMETERS",
    "RULE_KEYS",
    "NetworkFaultError",
    "NetworkFaults",
    "NetworkRule",
    "rule_from_mapping",
]

PARTITION = "partition"
DELAY = "delay"
LOSS = "loss"
DUPLICATE = "duplicate"
REORDER = "reorder"
KINDS = (PARTITION, DELAY, LOSS, DUPLICATE, REORDER)

#: The largest extra delay of a reordered copy when a reorder rule names no ``ms``.
DEFAULT_REORDER_WINDOW_MS = 50

#: The parameters (beyond kind, at_ms and until_ms) each kind accepts.
PARAMETERS: Mapping[str, frozenset[str]] = {
    PARTITION: frozenset({"groups"}),
    DELAY: frozenset({"links", "ms", "jitter_ms"}),
    LOSS: frozenset({"links", "rate"}),
    DUPLICATE: frozenset({"links", "rate"}),
    REORDER: frozenset({"links", "rate", "ms"}),
}
#: Every key a rule's table may hold.
RULE_KEYS = ("kind", "at_ms", "until_ms", "groups", "links", "ms", "jitter_ms", "rate")
_ALL_FIELDS = RULE_KEYS  # the older, private name
_OPTIONAL = ("groups", "links", "ms", "jitter_ms", "rate")


class NetworkFaultError(ValueError):
    """A network rule that cannot be built as written; the message says why."""


def _nested_tuples(value: Any) -> Any:
    """Lists (from TOML or JSON) to tuples, two levels deep; anything else is left for checks."""
    if isinstance(value, list | tuple):
        return tuple(tuple(item) if isinstance(item, list | tuple) else item for item in value)
    return value


def _is_integer(value: Any) -> bool:
    return type(value) is int


@attrs.frozen
class NetworkRule:
    """One fault of the network, active for at_ms <= now < until_ms (milliseconds)."""

    kind: str
    at_ms: int = 0
    until_ms: int | None = None
    groups: tuple[tuple[int, ...], ...] = attrs.field(default=(), converter=_nested_tuples)
    links: tuple[tuple[int, int], ...] = attrs.field(default=(), converter=_nested_tuples)
    ms: int = 0
    jitter_ms: int = 0
    rate: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.kind not in KINDS:
            raise NetworkFaultError(
                f"unknown network fault kind {self.kind!r} (kinds: {', '.join(KINDS)})"
            )
        self._check_times()
        self._check_parameters_belong()
        self._check_numbers()
        if self.kind == PARTITION:
            self._check_groups()
        else:
            self._check_links()

    # ------------------------------------------------------------------ checks

    def _fail(self, problem: str) -> NoReturn:
        raise NetworkFaultError(f"{self.kind} rule: {problem}")

    def _check_times(self) -> None:
        if not _is_integer(self.at_ms) or self.at_ms < 0:
            self._fail(f"at_ms must be a whole number of milliseconds >= 0, got {self.at_ms!r}")
        if self.until_ms is None:
            return
        if not _is_integer(self.until_ms) or self.until_ms < 0:
            self._fail(
                f"until_ms must be a whole number of milliseconds >= 0, got {self.until_ms!r}"
            )
        if self.until_ms <= self.at_ms:
            self._fail(
                f"until_ms ({self.until_ms}) must be later than at_ms ({self.at_ms}): "
                "the rule would never be active"
            )

    def _check_parameters_belong(self) -> None:
        defaults = {field.name: field.default for field in attrs.fields(NetworkRule)}
        allowed = PARAMETERS[self.kind]
        for name in _OPTIONAL:
            if name not in allowed and getattr(self, name) != defaults[name]:
                self._fail(
                    f"{name!r} does not apply to a {self.kind} rule "
                    f"(it takes: {', '.join(sorted(allowed))})"
                )

    def _check_numbers(self) -> None:
        for name in ("ms", "jitter_ms"):
            value = getattr(self, name)
            if not _is_integer(value) or value < 0:
                self._fail(f"{name} must be a whole number of milliseconds >= 0, got {value!r}")
        if type(self.rate) not in (int, float) or not 0.0 <= self.rate <= 1.0:
            self._fail(f"rate must be a probability in [0, 1], got {self.rate!r}")
        if self.kind in (LOSS, DUPLICATE, REORDER) and self.rate == 0:
            self._fail("rate must be above 0 (a probability in (0, 1]), or the rule does nothing")
        if self.kind == DELAY and self.ms == 0 and self.jitter_ms == 0:
            self._fail("needs ms or jitter_ms above 0, or the rule does nothing")

    def _check_groups(self) -> None:
        if not isinstance(self.groups, tuple) or not self.groups:
            self._fail(
                f"groups must be a non-empty list of lists of replica ids, got {self.groups!r}"
            )
        seen: set[int] = set()
        for group in self.groups:
            if not isinstance(group, tuple) or not group:
                self._fail(f"each group must be a non-empty list of replica ids, got {group!r}")
            for replica in group:
                if not _is_integer(replica):
                    self._fail(f"replica ids are whole numbers, got {replica!r} in {group!r}")
                if replica in seen:
                    self._fail(f"replica {replica} is in more than one group (or twice in one)")
                seen.add(replica)

    def _check_links(self) -> None:
        if not isinstance(self.links, tuple):
            self._fail(f"links must be a list of [source, destination] pairs, got {self.links!r}")
        seen: set[tuple[int, int]] = set()
        for link in self.links:
            if not isinstance(link, tuple) or len(link) != 2:
                self._fail(f"a link is a [source, destination] pair, got {link!r}")
            if not all(_is_integer(replica) for replica in link):
                self._fail(f"replica ids are whole numbers, got {link!r}")
            if link[0] == link[1]:
                self._fail(f"link {list(link)} names replica {link[0]} twice")
            if link in seen:
                self._fail(f"link {list(link)} is listed twice")
            seen.add(link)

    def replicas(self) -> set[int]:
        """Every replica id the rule names."""
        named = {replica for group in self.groups for replica in group}
        named.update(replica for link in self.links for replica in link)
        return named

    def validate(self, n: int) -> None:
        """Check that every replica id the rule names is one of the n replicas 0..n-1."""
        for replica in sorted(self.replicas()):
            if not 0 <= replica < n:
                self._fail(f"replica {replica} does not exist (replicas are 0..{n - 1})")

    # ---------------------------------------------------------------- semantics

    def active(self, now_ms: int) -> bool:
        return self.at_ms <= now_ms and (self.until_ms is None or now_ms < self.until_ms)

    def covers(self, source: int, destination: int) -> bool:
        """Does this (non-partition) rule apply to the link source -> destination?"""
        return not self.links or (source, destination) in self.links

    def separates(self, source: int, destination: int) -> bool:
        """Does this partition put source and destination in different groups?"""
        return self._group_of(source) != self._group_of(destination)

    def _group_of(self, replica: int) -> int | tuple[str, int]:
        for index, group in enumerate(self.groups):
            if replica in group:
                return index
        return ("alone", replica)  # unlisted: a group of its own

    def reorder_window_ms(self) -> int:
        return self.ms or DEFAULT_REORDER_WINDOW_MS


#: The order in which the kinds draw random numbers (partitions draw none).
_DRAW_ORDER = (LOSS, DUPLICATE, DELAY, REORDER)


class NetworkFaults:
    """The network rules of one run, and the random numbers they draw."""

    def __init__(self, rules: Iterable[NetworkRule], rng: random.Random | None = None) -> None:
        self.rules = tuple(rules)
        self.rng = rng if rng is not None else random.Random(0)
        self._by_kind = {
            kind: tuple(rule for rule in self.rules if rule.kind == kind) for kind in KINDS
        }
        #: Per rule (by position), how many messages it changed: dropped, cut,
        #: duplicated, delayed or reordered. A rule at 0 never took effect.
        self.took_effect = [0] * len(self.rules)
        self._position = {id(rule): index for index, rule in enumerate(self.rules)}

    def _count(self, rule: NetworkRule) -> None:
        self.took_effect[self._position[id(rule)]] += 1

    @classmethod
    def from_rules(cls, rules: Sequence[Mapping[str, Any]], seed: int = 0) -> NetworkFaults:
        """Build from plain tables (a scenario's ``[[network]]`` entries)."""
        return cls(
            [rule_from_mapping(table, index) for index, table in enumerate(rules)],
            random.Random(seed),
        )

    def __repr__(self) -> str:
        return f"NetworkFaults({list(self.rules)!r})"

    def validate(self, n: int) -> None:
        """Check every rule against a cluster of n replicas."""
        for rule in self.rules:
            rule.validate(n)

    def active_rules(self, now_ms: int) -> list[NetworkRule]:
        return [rule for rule in self.rules if rule.active(now_ms)]

    def active_partition(self, now_ms: int) -> list[tuple[tuple[int, ...], ...]]:
        """The groups of every partition in force at ``now_ms`` (empty: none)."""
        return [rule.groups for rule in self._by_kind[PARTITION] if rule.active(now_ms)]

    def partitioned(self, now_ms: int, source: int, destination: int) -> bool:
        return any(
            rule.active(now_ms) and rule.separates(source, destination)
            for rule in self._by_kind[PARTITION]
        )

    def _cut(self, now_ms: int, source: int, destination: int) -> bool:
        cut = False
        for rule in self._by_kind[PARTITION]:
            if rule.active(now_ms) and rule.separates(source, destination):
                self._count(rule)
                cut = True
        return cut

    def decide(self, now_ms: int, source: int, destination: int) -> list[int]:
        """The delay in ms of each copy of one message source -> destination sent at now_ms.

        ``[]``: dropped; ``[0]``: delivered as usual; more entries: duplicates.
        """
        if source == destination:
            return [0]  # a replica's message to itself crosses no network
        if self._cut(now_ms, source, destination):
            return []
        rng = self.rng
        active = {
            kind: [
                rule
                for rule in self._by_kind[kind]
                if rule.active(now_ms) and rule.covers(source, destination)
            ]
            for kind in _DRAW_ORDER
        }
        for rule in active[LOSS]:
            if rng.random() < rule.rate:
                self._count(rule)
                return []
        delays = [0]
        for rule in active[DUPLICATE]:
            if rng.random() < rule.rate:
                self._count(rule)
                delays.append(0)
        for copy in range(len(delays)):
            for rule in active[DELAY]:
                self._count(rule)
                delays[copy] += rule.ms + (rng.randint(0, rule.jitter_ms) if rule.jitter_ms else 0)
            for rule in active[REORDER]:
                if rng.random() < rule.rate:
                    self._count(rule)
                    delays[copy] += rng.randint(0, rule.reorder_window_ms())
        return delays


def rule_from_mapping(table: Mapping[str, Any], index: int = 0) -> NetworkRule:
    """One rule from a plain table; errors name the rule's position and the bad key."""
    where = f"network rule {index + 1}"
    if not isinstance(table, Mapping):
        raise NetworkFaultError(f"{where}: expected a table of settings, got {table!r}")
    for key in table:
        if key not in RULE_KEYS:
            raise NetworkFaultError(f"{where}: unknown key {key!r} (keys: {', '.join(RULE_KEYS)})")
    if "kind" not in table:
        raise NetworkFaultError(f"{where}: needs a kind ({', '.join(KINDS)})")
    try:
        return NetworkRule(**table)
    except NetworkFaultError as error:
        raise NetworkFaultError(f"{where}: {error}") from None
