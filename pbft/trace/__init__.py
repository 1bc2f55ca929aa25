"""One trace, two drivers: the JSON-lines event format both drivers write.

:mod:`pbft.trace.format` holds the contract (header, event names, ``frame_id``,
``node_name``, :class:`~pbft.trace.format.TraceWriter`, :func:`~pbft.trace.format.read_trace`);
``docs/trace.md`` documents it. The simulator (``faults.verification.hooks``) and the Trio
runtime write it; the renderer turns it into a picture. This package is a driver: it reads and
writes files, so the sans-IO core never imports it.
"""

from pbft.trace.format import (
    EVENT_NAMES,
    FAULT_KINDS,
    FORMAT,
    RAW_BYTES,
    TIME_UNIT,
    VERSION,
    TraceWriter,
    digest_prefix,
    frame_id,
    make_header,
    message_fields,
    node_name,
    operation_fields,
    read_trace,
    result_value,
)

__all__ = [
    "EVENT_NAMES",
    "FAULT_KINDS",
    "FORMAT",
    "RAW_BYTES",
    "TIME_UNIT",
    "VERSION",
    "TraceWriter",
    "digest_prefix",
    "frame_id",
    "make_header",
    "message_fields",
    "node_name",
    "operation_fields",
    "read_trace",
    "result_value",
]
