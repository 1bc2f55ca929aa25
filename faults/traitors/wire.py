"""Hostile bytes for the decoder: a message's encoding broken at one nesting level.

The structure-aware generators of :mod:`faults.traitors.byzantine` build messages a faulty
key can sign, so they always decode; the decoder's own refusals (``pbft.encoding``) are
reached only by bytes no encoder writes. :func:`corrupt` takes the canonical encoding of
a seen message and breaks exactly one thing, at the top or inside a nested signed
message (a request in a batch, a vote in a certificate, a certificate in a
VIEW-CHANGE): the frame's shape, canonical form, the length limit, the signature's
length, a type tag, a field count, a field's type or range, or the type of a nested
signed message. Everything is drawn from the traitor's seeded ``rng``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack

from pbft.encoding import MAX_SIGNATURE_BYTES, TYPE_BY_TAG, U64_LIMIT

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True)


def corrupt(
    rng: random.Random, data: bytes, max_bytes: int, other_payloads: list[bytes]
) -> tuple[str, bytes]:
    """(what was broken, the bytes): ``data`` is an encoded signed message."""
    payload, signature = _unpack(data)
    roll = rng.randrange(8)
    if roll == 0:
        return "truncated", data[: rng.randrange(len(data))]
    if roll == 1:
        # The same value with a wider array header (0xdc) than the canonical fixarray.
        return "non-canonical", b"\xdc\x00\x02" + data[1:]
    if roll == 2:
        return "over-the-limit", b"\x92" + b"\0" * max_bytes
    if roll == 3:
        shapes: list[Any] = [[payload], [payload, signature, b""], 7, [payload.hex(), signature]]
        return "not-a-signed-pair", _pack(shapes[rng.randrange(len(shapes))])
    if roll == 4:
        return "long-signature", _pack([payload, rng.randbytes(MAX_SIGNATURE_BYTES + 1)])
    name, broken = _corrupt_payload(rng, payload, other_payloads, depth=0)
    return name, _pack([broken, signature])


def _corrupt_payload(
    rng: random.Random, payload: bytes, other_payloads: list[bytes], depth: int
) -> tuple[str, bytes]:
    value = _unpack(payload)
    nested = [path for path in _paths(value) if _is_signed_pair(_at(value, path))]
    if nested and depth < 3 and rng.random() < 0.5:
        path = nested[rng.randrange(len(nested))]
        inner, inner_signature = _at(value, path)
        if other_payloads and rng.random() < 0.3:
            # A signed message of another type where this one is expected.
            others = [p for p in other_payloads if p[:2] != inner[:2]]
            if others:
                _put(value, path, [others[rng.randrange(len(others))], inner_signature])
                return "nested-of-another-type", _pack(value)
        name, broken = _corrupt_payload(rng, inner, other_payloads, depth + 1)
        _put(value, path, [broken, inner_signature])
        return f"nested-{name}", _pack(value)
    roll = rng.randrange(4)
    if roll == 0:
        tags: list[Any] = [max(TYPE_BY_TAG) + 1 + rng.randrange(100), "PREPARE", None]
        return "unknown-tag", _pack([tags[rng.randrange(len(tags))], *value[1:]])
    if roll == 1:
        options: list[Any] = [[], 3, value[:-1], [*value, 0]]
        return "wrong-shape", _pack(options[rng.randrange(len(options))])
    paths = [path for path in _paths(value) if path != (0,)]
    path = paths[rng.randrange(len(paths))]
    _put(value, path, _other_kind(rng, _at(value, path)))
    return "wrong-field", _pack(value)


def _other_kind(rng: random.Random, old: Any) -> Any:
    """A value of another kind than ``old``, or an integer out of range."""
    choices: list[Callable[[], Any]] = [lambda: "x"]
    if type(old) is int:
        choices += [lambda: -1 - rng.randrange(5), lambda: U64_LIMIT + rng.randrange(5)]
    else:
        choices.append(lambda: rng.randrange(2**16))
    if type(old) is not bytes:
        choices.append(lambda: rng.randbytes(4))
    if type(old) is not list:
        choices.append(lambda: [1])
    return choices[rng.randrange(len(choices))]()


def _is_signed_pair(node: Any) -> bool:
    return type(node) is list and len(node) == 2 and all(type(x) is bytes for x in node)


def _paths(node: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    found: list[tuple[int, ...]] = []
    if type(node) is list:
        for index, item in enumerate(node):
            found.append((*prefix, index))
            if not _is_signed_pair(item):
                found += _paths(item, (*prefix, index))
    return found


def _at(node: Any, path: tuple[int, ...]) -> Any:
    for index in path:
        node = node[index]
    return node


def _put(node: Any, path: tuple[int, ...], new: Any) -> None:
    _at(node, path[:-1])[path[-1]] = new
