"""The replicated key-value store (pbft/service.py).

Rules checked here:

* get/put/delete/cas semantics; cas with expected None succeeds only if the key is absent;
* a malformed operation gives an error result (decode_result -> OperationError), never
  raises, and never changes the state;
* snapshot/restore round-trips; equal states give equal snapshots whatever the history;
* restoring anything that is not a snapshot raises SnapshotError and keeps the state.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbft import service as kv
from pbft.service import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    KeyValueStore,
    OperationError,
    SnapshotError,
    decode_result,
)


def run(store: KeyValueStore, operation: bytes) -> Any:
    """Execute one operation and decode its result."""
    return decode_result(store.execute(operation))


def store_with(items: dict[str, str]) -> KeyValueStore:
    """A store holding ``items``, built through put operations."""
    store = KeyValueStore()
    for key, value in items.items():
        assert run(store, kv.put(key, value)) is True
    return store


# ------------------------------------------------------------------- semantics


def test_get_of_absent_key_is_none():
    """get returns None for a key never written."""
    assert run(KeyValueStore(), kv.get("missing")) is None


def test_put_then_get_returns_the_value():
    """put returns True and get then returns the value."""
    store = KeyValueStore()
    assert run(store, kv.put("k", "v")) is True
    assert run(store, kv.get("k")) == "v"


def test_put_overwrites():
    """A second put replaces the value."""
    store = store_with({"k": "old"})
    assert run(store, kv.put("k", "new")) is True
    assert run(store, kv.get("k")) == "new"


def test_delete_reports_whether_the_key_existed():
    """delete returns True and removes an existing key; False for an absent key."""
    store = store_with({"k": "v"})
    assert run(store, kv.delete("k")) is True
    assert run(store, kv.get("k")) is None
    assert run(store, kv.delete("k")) is False


def test_empty_string_is_a_value_distinct_from_absence():
    """A key set to "" exists: get returns "", delete returns True."""
    store = store_with({"k": ""})
    assert run(store, kv.get("k")) == ""
    assert run(store, kv.delete("k")) is True


def test_cas_swaps_when_expected_matches():
    """cas(k, current, new) sets the new value and returns True."""
    store = store_with({"k": "a"})
    assert run(store, kv.cas("k", "a", "b")) is True
    assert run(store, kv.get("k")) == "b"


def test_cas_fails_when_expected_differs():
    """cas(k, other, new) returns False and leaves the value."""
    store = store_with({"k": "a"})
    assert run(store, kv.cas("k", "x", "b")) is False
    assert run(store, kv.get("k")) == "a"


def test_cas_with_expected_value_on_absent_key_fails():
    """cas(k, "x", new) on an absent key returns False and does not create the key."""
    store = KeyValueStore()
    assert run(store, kv.cas("k", "x", "b")) is False
    assert run(store, kv.get("k")) is None


def test_cas_with_expected_none_succeeds_only_if_absent():
    """cas(k, None, new) creates an absent key, and fails once the key exists."""
    store = KeyValueStore()
    assert run(store, kv.cas("k", None, "first")) is True
    assert run(store, kv.get("k")) == "first"
    assert run(store, kv.cas("k", None, "second")) is False
    assert run(store, kv.get("k")) == "first"


def test_cas_with_expected_none_fails_for_empty_string_value():
    """A key holding "" is present: cas(k, None, new) must not treat it as absent."""
    store = store_with({"k": ""})
    assert run(store, kv.cas("k", None, "new")) is False
    assert run(store, kv.get("k")) == ""


def test_cas_with_expected_none_after_delete_succeeds():
    """A deleted key is absent again."""
    store = store_with({"k": "v"})
    run(store, kv.delete("k"))
    assert run(store, kv.cas("k", None, "again")) is True


def test_size_limits_are_inclusive():
    """A key and a value of exactly the largest sizes are accepted."""
    store = KeyValueStore()
    key = "k" * MAX_KEY_BYTES
    value = "v" * MAX_VALUE_BYTES
    assert run(store, kv.put(key, value)) is True
    assert run(store, kv.get(key)) == value


def test_execution_is_deterministic():
    """Two stores given the same operations return the same results and reach the same state."""
    operations = [
        kv.put("a", "1"),
        kv.cas("a", "1", "2"),
        kv.cas("b", None, "3"),
        kv.delete("a"),
        b"\xc1garbage",
        kv.get("b"),
    ]
    first, second = KeyValueStore(), KeyValueStore()
    assert [first.execute(op) for op in operations] == [second.execute(op) for op in operations]
    assert first.snapshot() == second.snapshot()


# ------------------------------------------------------------- malformed ops

MALFORMED_OPERATIONS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xc1", id="reserved-byte"),
    pytest.param(kv.put("k", "v") + b"\x00", id="trailing-bytes"),
    pytest.param(kv.put("k", "v")[:-1], id="truncated"),
    pytest.param(msgpack.packb("put"), id="not-a-list"),
    pytest.param(msgpack.packb({"put": ["k", "v"]}), id="map"),
    pytest.param(msgpack.packb([]), id="empty-list"),
    pytest.param(msgpack.packb(["drop", "k"]), id="unknown-name"),
    pytest.param(msgpack.packb([b"put", "k", "v"]), id="bytes-name"),
    pytest.param(msgpack.packb([7, "k"]), id="int-name"),
    pytest.param(msgpack.packb(["get"]), id="get-no-key"),
    pytest.param(msgpack.packb(["get", "k", "x"]), id="get-extra-arg"),
    pytest.param(msgpack.packb(["put", "k"]), id="put-no-value"),
    pytest.param(msgpack.packb(["delete", "k", "v"]), id="delete-extra-arg"),
    pytest.param(msgpack.packb(["cas", "k", "a"]), id="cas-short"),
    pytest.param(msgpack.packb(["put", 1, "v"]), id="int-key"),
    pytest.param(msgpack.packb(["put", None, "v"]), id="nil-key"),
    pytest.param(msgpack.packb(["put", b"k", "v"], use_bin_type=True), id="bytes-key"),
    pytest.param(msgpack.packb(["put", "k", b"v"], use_bin_type=True), id="bytes-value"),
    pytest.param(msgpack.packb(["put", "k", 5]), id="int-value"),
    pytest.param(msgpack.packb(["put", "k", None]), id="nil-value"),
    pytest.param(msgpack.packb(["put", "k", ["v"]]), id="list-value"),
    pytest.param(msgpack.packb(["cas", "k", "a", None]), id="cas-nil-new"),
    pytest.param(msgpack.packb(["cas", "k", 1, "b"]), id="cas-int-expected"),
    pytest.param(msgpack.packb(["put", "k" * (MAX_KEY_BYTES + 1), "v"]), id="key-too-long"),
    pytest.param(msgpack.packb(["put", "é" * 513, "v"]), id="key-too-long-in-utf8-bytes"),
    pytest.param(msgpack.packb(["put", "k", "v" * (MAX_VALUE_BYTES + 1)]), id="value-too-long"),
    pytest.param(b"\x93\xa3put\xa1k\xa2\xff\xfe", id="invalid-utf8-value"),
]


@pytest.mark.parametrize("operation", MALFORMED_OPERATIONS)
def test_malformed_operation_is_an_error_result_and_changes_nothing(operation):
    """A malformed operation yields OperationError and leaves the state as it was."""
    store = store_with({"k": "v", "other": "x"})
    before = store.snapshot()
    result = run(store, operation)
    assert isinstance(result, OperationError)
    assert str(result)  # the error says why
    assert store.snapshot() == before


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(msgpack.packb([["get"], "k"]), id="list-as-name"),
        pytest.param(msgpack.packb([{"a": 1}, "k"]), id="map-as-name"),
    ],
)
def test_operation_with_unhashable_name_is_an_error_result(operation):
    """An operation whose name is a list or map is malformed, not a crash."""
    store = store_with({"k": "v"})
    before = store.snapshot()
    assert isinstance(run(store, operation), OperationError)
    assert store.snapshot() == before


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_property_execute_never_raises_on_random_bytes(operation):
    """execute returns a result for any bytes; a refused one leaves the state unchanged."""
    store = store_with({"k": "v"})
    before = store.snapshot()
    result = run(store, operation)
    if isinstance(result, OperationError):
        assert store.snapshot() == before


# ---------------------------------------------------------- snapshot / restore


def test_snapshot_restore_round_trip():
    """A store restored from a snapshot has the same data and answers the same way."""
    original = store_with({"a": "1", "b": "2", "ü": "ß", "": "empty key"})
    restored = KeyValueStore()
    restored.restore(original.snapshot())
    assert restored.data == original.data
    assert restored.snapshot() == original.snapshot()
    for operation in (kv.get("a"), kv.cas("b", "2", "3"), kv.delete(""), kv.get("zz")):
        assert restored.execute(operation) == original.execute(operation)
    assert restored.snapshot() == original.snapshot()


def test_restore_replaces_the_whole_state():
    """restore discards keys not in the snapshot."""
    store = store_with({"stale": "x"})
    store.restore(store_with({"fresh": "y"}).snapshot())
    assert store.data == {"fresh": "y"}


def test_empty_store_snapshot_round_trips():
    """The empty state snapshots and restores."""
    store = store_with({"k": "v"})
    store.restore(KeyValueStore().snapshot())
    assert store.data == {}


def test_snapshot_is_independent_of_insertion_order():
    """Equal states give equal snapshots whatever order the keys were written in."""
    forward = store_with({"a": "1", "b": "2", "c": "3"})
    backward = store_with({"c": "3", "b": "2", "a": "1"})
    assert forward.snapshot() == backward.snapshot()


def test_snapshot_is_independent_of_history():
    """Overwritten and deleted keys leave no trace in the snapshot."""
    plain = store_with({"a": "1"})
    busy = store_with({"z": "gone", "a": "0"})
    run(busy, kv.delete("z"))
    run(busy, kv.cas("a", "0", "1"))
    assert plain.snapshot() == busy.snapshot()


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=10),
    st.randoms(use_true_random=False),
)
def test_property_equal_states_give_equal_snapshots(items, rng):
    """Any insertion order of the same items gives the same snapshot, which round-trips."""
    shuffled = list(items.items())
    rng.shuffle(shuffled)
    first = store_with(items)
    second = store_with(dict(shuffled))
    assert first.snapshot() == second.snapshot()
    restored = KeyValueStore()
    restored.restore(first.snapshot())
    assert restored.data == items
    assert restored.snapshot() == first.snapshot()


GARBAGE_SNAPSHOTS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xc1", id="reserved-byte"),
    pytest.param(b"\x91", id="truncated"),
    pytest.param(msgpack.packb([["a", "1"]]) + b"\x00", id="trailing-bytes"),
    pytest.param(msgpack.packb(5), id="int"),
    pytest.param(msgpack.packb(None), id="nil"),
    pytest.param(msgpack.packb([1, 2]), id="list-of-ints"),
    pytest.param(msgpack.packb([["a"]]), id="one-element-pair"),
    pytest.param(msgpack.packb([["a", "1", "x"]]), id="triple"),
    pytest.param(msgpack.packb([["a", 1]]), id="int-value"),
    pytest.param(msgpack.packb([[1, "a"]]), id="int-key"),
    pytest.param(msgpack.packb([["a", None]]), id="nil-value"),
    pytest.param(msgpack.packb([[b"a", "1"]], use_bin_type=True), id="bytes-key"),
    pytest.param(msgpack.packb([[["a"], "1"]]), id="list-key"),
    pytest.param(b"\x91\x92\xa1a\xa2\xff\xfe", id="invalid-utf8"),
]


@pytest.mark.parametrize("snapshot", GARBAGE_SNAPSHOTS)
def test_restore_of_garbage_raises_snapshot_error_and_keeps_state(snapshot):
    """Bytes that are not a snapshot raise SnapshotError and the state is untouched."""
    store = store_with({"k": "v"})
    with pytest.raises(SnapshotError):
        store.restore(snapshot)
    assert store.data == {"k": "v"}


@pytest.mark.parametrize("snapshot", [None, "text", 5, bytearray(b"\xc1")])
def test_restore_of_non_bytes_raises_snapshot_error(snapshot):
    """A non-bytes argument is a SnapshotError too, not a TypeError."""
    store = store_with({"k": "v"})
    with pytest.raises(SnapshotError):
        store.restore(snapshot)
    assert store.data == {"k": "v"}


@pytest.mark.parametrize(
    "snapshot",
    [
        pytest.param(msgpack.packb(["ab"]), id="two-char-string-as-pair"),
        pytest.param(msgpack.packb({"ab": "cd"}), id="map-keys-split-into-pairs"),
        pytest.param(msgpack.packb([["b", "1"], ["a", "2"]]), id="unsorted-pairs"),
        pytest.param(msgpack.packb([["a", "1"], ["a", "2"]]), id="duplicate-keys"),
    ],
)
def test_restore_refuses_bytes_that_snapshot_never_produces(snapshot):
    """Only a canonical snapshot (sorted, unique [key, value] pairs) restores."""
    store = store_with({"k": "v"})
    with pytest.raises(SnapshotError):
        store.restore(snapshot)
    assert store.data == {"k": "v"}


# ------------------------------------------------------------------- results


def test_decode_result_of_error_is_operation_error():
    """An error result decodes to an OperationError, a str carrying the reason."""
    result = decode_result(KeyValueStore().execute(b"\xc1"))
    assert isinstance(result, OperationError)
    assert isinstance(result, str)


def test_decode_result_of_values_is_not_an_error():
    """Ordinary results (None, strings, booleans) never decode as OperationError."""
    store = store_with({"error": "x"})
    for operation in (kv.get("error"), kv.get("none"), kv.put("a", "error"), kv.delete("a")):
        assert not isinstance(run(store, operation), OperationError)
