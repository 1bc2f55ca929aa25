"""``pbft client``: one operation through a cluster, its input checked and its answer said plainly.

The command builds one key-value operation (:mod:`pbft.service`), runs it
with a :class:`~pbft.runtime.client.RemoteClient` and prints the result. It
checks its input first, so that every mistake is one line and a non-zero
exit rather than a traceback or a request the replicas would refuse: keys and
values must be UTF-8 text (an argument that is not arrives as surrogates,
and is named with its first bad byte), keys at most
:data:`~pbft.service.MAX_KEY_BYTES` bytes and values at most
:data:`~pbft.service.MAX_VALUE_BYTES`, and the signed request within the
cluster's ``max_request_bytes``. ``put KEY --file F`` and ``put KEY -``
(standard input) take a value too long or awkward for the command line,
exactly as read.

Results are printed for people (``ok``, ``deleted``, ``swapped``...) or, with
``--json``, as one JSON object whose ``result`` is the service's own value.
When no quorum agrees in time, the message says what the client saw
(:meth:`~pbft.runtime.client.RemoteClient.diagnosis`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from pbft import service as kv
from pbft.config import ConfigError, ProtocolParams

LIMITS = (
    f"keys and values are UTF-8 text; a key takes at most {kv.MAX_KEY_BYTES} bytes and a "
    f"value at most {kv.MAX_VALUE_BYTES} (and the signed request at most max_request_bytes "
    f"of cluster.toml, {ProtocolParams().max_request_bytes} by default)"
)
#: What ``pbft client DIR put KEY -`` reads the value from.
STDIN_VALUE = "-"


def add_parser(commands: Any) -> None:
    client = commands.add_parser(
        "client",
        help="run one operation through a cluster",
        description=textwrap.fill(f"Run one operation through a cluster: {LIMITS}.", 78),
        epilog="examples:\n"
        "  pbft client ./c put colour blue\n"
        "  pbft client ./c put notes --file notes.txt     the value is the file's content\n"
        "  date | pbft client ./c put now -               the value is read from stdin\n"
        "  pbft client ./c get colour --json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    client.add_argument("directory", type=Path, metavar="DIR")
    # The options work before or after the operation (pbft client DIR get KEY --json).
    _add_options(client, with_defaults=True)
    operations = client.add_subparsers(dest="operation", required=True, metavar="OPERATION")
    put = operations.add_parser(
        "put",
        help="set KEY to VALUE",
        description=textwrap.fill(
            f"Set KEY to VALUE ('-': read it from stdin) or to FILE's content; {LIMITS}.", 78
        ),
    )
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="the value; '-' reads it from standard input")
    put.add_argument("--file", type=Path, metavar="FILE", help="the value is FILE's content")
    get = operations.add_parser("get", help="read KEY")
    get.add_argument("key")
    delete = operations.add_parser("delete", help="remove KEY")
    delete.add_argument("key")
    cas = operations.add_parser("cas", help="set KEY to NEW if its value is EXPECTED")
    cas.add_argument("key")
    cas.add_argument("expected", help="expected value ('' with --absent)")
    cas.add_argument("new")
    cas.add_argument("--absent", action="store_true", help="expect the key to be absent")
    for operation in (put, get, delete, cas):
        _add_options(operation, with_defaults=False)


def _add_options(parser: argparse.ArgumentParser, with_defaults: bool) -> None:
    """--client, --timeout, --json; on the operation's parser they must not reset values
    given before the operation, so there they have no defaults."""

    def default(value: Any) -> Any:
        return value if with_defaults else argparse.SUPPRESS

    parser.add_argument(
        "--client",
        type=int,
        default=default(0),
        dest="client_id",
        help="which configured client identity to use (default: 0)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(10.0),
        help="seconds to wait for f+1 matching replies, 2f+1 with fast_reads (default: 10)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print one JSON object"
    )


def check_seconds(option: str, value: float) -> None:
    """A duration given on the command line must be a finite number above 0."""
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{option} must be a number of seconds above 0, got {value:g}")


def run(args: argparse.Namespace) -> int:
    import trio

    from pbft.runtime.client import NoQuorum, RemoteClient
    from pbft.runtime.files import load_cluster

    check_seconds("--timeout", args.timeout)
    files = load_cluster(args.directory)
    if not 0 <= args.client_id < len(files.config.client_keys):
        count = len(files.config.client_keys)
        raise ConfigError(f"--client {args.client_id}: the cluster has clients 0..{count - 1}")
    operation = build_operation(args)

    async def main() -> tuple[Any, float] | NoQuorum | ValueError:
        client = RemoteClient(files, args.client_id)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            started = time.perf_counter()
            try:
                result = await client.execute(operation, timeout=args.timeout)
            # Returned, not raised: they would leave the nursery as an exception group.
            except (NoQuorum, ValueError) as error:
                return error
            finally:
                nursery.cancel_scope.cancel()
        return kv.decode_result(result), time.perf_counter() - started

    outcome = trio.run(main)
    if isinstance(outcome, NoQuorum):
        print(f"pbft client: {outcome}", file=sys.stderr)
        return 1
    if isinstance(outcome, ValueError):  # the signed request is over max_request_bytes
        raise ConfigError(f"{outcome} (max_request_bytes in {args.directory}/cluster.toml)")
    result, elapsed = outcome
    if isinstance(result, kv.OperationError):
        print(f"pbft client: the service refused the operation: {result}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"operation": args.operation, "key": args.key, "result": result,
                          "latency_ms": round(elapsed * 1000, 2)}))  # fmt: skip
    else:
        print(describe_result(args, result))
    return 0


def build_operation(args: argparse.Namespace) -> bytes:
    """The operation the arguments ask for; ConfigError names any input the service refuses."""
    key = text_argument("the key", args.key, kv.MAX_KEY_BYTES)
    if args.operation == "put":
        return kv.put(key, put_value(args))
    if args.operation == "get":
        return kv.get(key)
    if args.operation == "delete":
        return kv.delete(key)
    expected = None if args.absent else text_argument("EXPECTED", args.expected, kv.MAX_VALUE_BYTES)
    return kv.cas(key, expected, text_argument("NEW", args.new, kv.MAX_VALUE_BYTES))


def put_value(args: argparse.Namespace) -> str:
    """VALUE, FILE's content or standard input, checked like any value."""
    limit = kv.MAX_VALUE_BYTES
    if args.file is not None:
        if args.value is not None:
            raise ConfigError("give the value either as VALUE or with --file, not both")
        try:
            with open(args.file, "rb") as handle:
                data = handle.read(limit + 1)
        except OSError as error:
            raise ConfigError(f"cannot read {args.file}: {error.strerror or error}") from None
        return decoded(f"the value in {args.file}", data, limit)
    if args.value is None:
        raise ConfigError("put needs a VALUE, '-' to read it from stdin, or --file FILE")
    if args.value == STDIN_VALUE:
        return decoded("the value read from stdin", sys.stdin.buffer.read(limit + 1), limit)
    return text_argument("the value", args.value, limit)


def text_argument(name: str, text: str, limit: int) -> str:
    """A command-line argument as UTF-8 text of at most ``limit`` bytes.

    Arguments that are not UTF-8 reach Python as lone surrogates
    (``surrogateescape``); ``os.fsencode`` gives back the bytes as typed.
    """
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = os.fsencode(text)
    return decoded(name, data, limit)


def decoded(name: str, data: bytes, limit: int) -> str:
    if len(data) > limit:
        raise ConfigError(f"{name} is over {limit} bytes: {LIMITS}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{name} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); keys and values are UTF-8 text"
        ) from None


def describe_result(args: argparse.Namespace, result: Any) -> str:
    """The service's answer in words (``--json`` prints the value itself)."""
    if args.operation == "get":
        return "(absent)" if result is None else str(result)
    if args.operation == "put":
        return "ok"
    if args.operation == "delete":
        return "deleted" if result else "absent (nothing to delete)"
    if result:
        return "swapped"
    return "not swapped: " + ("the key is present" if args.absent else "the value differs")
