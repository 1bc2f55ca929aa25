"""One canonical binary encoding for every message.

The wire form is MessagePack restricted to arrays, unsigned integers below
2**63 and byte strings. A message is the array ``[TAG, field, ...]`` in the
order of its class's ``SCHEMA``; a signed message is ``[payload, signature]``
where ``payload`` is the encoded message. Nested signed messages (the requests
in a PRE-PREPARE, the proofs in a VIEW-CHANGE) keep their own payload bytes, so
their signatures can be checked without re-encoding anything.

Canonical means: the same message always encodes to the same bytes, and only
those bytes decode. :func:`decode_signed` re-packs what it parsed and refuses
input that differs (for example an integer in a wider form than needed), so a
digest over received bytes equals the digest over the canonical form.

Decoding never raises anything but :class:`DecodeError`, whatever the bytes.
"""

from __future__ import annotations

from typing import Any

import msgpack

from pbft.messages import (
    BYTES,
    TYPE_BY_TAG,
    U64,
    PreparedCertificate,
    Signed,
    _ListOf,
    _SignedOf,
)

#: Largest encoded message accepted by default (bytes).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Largest signature accepted (bytes); both schemes fit.
MAX_SIGNATURE_BYTES = 64
U64_LIMIT = 2**63

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


class DecodeError(ValueError):
    """The bytes are not the canonical encoding of a valid message."""


# ------------------------------------------------------------------------- encoding


def _to_wire(kind: Any, value: Any) -> Any:
    if kind is U64 or kind is BYTES:
        return value
    if isinstance(kind, _ListOf):
        return [_to_wire(kind.kind, item) for item in value]
    if isinstance(kind, _SignedOf):
        return [value.payload, value.signature]
    # A nested structure (PreparedCertificate) without a tag.
    return [_to_wire(field_kind, getattr(value, name)) for name, field_kind in kind.SCHEMA]


def encode_message(message: Any) -> bytes:
    """The canonical bytes of an (unsigned) message."""
    wire = [message.TAG]
    for name, kind in message.SCHEMA:
        wire.append(_to_wire(kind, getattr(message, name)))
    return _pack(wire)


def encode_signed(signed: Signed[Any]) -> bytes:
    """The canonical bytes of a signed message, as sent on the wire."""
    return _pack([signed.payload, signed.signature])


# ------------------------------------------------------------------------- decoding


def _unpack(data: bytes, max_bytes: int) -> Any:
    if type(data) is not bytes:
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # the C decoder raises several types; all mean "malformed"
        raise DecodeError(f"malformed encoding: {type(error).__name__}: {error}") from None
    try:
        canonical = _pack(value) == data
    except Exception:  # values the packer cannot represent cannot be canonical
        canonical = False
    if not canonical:
        raise DecodeError("not in canonical form")
    return value


def _from_wire(kind: Any, value: Any, where: str, max_bytes: int) -> Any:
    if kind is U64:
        if type(value) is not int or not 0 <= value < U64_LIMIT:
            raise DecodeError(f"{where}: expected an unsigned integer below 2**63")
        return value
    if kind is BYTES:
        if type(value) is not bytes:
            raise DecodeError(f"{where}: expected bytes")
        return value
    if type(value) is not list:
        raise DecodeError(f"{where}: expected an array")
    if isinstance(kind, _ListOf):
        return tuple(
            _from_wire(kind.kind, item, f"{where}[{index}]", max_bytes)
            for index, item in enumerate(value)
        )
    if isinstance(kind, _SignedOf):
        signed = _signed_from_wire(value, where, max_bytes)
        if type(signed.message) is not kind.message_type:
            raise DecodeError(f"{where}: expected a signed {kind.message_type.TYPE}")
        return signed
    return _fields_from_wire(kind, value, 0, where, max_bytes)


def _fields_from_wire(cls: Any, value: list[Any], offset: int, where: str, max_bytes: int) -> Any:
    schema = cls.SCHEMA
    if len(value) - offset != len(schema):
        raise DecodeError(f"{where}: expected {len(schema)} fields, got {len(value) - offset}")
    # SCHEMA lists the fields in the class's own order (a unit test checks it).
    return cls(
        *[
            _from_wire(kind, value[offset + index], f"{where}.{name}", max_bytes)
            for index, (name, kind) in enumerate(schema)
        ]
    )


def _signed_from_wire(value: Any, where: str, max_bytes: int) -> Signed[Any]:
    if type(value) is not list or len(value) != 2:
        raise DecodeError(f"{where}: a signed message is [payload, signature]")
    payload, signature = value
    if type(payload) is not bytes or type(signature) is not bytes:
        raise DecodeError(f"{where}: payload and signature must be bytes")
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise DecodeError(f"{where}: signature longer than {MAX_SIGNATURE_BYTES} bytes")
    return Signed(decode_message(payload, max_bytes), signature, payload)


def decode_message(payload: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Any:
    """Decode the canonical bytes of an unsigned message; raise :class:`DecodeError`."""
    value = _unpack(payload, max_bytes)
    if type(value) is not list or not value:
        raise DecodeError("a message is a non-empty array")
    tag = value[0]
    cls = TYPE_BY_TAG.get(tag) if type(tag) is int else None
    if cls is None:
        raise DecodeError(f"unknown message type tag {tag!r}")
    return _fields_from_wire(cls, value, 1, cls.TYPE, max_bytes)


def decode_signed(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Signed[Any]:
    """Decode a signed message from the wire; raise :class:`DecodeError` on any defect.

    Decoding checks form only; whether the signature is valid is for
    :mod:`pbft.auth` to decide.
    """
    return _signed_from_wire(_unpack(data, max_bytes), "message", max_bytes)


def encode_certificate(certificate: Any) -> bytes:
    """The canonical bytes of a prepared certificate (stored by journals)."""
    return _pack(_to_wire(type(certificate), certificate))


def decode_certificate(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Any:
    """Decode :func:`encode_certificate`'s output; raise :class:`DecodeError`."""
    return _from_wire(PreparedCertificate, _unpack(data, max_bytes), "certificate", max_bytes)
