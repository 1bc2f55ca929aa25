"""``pbft replica``: run one replica of a cluster folder in this process, until a signal."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from pbft.config import ConfigError


def run(args: argparse.Namespace) -> int:
    import trio

    from pbft.runtime.eventlog import EventLog
    from pbft.runtime.files import load_cluster
    from pbft.runtime.handshake_slots import HandshakeSlots
    from pbft.runtime.node import ReplicaNode
    from pbft.runtime.storage import StorageError

    files = load_cluster(args.directory)
    if not 0 <= args.id < files.config.n:
        raise ConfigError(f"--id {args.id}: the cluster has replicas 0..{files.config.n - 1}")
    if args.durability is not None:
        import attrs

        files = attrs.evolve(files, durability=args.durability)
    data = args.data or args.directory / "data" / f"replica-{args.id}"
    log = EventLog(f"replica {args.id}", json_lines=args.log_json, verbose=args.verbose)
    per_host = args.max_handshakes_per_host
    if args.max_handshakes < 1 or (per_host is not None and per_host < 1):
        raise ConfigError("--max-handshakes and --max-handshakes-per-host: at least 1")
    slots = HandshakeSlots(args.max_handshakes, per_host)
    metrics = metrics_server(args.metrics_host, args.metrics_port)
    node = ReplicaNode(files, args.id, data, log=log, metrics_server=metrics, handshake_slots=slots)
    if args.traitor:
        # The composition root may wire a traitor around the honest core; the
        # core itself never imports ``faults``.
        from faults.traitors.spec import check_replica_ids, parse_traitor, wrap
        from pbft.replica import Replica

        specs = [parse_traitor(text, replica=args.id) for text in args.traitor]
        check_replica_ids(specs, files.config.n)
        node.replica = wrap(
            node.replica,
            specs,
            clock=node.now_ms,
            rebuild=lambda: Replica(args.id, files.config, node.signer, files.params),
            seed=args.id,
        )
        log.event("traitor", behaviours=", ".join(args.traitor))
        from faults.traitors.trace import report_forgeries

        report_forgeries(node.replica, log)  # marks its made-up frames in a --log-json trace

    async def main() -> Exception | None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                try:
                    await nursery.start(node.run)
                # Returned, not raised: out of the nursery it would be an exception group.
                except (OSError, StorageError) as error:
                    return error
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
        return None

    failure = trio.run(main)
    if isinstance(failure, OSError):
        raise ConfigError(_start_failure(args.id, files.address(args.id), failure))
    if failure is not None:
        raise failure
    return 0


def _start_failure(replica: int, address: tuple[str, int], error: OSError) -> str:
    """``replica 0: cannot listen on 127.0.0.1:7000: address already in use``."""
    reason = (error.strerror or str(error)).lower()
    if error.filename is not None:  # the data folder, not the socket
        return f"replica {replica}: cannot create {error.filename}: {reason}"
    return f"replica {replica}: cannot listen on {address[0]}:{address[1]}: {reason}"


def metrics_server(host: str, port: int) -> Any:
    """Bind ``pbft replica``'s metrics port now, so that a port in use is one clear line."""
    from pbft.runtime.metrics import MetricsServer

    if port == 0:
        return None
    if not 0 < port < 65536:
        raise ConfigError(f"--metrics-port {port}: a port is 1..65535 (0: off)")
    try:
        return MetricsServer(host, port)
    except OSError as error:
        raise ConfigError(
            f"--metrics-port {port}: cannot serve metrics on {host}: {error.strerror or error}"
        ) from None
