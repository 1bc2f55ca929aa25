"""The replicated service: a deterministic state machine behind PBFT.

PBFT orders opaque operations; a :class:`Service` gives them meaning. It must
be deterministic (the same operations in the same order give the same results
and the same state on every replica) and able to snapshot and restore its
state, so that checkpoints can be digested and transferred (§4.3).

The default service is :class:`KeyValueStore`, with ``get``, ``put``,
``delete`` and ``cas`` (compare-and-set). Operations and results are encoded
with MessagePack; the helpers :func:`put`, :func:`get`, :func:`delete`,
:func:`cas` build operations and :func:`decode_result` reads results. A
malformed operation (say, from a faulty client) is executed deterministically
as an error result: it never raises and never changes the state.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack


class Service(Protocol):
    """What PBFT needs from the state machine it replicates."""

    def execute(self, operation: bytes) -> bytes:
        """Apply one operation and return its result; must be deterministic."""
        ...

    def is_read_only(self, operation: bytes) -> bool:
        """True if executing ``operation`` never changes the state (it may then be
        answered without ordering, see :class:`pbft.messages.Read`)."""
        ...

    def snapshot(self) -> bytes:
        """The whole state as canonical bytes (equal states give equal bytes)."""
        ...

    def restore(self, snapshot: bytes) -> None:
        """Replace the state with one produced by :meth:`snapshot`."""
        ...


class SnapshotError(ValueError):
    """A snapshot that this service cannot restore."""


MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 2048


def put(key: str, value: str) -> bytes:
    return msgpack.packb(["put", key, value])


def get(key: str) -> bytes:
    return msgpack.packb(["get", key])


def delete(key: str) -> bytes:
    return msgpack.packb(["delete", key])


def cas(key: str, expected: str | None, new: str) -> bytes:
    """Set ``key`` to ``new`` if its value is ``expected`` (None: the key is absent)."""
    return msgpack.packb(["cas", key, expected, new])


def decode_operation(operation: bytes) -> tuple[str, list[Any]]:
    """Parse an operation into (name, arguments); raise ValueError if malformed."""
    try:
        value = msgpack.unpackb(operation, raw=False)
    except Exception as error:  # the C decoder raises several types
        raise ValueError(f"malformed operation: {error}") from None
    if type(value) is not list or not value or type(value[0]) is not str or value[0] not in _ARITY:
        raise ValueError("an operation is [name, args...] with name get|put|delete|cas")
    name, args = value[0], value[1:]
    if len(args) != _ARITY[name]:
        raise ValueError(f"{name} takes {_ARITY[name]} arguments")
    key = args[0]
    if type(key) is not str or len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"a key is a string of at most {MAX_KEY_BYTES} bytes")
    for index, value_arg in enumerate(args[1:], start=1):
        if value_arg is None and name == "cas" and index == 1:
            continue  # cas(key, None, new): succeed only if the key is absent
        if type(value_arg) is not str or len(value_arg.encode()) > MAX_VALUE_BYTES:
            raise ValueError(f"a value is a string of at most {MAX_VALUE_BYTES} bytes")
    return name, args


_ARITY = {"get": 1, "put": 2, "delete": 1, "cas": 3}


def is_read_only(operation: bytes) -> bool:
    """``get`` only (a malformed operation is not: it goes the ordered way)."""
    try:
        name, _ = decode_operation(operation)
    except ValueError:
        return False
    return name == "get"


def decode_result(result: bytes) -> Any:
    """The value a KeyValueStore result stands for.

    get: the value or None; put: True; delete: whether the key existed;
    cas: whether the swap happened. A refused operation decodes to a
    :class:`OperationError`.
    """
    value = msgpack.unpackb(result, raw=False)
    if type(value) is list and len(value) == 2 and value[0] == "error":
        return OperationError(value[1])
    return value


class OperationError(str):
    """The service refused a malformed operation (the text says why)."""


class KeyValueStore:
    """A deterministic string-to-string map."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def execute(self, operation: bytes) -> bytes:
        try:
            name, args = decode_operation(operation)
        except ValueError as error:
            return msgpack.packb(["error", str(error)])
        key = args[0]
        if name == "get":
            return msgpack.packb(self.data.get(key))
        if name == "put":
            self.data[key] = args[1]
            return msgpack.packb(True)
        if name == "delete":
            return msgpack.packb(self.data.pop(key, None) is not None)
        expected, new = args[1], args[2]
        if self.data.get(key) != expected:
            return msgpack.packb(False)
        self.data[key] = new
        return msgpack.packb(True)

    def is_read_only(self, operation: bytes) -> bool:
        return is_read_only(operation)

    def snapshot(self) -> bytes:
        return msgpack.packb(sorted(self.data.items()))

    def restore(self, snapshot: bytes) -> None:
        try:
            items = msgpack.unpackb(snapshot, raw=False)
        except Exception as error:  # the C decoder raises several types
            raise SnapshotError(f"not a key-value snapshot: {error}") from None
        if type(items) is not list or not all(
            type(item) is list and len(item) == 2 and type(item[0]) is str and type(item[1]) is str
            for item in items
        ):
            raise SnapshotError("not a key-value snapshot: expected [[key, value], ...] strings")
        data = dict(items)
        # Only what snapshot() produces: sorted, unique keys, canonical bytes.
        if msgpack.packb(sorted(data.items())) != snapshot:
            raise SnapshotError("not a key-value snapshot: not in canonical form")
        self.data = data
