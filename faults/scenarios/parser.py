"""Checking a scenario document completely, and naming the line of every mistake.

Theory of operation
-------------------
:func:`check_document` walks the document ``tomllib`` read, table by table,
and builds the :class:`~faults.scenarios.document.Scenario`, refusing: unknown keys
anywhere (in a ``[[traitor]]`` table the keys are the trigger's and that
behaviour's ``PARAMS``); values of the wrong type; ``n < 3f+1``; replica and
client ids that do not exist; unknown behaviours, parameters, message types,
network kinds and client modes (behaviours and network rules are built once,
so their own checks apply too); mix weights that are negative or add up to
nothing; and schedules that can never happen (``until_ms <= at_ms``,
``until_seq <= from_seq``, ``until_view <= from_view``, a start after
``duration_limit_s``).

Every refusal is a :class:`~faults.scenarios.document.ScenarioError` reading
``FILE:LINE: problem``. ``tomllib`` keeps no positions, so :class:`_Locator`
finds the line in the raw text: a key is addressed by its path
(``("traitor", 2, "targets")``: the third ``[[traitor]]`` table's
``targets``), the locator finds that table's header and then the first line
below it that assigns the key; a key it cannot find is reported at its
table's header.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs

from faults.scenarios.document import (
    DEFAULT_DURATION_LIMIT_S,
    SCENARIO_PROTOCOL,
    TRIGGER_KEYS,
    ByzantineClientSpec,
    Scenario,
    ScenarioError,
    TraitorTable,
    Workload,
)
from faults.traitors.base import BehaviourError, Trigger
from faults.traitors.behaviours import BEHAVIOURS, make_behaviour
from faults.traitors.clients import MODES as CLIENT_MODES
from faults.traitors.network import NetworkFaultError, NetworkRule, rule_from_mapping
from faults.traitors.spec import check_parameters, message_types
from pbft.config import ConfigError, ProtocolParams
from pbft.messages import MESSAGE_TYPES

OPERATIONS = ("put", "get", "delete", "cas")
MESSAGE_TYPE_NAMES = tuple(cls.TYPE for cls in MESSAGE_TYPES)
PROTOCOL_FIELDS = tuple(field.name for field in attrs.fields(ProtocolParams))
TRAITOR_KEYS = ("replica", "behaviour", *TRIGGER_KEYS, "types", "targets")
EXPECTATIONS = ("safe", "live", "view_change", "evidence")

_TOP_LEVEL_KEYS = (
    "name", "description", "f", "n", "seed", "duration_limit_s",
    "workload", "protocol", "traitor", "byzantine_client", "network", "expect",
)  # fmt: skip
_WORKLOAD_KEYS = ("clients", "requests", "keys", "mix", "timeout_s")
_BYZANTINE_CLIENT_KEYS = ("client", "mode", "requests")
NETWORK_KEYS = ("kind", "at_ms", "until_ms", "groups", "links", "ms", "jitter_ms", "rate")

#: A key's address in the document: table names, array indices, key names.
KeyPath = tuple[str | int, ...]


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z_\"'][^\[\]]*?)\s*\]\]?\s*(#.*)?$")


@attrs.define
class _Section:
    name: str
    array: bool
    line: int
    end: int  # the last line of the section


class _Locator:
    """Finds the line on which a key was written, from the raw text of the file."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.sections = [_Section("", False, 1, len(self.lines))]
        in_string = False
        for number, line in enumerate(self.lines, start=1):
            # A header inside a multi-line string is text, not a header.
            if (line.count('"""') + line.count("'''")) % 2:
                in_string = not in_string
                continue
            match = None if in_string else _HEADER.match(line)
            if match is None:
                continue
            self.sections[-1].end = number - 1
            parts = [part.strip().strip("\"'") for part in match[2].split(".")]
            self.sections.append(
                _Section(".".join(parts), match[1] == "[[", number, len(self.lines))
            )

    def line(self, path: KeyPath) -> int:
        """The line of ``path`` (keys and array indices), or of the nearest table above it."""
        for cut in range(len(path), -1, -1):
            section = self._section(path[:cut])
            if section is None:
                continue
            keys = [part for part in path[cut:] if isinstance(part, str)]
            if not keys:
                return section.line
            return self._key_line(section, keys[0]) or section.line
        return 1

    def _section(self, prefix: KeyPath) -> _Section | None:
        if not prefix:
            return self.sections[0]
        index = prefix[-1] if isinstance(prefix[-1], int) else None
        name = ".".join(part for part in prefix if isinstance(part, str))
        matches = [s for s in self.sections if s.name == name and s.array == (index is not None)]
        if index is None:
            return matches[0] if matches else None
        return matches[index] if index < len(matches) else None

    def _key_line(self, section: _Section, key: str) -> int | None:
        quoted = re.escape(key)
        pattern = re.compile(rf"^\s*(?:{quoted}|\"{quoted}\"|'{quoted}')\s*[=.]")
        first = section.line + 1 if section.name else 1
        for number in range(first, section.end + 1):
            if pattern.match(self.lines[number - 1]):
                return number
        return None


# ------------------------------------------------------------------------- parsing


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def check_document(document: dict[str, Any], text: str, filename: str) -> Scenario:
    """The scenario ``document`` (read from ``text``) describes, or :class:`ScenarioError`."""
    return _Parser(text, filename).scenario(document)


class _Parser:
    """Checks one document; every failure goes through :meth:`fail` with the key's path."""

    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.locator = _Locator(text)
        self.n = 0
        self.total_clients = 0
        self.limit_ms = math.inf

    def fail(self, path: KeyPath, problem: str) -> NoReturn:
        line = self.locator.line(path)
        raise ScenarioError(" ".join(f"{self.filename}:{line}: {problem}".splitlines()))

    # ------------------------------------------------------------ typed values

    def keys(self, table: Any, path: KeyPath, allowed: Sequence[str], what: str) -> dict[str, Any]:
        if not isinstance(table, dict):
            self.fail(path, f"{what} must be a table, got {_describe(table)}")
        for key in table:
            if key not in allowed:
                self.fail(
                    (*path, key),
                    f"unknown key {key!r} in {what} (valid keys: {', '.join(allowed)})",
                )
        return table

    def integer(self, table: Mapping[str, Any], key: str, path: KeyPath, minimum: int = 0) -> int:
        value = table[key]
        if type(value) is not int:
            self.fail((*path, key), f"{key} must be an integer, got {_describe(value)}")
        if value < minimum:
            self.fail((*path, key), f"{key} must be at least {minimum}, got {value}")
        return value

    def number(self, table: Mapping[str, Any], key: str, path: KeyPath) -> float:
        value = table[key]
        if type(value) not in (int, float) or not math.isfinite(value):
            self.fail((*path, key), f"{key} must be a number, got {_describe(value)}")
        if value <= 0:
            self.fail((*path, key), f"{key} must be above 0, got {value}")
        return float(value)

    def boolean(self, table: Mapping[str, Any], key: str, path: KeyPath) -> bool:
        value = table[key]
        if type(value) is not bool:
            self.fail((*path, key), f"{key} must be true or false, got {_describe(value)}")
        return value

    def string(self, table: Mapping[str, Any], key: str, path: KeyPath) -> str:
        value = table[key]
        if not isinstance(value, str):
            self.fail((*path, key), f"{key} must be a string, got {_describe(value)}")
        return value

    def replica_id(self, value: Any, path: KeyPath, what: str) -> int:
        if type(value) is not int:
            self.fail(path, f"{what} must be a replica id (an integer), got {_describe(value)}")
        if not 0 <= value < self.n:
            prefix = "" if what == "replica" else f"{what}: "
            self.fail(
                path, f"{prefix}replica {value} does not exist (replicas are 0..{self.n - 1})"
            )
        return value

    def tables(self, document: Mapping[str, Any], key: str) -> list[Any]:
        value = document.get(key, [])
        if not isinstance(value, list):
            self.fail((key,), f"{key} must be written as [[{key}]] tables")
        return value

    # ------------------------------------------------------------------ sections

    def scenario(self, document: dict[str, Any]) -> Scenario:
        self.keys(document, (), _TOP_LEVEL_KEYS, "the scenario")
        if "f" not in document:
            self.fail((), "missing key f (faults tolerated; n = 3f+1 unless n is given)")
        f = self.integer(document, "f", ())
        self.n = 3 * f + 1
        if "n" in document:
            self.n = self.integer(document, "n", (), minimum=1)
            if self.n < 3 * f + 1:
                self.fail(
                    ("n",),
                    f"n = {self.n} replicas cannot tolerate f = {f}: PBFT needs n >= 3f+1 = "
                    f"{3 * f + 1} (more than f traitors is allowed, a smaller n is not)",
                )
        name = self.string(document, "name", ()) if "name" in document else ""
        description = self.string(document, "description", ()) if "description" in document else ""
        seed = self.integer(document, "seed", ()) if "seed" in document else 0
        limit = DEFAULT_DURATION_LIMIT_S
        if "duration_limit_s" in document:
            limit = self.number(document, "duration_limit_s", ())
        self.limit_ms = limit * 1000
        byzantine_tables = self.tables(document, "byzantine_client")
        workload = self.workload(document.get("workload", {}))
        self.total_clients = workload.clients + len(byzantine_tables)
        byzantine = self.byzantine_clients(byzantine_tables, workload.clients)
        return Scenario(
            name=name or Path(self.filename).stem,
            f=f,
            n=self.n,
            seed=seed,
            description=description,
            workload=workload,
            protocol=self.protocol(document.get("protocol", {})),
            traitors=tuple(
                self.traitor(table, index)
                for index, table in enumerate(self.tables(document, "traitor"))
            ),
            byzantine_clients=byzantine,
            network=tuple(
                self.network(table, index)
                for index, table in enumerate(self.tables(document, "network"))
            ),
            expect=self.expect(document.get("expect", {})),
            duration_limit_s=limit,
            source=self.filename,
        )

    def workload(self, table: Any) -> Workload:
        path: KeyPath = ("workload",)
        self.keys(table, path, _WORKLOAD_KEYS, "[workload]")
        values: dict[str, Any] = {}
        for key in ("clients", "requests", "keys"):
            if key in table:
                values[key] = self.integer(table, key, path, minimum=1)
        if "timeout_s" in table:
            values["timeout_s"] = self.number(table, "timeout_s", path)
        if "mix" in table:
            values["mix"] = self.mix(table["mix"])
        return Workload(**values)

    def mix(self, table: Any) -> tuple[tuple[str, float], ...]:
        path: KeyPath = ("workload", "mix")
        self.keys(table, path, OPERATIONS, "the operation mix")
        mix = []
        for operation, weight in table.items():
            if type(weight) not in (int, float) or not math.isfinite(weight) or weight < 0:
                self.fail(
                    (*path, operation),
                    f"mix: the weight of {operation} must be a number >= 0, "
                    f"got {_describe(weight)}",
                )
            mix.append((operation, float(weight)))
        if sum(weight for _, weight in mix) <= 0:
            self.fail(path, "mix: the weights must add up to more than 0")
        return tuple(mix)

    def protocol(self, table: Any) -> dict[str, int]:
        path: KeyPath = ("protocol",)
        self.keys(table, path, PROTOCOL_FIELDS, "[protocol]")
        values = {key: self.integer(table, key, path, minimum=1) for key in table}
        try:
            ProtocolParams(**{**SCENARIO_PROTOCOL, **values})
        except ConfigError as error:
            mentioned = [key for key in values if key in str(error)]
            self.fail((*path, *mentioned[:1]), f"[protocol]: {error}")
        return values

    def traitor(self, table: Any, index: int) -> TraitorTable:
        path: KeyPath = ("traitor", index)
        what = f"[[traitor]] number {index + 1}"
        if not isinstance(table, dict):
            self.fail(path, f"{what} must be a table")
        for key in ("replica", "behaviour"):
            if key not in table:
                self.fail(path, f"{what}: missing key {key}")
        replica = self.replica_id(table["replica"], (*path, "replica"), "replica")
        behaviour = self.string(table, "behaviour", path)
        if behaviour not in BEHAVIOURS:
            self.fail(
                (*path, "behaviour"),
                f"unknown behaviour {behaviour!r} (choose one of: {', '.join(BEHAVIOURS)})",
            )
        parameters = BEHAVIOURS[behaviour].PARAMS
        self.keys(table, path, (*TRAITOR_KEYS, *parameters), f"{what} ({behaviour})")
        trigger = self.trigger(table, path)
        params = {key: value for key, value in table.items() if key in parameters}
        if isinstance(params.get("clients"), list):
            for position, client in enumerate(params["clients"]):
                if type(client) is not int or not 0 <= client < self.total_clients:
                    self.fail(
                        (*path, "clients"),
                        f"clients: entry {position + 1} ({_describe(client)}) is not a client id "
                        f"(clients are 0..{self.total_clients - 1})",
                    )
        try:
            check_parameters(behaviour, params)
            make_behaviour(behaviour, trigger, **params)
        except BehaviourError as error:
            mentioned = [key for key in params if re.search(rf"\b{key}\b", str(error))]
            self.fail((*path, *(mentioned[:1] or ["behaviour"])), str(error))
        return TraitorTable(replica, behaviour, trigger, params, self.locator.line(path))

    def trigger(self, table: Mapping[str, Any], path: KeyPath) -> Trigger:
        values: dict[str, Any] = {
            key: self.integer(table, key, path) for key in TRIGGER_KEYS if key in table
        }
        for start, end in (("from_seq", "until_seq"), ("from_view", "until_view")):
            self.schedule(values, path, start, end, 0)
        self.schedule(values, path, "at_ms", "until_ms", 0)
        if "types" in table:
            types = table["types"]
            if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
                self.fail((*path, "types"), "types must be a list of message type names")
            try:  # the same check as --traitor's
                values["types"] = message_types(types)
            except BehaviourError as error:
                self.fail((*path, "types"), str(error))
        if "targets" in table:
            targets = table["targets"]
            if not isinstance(targets, list) or not targets:
                self.fail((*path, "targets"), "targets must be a non-empty list of replica ids")
            values["targets"] = frozenset(
                self.replica_id(target, (*path, "targets"), "targets") for target in targets
            )
        return Trigger(**values)

    def schedule(
        self, values: Mapping[str, Any], path: KeyPath, start: str, end: str, default: int
    ) -> None:
        """Refuse a window that can never be open."""
        begins = values.get(start, default)
        if end in values and values[end] <= begins:
            self.fail(
                (*path, end),
                f"{end} ({values[end]}) must be above {start} ({begins}): "
                "the window would never be open",
            )
        if start.endswith("_ms") and begins >= self.limit_ms:
            self.fail(
                (*path, start),
                f"{start} ({begins}) is not before the end of the run "
                f"(duration_limit_s = {self.limit_ms / 1000:g}): it would never happen",
            )

    def byzantine_clients(self, tables: list[Any], honest: int) -> tuple[ByzantineClientSpec, ...]:
        specs: list[ByzantineClientSpec] = []
        taken: set[int] = set()
        for index, table in enumerate(tables):
            path: KeyPath = ("byzantine_client", index)
            self.keys(table, path, _BYZANTINE_CLIENT_KEYS, "[[byzantine_client]]")
            if "mode" not in table:
                self.fail(
                    path, f"[[byzantine_client]]: missing key mode ({', '.join(CLIENT_MODES)})"
                )
            mode = self.string(table, "mode", path)
            if mode not in CLIENT_MODES:
                self.fail(
                    (*path, "mode"),
                    f"unknown Byzantine client mode {mode!r} (modes: {', '.join(CLIENT_MODES)})",
                )
            client = honest + index
            if "client" in table:
                client = self.integer(table, "client", path)
                if client >= self.total_clients:
                    self.fail(
                        (*path, "client"),
                        f"client {client} does not exist (with {honest} workload and {len(tables)} "
                        f"Byzantine clients, the clients are 0..{self.total_clients - 1})",
                    )
            if client in taken:
                self.fail((*path, "client"), f"client {client} is already a Byzantine client")
            taken.add(client)
            requests = self.integer(table, "requests", path, 1) if "requests" in table else 3
            specs.append(ByzantineClientSpec(client, mode, requests))
        return tuple(specs)

    def network(self, table: Any, index: int) -> Mapping[str, Any]:
        path: KeyPath = ("network", index)
        self.keys(table, path, NETWORK_KEYS, "[[network]]")
        for key in ("at_ms", "until_ms"):
            if key in table:
                self.integer(table, key, path)
        self.schedule(table, path, "at_ms", "until_ms", 0)
        try:
            rule: NetworkRule = rule_from_mapping(table, index)
        except NetworkFaultError as error:
            self.fail((*path, *self._mentioned(str(error), table)), str(error))
        try:
            rule.validate(self.n)
        except NetworkFaultError as error:
            key = "groups" if rule.groups else "links"
            self.fail((*path, key), f"network rule {index + 1}: {error}")
        return dict(table)

    @staticmethod
    def _mentioned(message: str, table: Mapping[str, Any]) -> list[str]:
        # Longest names first, so that "ms" does not shadow "jitter_ms" or "until_ms".
        for key in sorted(table, key=len, reverse=True):
            if re.search(rf"(?<![a-z_]){key}(?![a-z_])", message):
                return [key]
        return []

    def expect(self, table: Any) -> dict[str, bool]:
        path: KeyPath = ("expect",)
        self.keys(table, path, EXPECTATIONS, "[expect]")
        expected = {"safe": True}
        expected.update({key: self.boolean(table, key, path) for key in table})
        return expected
