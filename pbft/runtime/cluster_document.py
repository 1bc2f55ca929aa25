"""``cluster.toml`` as a document: every table and key checked, every problem one line.

:func:`parse_document` turns the parsed TOML of a cluster folder
(:mod:`pbft.runtime.files`) into a :class:`~pbft.config.ClusterConfig`, its
:class:`~pbft.config.ProtocolParams` and the replicas' addresses, refusing
unknown and missing keys, wrong types, ids that are not exactly 0..count-1,
two replicas on one address, and public keys that are not 64 hex characters
or that are of small order. Every problem raises :class:`ConfigFileError`
with one line naming the file, the table or key and the problem. Messages
never quote key material: a private key pasted into the wrong place must not
end up in a log.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import attrs

from pbft.config import (
    DEFAULT_DURABILITY,
    ClusterConfig,
    ConfigError,
    ProtocolParams,
    check_durability,
)
from pbft.crypto import UnsafeKeyError, check_public_key
from pbft.runtime.limits import check_limits

CONFIG_NAME = "cluster.toml"

PROTOCOL_FIELDS = tuple(field.name for field in attrs.fields(ProtocolParams))


_TOP_LEVEL_KEYS = ("cluster_id", "f", "protocol", "storage", "replica", "client")


_STORAGE_KEYS = ("durability",)


_ENTRY_KEYS = {"replica": ("id", "host", "port", "public_key"), "client": ("id", "public_key")}


_MISSING_HINTS = {
    "replica": "no [[replica]] tables (each replica needs one)",
    "client": "no [[client]] tables (a cluster needs at least one client)",
}


HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ConfigFileError(ValueError):
    """A cluster folder that cannot be used; the message is one line naming file and problem."""


def fail(where: str, problem: str) -> NoReturn:
    raise ConfigFileError(" ".join(f"{where}: {problem}".splitlines()))


@attrs.frozen
class ReplicaAddress:
    """Where replica ``id`` accepts connections."""

    id: int
    host: str
    port: int


def parse_document(
    document: Mapping[str, Any],
) -> tuple[ClusterConfig, ProtocolParams, tuple[ReplicaAddress, ...]]:
    _check_keys(document, CONFIG_NAME, _TOP_LEVEL_KEYS, required=("cluster_id", "f"))
    cluster_id = _string(document, "cluster_id", CONFIG_NAME)
    f = integer(document, "f", CONFIG_NAME)
    params = _parse_protocol(document.get("protocol", {}))
    replica_tables = _entries(document, "replica")
    client_tables = _entries(document, "client")
    replicas = tuple(
        ReplicaAddress(table["id"], _host(table, where), _port(table, where))
        for where, table in replica_tables
    )
    _check_addresses(replicas)
    try:
        config = ClusterConfig(
            cluster_id,
            f,
            [_public_key(table, where) for where, table in replica_tables],
            [_public_key(table, where) for where, table in client_tables],
        )
    except ConfigError as error:
        fail(CONFIG_NAME, str(error))
    try:
        check_limits(params, config)
    except ConfigError as error:
        fail(f"{CONFIG_NAME}: [protocol]", str(error))
    return config, params, replicas


def _parse_protocol(table: object) -> ProtocolParams:
    where = f"{CONFIG_NAME}: [protocol]"
    if not isinstance(table, dict):
        fail(CONFIG_NAME, f"protocol must be a [protocol] table, got {_describe(table)}")
    _check_keys(table, where, PROTOCOL_FIELDS, required=())
    values = {name: integer(table, name, where) for name in table}
    try:
        return ProtocolParams(**values)
    except ConfigError as error:
        fail(where, str(error))


def parse_storage(document: Mapping[str, Any]) -> str:
    table = document.get("storage", {})
    where = f"{CONFIG_NAME}: [storage]"
    if not isinstance(table, dict):
        fail(CONFIG_NAME, f"storage must be a [storage] table, got {_describe(table)}")
    _check_keys(table, where, _STORAGE_KEYS, required=())
    try:
        return check_durability(table.get("durability", DEFAULT_DURABILITY))
    except ConfigError as error:
        fail(where, str(error))


def _entries(document: Mapping[str, Any], role: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``[[role]]`` tables sorted by id, each with the name messages use for it."""
    if role not in document:
        fail(CONFIG_NAME, _MISSING_HINTS[role])
    tables = document[role]
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        fail(CONFIG_NAME, f"{role} must be [[{role}]] tables, got {_describe(tables)}")
    if role == "client" and not tables:
        fail(CONFIG_NAME, _MISSING_HINTS[role])
    named = []
    for position, table in enumerate(tables, start=1):
        identifier = table.get("id")
        if isinstance(identifier, int) and not isinstance(identifier, bool):
            where = f"{CONFIG_NAME}: {role} {identifier}"
        else:
            where = f"{CONFIG_NAME}: [[{role}]] number {position}"
        _check_keys(table, where, _ENTRY_KEYS[role], required=_ENTRY_KEYS[role])
        integer(table, "id", where)
        named.append((where, table))
    _check_ids(role, [table["id"] for _, table in named])
    return sorted(named, key=lambda entry: entry[1]["id"])


def _check_ids(role: str, ids: list[int]) -> None:
    """Ids must be exactly 0..count-1: they index the key lists of :class:`ClusterConfig`."""
    count = len(ids)
    problems = [f"{i} appears {n} times" for i, n in sorted(Counter(ids).items()) if n > 1]
    problems += [f"{i} is missing" for i in range(count) if i not in ids]
    problems += [f"{i} is out of range" for i in sorted(set(ids)) if not 0 <= i < count]
    if problems:
        fail(
            CONFIG_NAME,
            f"{role} ids must be exactly 0..{count - 1} with one [[{role}]] each: "
            + ", ".join(problems),
        )


def _check_addresses(replicas: Sequence[ReplicaAddress]) -> None:
    owners: dict[tuple[str, int], int] = {}
    for replica in replicas:
        owner = owners.setdefault((replica.host.lower(), replica.port), replica.id)
        if owner != replica.id:
            fail(
                f"{CONFIG_NAME}: replica {replica.id}",
                f"port {replica.port} is also used by replica {owner}",
            )


def _check_keys(
    table: Mapping[str, Any], where: str, allowed: Sequence[str], required: Sequence[str]
) -> None:
    unknown = [_toml_key(key) for key in table if key not in allowed]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        fail(where, f"unknown key{plural} {', '.join(unknown)} (valid keys: {', '.join(allowed)})")
    for key in required:
        if key not in table:
            fail(where, f"missing key {key}")


def integer(table: Mapping[str, Any], key: str, where: str) -> int:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int):
        fail(where, f"{key} must be an integer, got {_describe(value)}")
    return value


def _string(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table[key]
    if not isinstance(value, str):
        fail(where, f"{key} must be a string, got {_describe(value)}")
    return value


def _host(table: Mapping[str, Any], where: str) -> str:
    host = _string(table, "host", where)
    if not host or not host.isprintable() or " " in host:
        fail(where, f"host must be a host name or an IP address, got {_describe(host)}")
    return host


def _port(table: Mapping[str, Any], where: str) -> int:
    port = integer(table, "port", where)
    if not 1 <= port <= 65535:
        fail(where, f"port {port} is not in 1..65535")
    return port


def _public_key(table: Mapping[str, Any], where: str) -> bytes:
    # Never quote the value: it may be a private key pasted into the wrong place.
    text = _string(table, "public_key", where)
    if not HEX_KEY.fullmatch(text):
        what = "non-hex characters" if len(text) == 64 else f"{len(text)} characters"
        fail(where, f"public_key must be 64 hex characters (32 bytes), got {what}")
    key = bytes.fromhex(text)
    try:
        check_public_key(key)
    except UnsafeKeyError as error:
        fail(where, f"public_key: {error}")
    return key


def _describe(value: object) -> str:
    """A value as TOML would spell it, shortened, on one line."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = toml_string(value if len(value) <= 40 else value[:40] + "...")
        return f"the string {shown}"
    if isinstance(value, int | float):
        return f"the {type(value).__name__.replace('int', 'integer')} {value}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = []
    for character in text:
        if character in _SHORT_ESCAPES:
            escaped.append(_SHORT_ESCAPES[character])
        elif ord(character) < 0x20 or ord(character) == 0x7F:
            escaped.append(f"\\u{ord(character):04X}")
        else:
            escaped.append(character)
    return '"' + "".join(escaped) + '"'
