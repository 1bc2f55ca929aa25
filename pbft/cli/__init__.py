"""The ``pbft`` command: set up, run, use and demonstrate a PBFT cluster.

The parser and the small commands are here; the longer ones have a module each:
:mod:`.client` (``pbft client``), :mod:`.replica`, :mod:`.demo`, :mod:`.scenario`. This
package is the composition root: the only part of :mod:`pbft` that may import
:mod:`faults`, to wire traitors around honest replicas from the outside.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pbft.config import ConfigError

EXAMPLES = """\
examples:
  pbft demo                                  a throw-away 4-replica cluster and a workload
  pbft init ./c --f 1                        write ./c/cluster.toml and ./c/keys/
  pbft replica ./c --id 0                    run replica 0 of ./c (one per host or terminal)
  pbft cluster ./c                           run every replica of ./c here, with a live table
  pbft client ./c put colour blue            one operation through the cluster
  pbft scenario run scripts/scenarios/stall.toml   a scripted fault experiment and its verdict
  pbft explore --seeds 200 --jobs 2          seeded simulations with random faults, checked
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbft",
        description="Practical Byzantine Fault Tolerance: run, script and verify a 3f+1 cluster.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pbft {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="write a cluster folder: cluster.toml and keys")
    # A str, not a Path: Path("") is ".", and an empty DIR must be refused, not written to.
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--f", type=int, required=True, help="faults tolerated; n = 3f+1")
    init.add_argument("--n", type=int, help="number of replicas (default: 3f+1)")
    init.add_argument(
        "--host", action="append", metavar="HOST[,HOST...]",
        help="address replicas listen on: one for all, or one per replica (replica i on the "
        "i-th; repeat --host or separate with commas) (default: 127.0.0.1)",
    )  # fmt: skip
    init.add_argument(
        "--base-port", type=int, default=7000,
        help="replica i listens on P+i (default: %(default)s)",
    )  # fmt: skip
    init.add_argument(
        "--clients", type=int, default=1, help="client identities to create (default: %(default)s)"
    )
    init.add_argument("--force", action="store_true", help="replace an existing cluster")
    _add_durability_option(init, "written to [storage] (default: normal)")

    replica = commands.add_parser("replica", help="run one replica of a cluster folder")
    replica.add_argument("directory", type=Path, metavar="DIR")
    replica.add_argument("--id", type=int, required=True, help="which replica to run")
    replica.add_argument("--data", type=Path, help="data folder (default DIR/data/replica-I)")
    replica.add_argument(
        "--traitor",
        action="append",
        default=[],
        metavar="BEHAVIOUR[:K=V,...]",
        help="make this replica a traitor (repeatable; see docs/faults.md)",
    )
    replica.add_argument(
        "--max-handshakes",
        type=int,
        default=64,
        metavar="N",
        help="client handshakes in progress at once; beyond, dialers hear 'busy' (default: 64)",
    )
    replica.add_argument(
        "--max-handshakes-per-host",
        type=int,
        metavar="N",
        help="of those, at most N from one source address (default: no such cap)",
    )
    _add_log_options(replica)
    _add_metrics_options(replica, "serve Prometheus metrics on PORT (default: off)")
    _add_durability_option(replica, "instead of cluster.toml's [storage] durability")

    cluster = commands.add_parser(
        "cluster", help="run every replica of a cluster here, with a live status table"
    )
    cluster.add_argument(
        "directory",
        type=Path,
        nargs="?",
        metavar="DIR",
        help="cluster folder (default: a throw-away one)",
    )
    cluster.add_argument("--f", type=int, default=1, help="for a throw-away cluster")
    cluster.add_argument("--clients", type=int, default=4, help="for a throw-away cluster")
    cluster.add_argument("--log-json", action="store_true", help="replicas log JSON lines")
    _add_traitor_option(cluster)
    _add_metrics_options(cluster, "serve Prometheus metrics, replica i on PORT+i (default: off)")

    from pbft.cli.client import add_parser as add_client_parser

    add_client_parser(commands)

    demo = commands.add_parser(
        "demo", help="throw-away cluster of 3f+1 processes, a workload, a safety verdict"
    )
    demo.add_argument("--f", type=int, default=1, help="faults tolerated; n = 3f+1")
    demo.add_argument("--clients", type=int, default=4, help="concurrent clients")
    demo.add_argument("--requests", type=int, default=200, help="requests in total")
    demo.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument(
        "--trace", type=Path, metavar="OUT.html",
        help="trace the run: OUT.html (the picture) and OUT.jsonl (the merged trace) beside it; "
        "a name not ending in .html gets the trace alone (see docs/trace.md)",
    )  # fmt: skip
    _add_traitor_option(demo)

    from pbft.bench.cli import add_parser as add_bench_parser

    add_bench_parser(commands)

    verify = commands.add_parser(
        "verify-evidence", help="check a proof that a replica equivocated, offline"
    )
    verify.add_argument("file", type=Path, metavar="FILE", help="an evidence/*.json file")
    verify.add_argument(
        "--cluster",
        type=Path,
        metavar="DIR",
        help="also check that the key in FILE is the replica's key in DIR/cluster.toml",
    )
    from pbft.cli.scenario import add_parser as add_scenario_parser

    add_scenario_parser(commands)
    from faults.verification.explore_cli import add_parser as add_explore_parser

    add_explore_parser(commands)
    from pbft.trace.cli import add_parser as add_trace_parser

    add_trace_parser(commands)
    return parser


def _add_traitor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--traitor", action="append", default=[], metavar="ID:BEHAVIOUR[:K=V,...]",
        help="make replica ID a traitor, e.g. 0:equivocate:targets=1+2 or 3:stall:ms=500 "
        "(repeatable; behaviours: byzantine equivocate lie stall mute crash replay forge flood "
        "selective mutate; see docs/faults.md)",
    )  # fmt: skip


def _add_metrics_options(parser: argparse.ArgumentParser, port_help: str) -> None:
    parser.add_argument("--metrics-port", type=int, default=0, metavar="PORT", help=port_help)
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address metrics are served on")


def _add_durability_option(parser: argparse.ArgumentParser, default_help: str) -> None:
    from pbft.config import DURABILITY_LEVELS

    parser.add_argument(
        "--durability", choices=DURABILITY_LEVELS,
        help="normal: the journal survives the process being killed; full: also power loss, "
        f"with a disk sync per step (docs/deploy.md); {default_help}",
    )  # fmt: skip


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-json", action="store_true", help="one JSON object per protocol event, on stderr"
    )
    parser.add_argument("--verbose", action="store_true", help="log every message")


# ------------------------------------------------------------------- commands


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pbft")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def cmd_init(args: argparse.Namespace) -> int:
    from pbft.runtime.files import init_cluster

    if not args.directory.strip():
        raise ConfigError("DIR is empty: name the folder to create, e.g. pbft init ./mycluster")
    args.directory = Path(args.directory)
    hosts = [host.strip() for given in args.host or ["127.0.0.1"] for host in given.split(",")]
    files = init_cluster(
        args.directory, f=args.f, host=hosts, base_port=args.base_port,
        clients=args.clients, n=args.n, force=args.force,
        durability=args.durability or "normal",
    )  # fmt: skip
    print(
        f"wrote {files.directory / 'cluster.toml'}: n = {files.config.n}, f = {files.config.f}, "
        f"durability {files.durability}"
    )
    for replica in files.replicas:
        print(f"  replica {replica.id}: {replica.host}:{replica.port}")
    print(
        f"  {len(files.config.client_keys)} client identities; private keys in "
        f"{files.directory / 'keys'} (mode 0600)"
    )
    return 0


def cmd_replica(args: argparse.Namespace) -> int:
    from pbft.cli.replica import run

    return run(args)


def cmd_client(args: argparse.Namespace) -> int:
    from pbft.cli.client import run

    return run(args)


def cmd_cluster(args: argparse.Namespace) -> int:
    from faults.traitors.spec import replica_arguments
    from pbft.runtime.cluster_table import watch_cluster
    from pbft.runtime.files import free_loopback_ports, init_cluster, load_cluster

    replica_args = ("--log-json",) if args.log_json else ()
    if args.directory is not None:
        files = load_cluster(args.directory)
        traitors = replica_arguments(args.traitor, files.config.n)
        return watch_cluster(files, replica_args, traitors, args.metrics_host, args.metrics_port)
    with tempfile.TemporaryDirectory(prefix="pbft-cluster-") as folder:
        files = init_cluster(
            Path(folder), f=args.f, clients=args.clients,
            ports=free_loopback_ports(3 * args.f + 1),
        )  # fmt: skip
        print(f"throw-away cluster in {folder} (use it with: pbft client {folder} ...)")
        traitors = replica_arguments(args.traitor, files.config.n)
        return watch_cluster(files, replica_args, traitors, args.metrics_host, args.metrics_port)


def cmd_demo(args: argparse.Namespace) -> int:
    from pbft.cli.demo import run

    return run(args)


def cmd_verify_evidence(args: argparse.Namespace) -> int:
    from pbft.evidence import (
        MAX_FILE_BYTES,
        EvidenceError,
        check_against_cluster,
        decode_evidence,
        verify_evidence_offline,
    )

    try:
        with open(args.file, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        evidence, cluster_id, scheme, public_key = decode_evidence(data)
    except OSError as error:
        raise ValueError(f"{args.file}: cannot read it: {error.strerror or error}") from None
    except EvidenceError as error:
        raise ValueError(f"{args.file}: not evidence: {error}") from None
    reason = None
    if args.cluster is not None:
        from pbft.runtime.files import load_cluster

        config = load_cluster(args.cluster).config
        reason = check_against_cluster(evidence, cluster_id, public_key, config)
    reason = reason or verify_evidence_offline(evidence, cluster_id, scheme, public_key)
    if reason is not None:
        print(f"invalid: {reason}")
        return 1
    print(f"valid: replica {evidence.sender} equivocated on {evidence.describe()}")
    if args.cluster is None:
        print(
            "note: checked against the key in the file only; --cluster DIR also checks "
            f"that it is replica {evidence.sender}'s key",
            file=sys.stderr,
        )
    return 0


def cmd_scenario(args: argparse.Namespace) -> int:
    from pbft.cli.scenario import run

    return run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from pbft.bench.cli import run

    return run(args)


def cmd_explore(args: argparse.Namespace) -> int:
    from faults.verification.explore_cli import run

    return run(args)


def cmd_trace(args: argparse.Namespace) -> int:
    # The linearizability picture is faults' code; pbft.trace takes it as a function.
    from faults.verification.linearizability_picture import picture_from_trace
    from pbft.trace.cli import run

    return run(args, appendix=[picture_from_trace])


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": cmd_init,
    "replica": cmd_replica,
    "client": cmd_client,
    "cluster": cmd_cluster,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "scenario": cmd_scenario,
    "verify-evidence": cmd_verify_evidence,
    "explore": cmd_explore,
    "trace": cmd_trace,
}


def main(argv: list[str] | None = None) -> int:
    from pbft.runtime.files import ConfigFileError
    from pbft.runtime.storage import StorageError

    args = build_parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except (ConfigError, ConfigFileError, StorageError, ValueError) as error:
        print(f"pbft {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (pbft ... | head): nothing left to say, and no one to
        # say it to; stdout is pointed at /dev/null so that its flush at exit is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
