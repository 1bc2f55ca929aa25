"""REFUSED: a replica tells a well-formed dialer it cannot serve why, and nothing more.

A client pointed at the wrong cluster used to see only a closed connection;
now the acceptor answers HELLO with its reason, and the dialer raises
:class:`HandshakeRefused` carrying it. Garbage still gets no answer at all
(tests/runtime/test_handshake.py), and the reason, coming from an
unauthenticated peer, reaches a terminal only as printable text.
"""

# The ``cluster`` fixture is imported from test_handshake.py, and tests name it as a parameter.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from pbft.runtime.client import describe_failure
from pbft.runtime.framing import FramedStream
from pbft.runtime.handshake import (
    HANDSHAKE_VERSION,
    REFUSED_TAG,
    HandshakeError,
    HandshakeRefused,
)
from pbft.runtime.metrics import handshake_failure_reason
from tests.runtime.test_handshake import (  # noqa: F401
    CLUSTER_ID,
    Cluster,
    CountingSigner,
    acceptor,
    cluster,
    dialer,
    frame,
    make_config,
    raw_sender,
    run_pair,
)


async def test_a_dialer_of_another_cluster_hears_which_cluster_the_replica_serves(
    cluster: Cluster,
) -> None:
    other = make_config(cluster.scheme, 4, 2, "another-cluster")
    dialed, accepted = await run_pair(
        dialer(cluster, ("client", 0), config=other), acceptor(cluster)
    )
    assert isinstance(accepted, HandshakeError)
    assert isinstance(dialed, HandshakeRefused)
    assert dialed.reason == "it serves cluster 'handshake-test', not 'another-cluster'"


async def test_a_principal_the_replica_does_not_know_hears_so(cluster: Cluster) -> None:
    outsider = dialer(cluster, ("client", 2), config=cluster.outsiders)
    dialed, _ = await run_pair(outsider, acceptor(cluster))
    assert isinstance(dialed, HandshakeRefused)
    assert "does not list client 2" in dialed.reason


async def test_a_member_is_never_refused(cluster: Cluster) -> None:
    dialed, accepted = await run_pair(dialer(cluster, ("client", 1)), acceptor(cluster))
    assert dialed is None and accepted == ("client", 1)


async def test_a_refusal_reason_reaches_the_terminal_as_printable_text_only(
    cluster: Cluster,
) -> None:
    async def refuse(framed: FramedStream) -> None:
        await framed.receive_frame()
        await framed.send_frame(msgpack.packb([REFUSED_TAG, "go away\x1b[2J\n" + "x" * 500]))

    dialed, _ = await run_pair(dialer(cluster, ("client", 0)), refuse)
    assert isinstance(dialed, HandshakeRefused)
    assert dialed.reason.startswith("go away?[2J?") and dialed.reason.isprintable()
    assert len(dialed.reason) == 300


async def test_a_malformed_hello_of_another_cluster_still_gets_no_answer(
    cluster: Cluster,
) -> None:
    """Only a HELLO of the right shape is worth an answer."""
    bad = ["pbft-hello", HANDSHAKE_VERSION, "another", "client", 0, b"x"]  # 6 fields of 7
    answer, accepted = await run_pair(raw_sender(frame(msgpack.packb(bad))), acceptor(cluster))
    assert isinstance(accepted, HandshakeError) and answer == b""
    assert handshake_failure_reason(accepted) == "malformed"


@pytest.mark.parametrize(
    "fields",
    [
        ["pbft-hello", 2, CLUSTER_ID, "client", 0, bytes(32), bytes(32)],  # the acceptor signed
        ["pbft-hello", 4, CLUSTER_ID, "client", 0, bytes(32), bytes(32), b"new field"],
        ["pbft-hello", 1, "another cluster", "client", 0, bytes(32)],
        ["pbft-hello", 7],
    ],
    ids=["version 2", "version 4", "version 1", "version 7, nothing else"],
)
async def test_a_hello_of_another_version_hears_which_version_the_replica_speaks(
    cluster: Cluster, fields: list[Any]
) -> None:
    """During a rolling upgrade a node of another version says why, at no cryptographic cost."""
    counting = CountingSigner(cluster.signer(("replica", 1)))
    answer, accepted = await run_pair(
        raw_sender(frame(msgpack.packb(fields))), acceptor(cluster, signer=counting)
    )
    assert isinstance(accepted, HandshakeError)
    assert handshake_failure_reason(accepted) == "version"
    version = fields[1]
    reason = f"version {version}, this replica speaks {HANDSHAKE_VERSION}"
    assert answer == frame(msgpack.packb([REFUSED_TAG, reason]))
    assert counting.calls == 0


async def test_a_dialer_of_this_version_hears_the_refusal_of_a_replica_of_another(
    cluster: Cluster,
) -> None:
    async def newer(framed: FramedStream) -> None:
        await framed.receive_frame()
        await framed.send_frame(msgpack.packb([REFUSED_TAG, "version 3, this replica speaks 4"]))

    dialed, _ = await run_pair(dialer(cluster, ("client", 0)), newer)
    assert isinstance(dialed, HandshakeRefused) and not dialed.busy
    assert dialed.reason == "version 3, this replica speaks 4"


async def test_hellos_that_are_not_well_formed_get_no_answer_whatever_their_version(
    cluster: Cluster,
) -> None:
    for payload in [
        msgpack.packb(["pbft-hello", True, CLUSTER_ID]),  # a boolean is not a version
        msgpack.packb(["pbft-hello", "4"]),
        msgpack.packb(["pbft-hello"]),
        msgpack.packb(["pbft-hello", 4, 1.5]),  # a float: not a field type of any version
        msgpack.packb(["pbft-hello", 4]) + b"\x00",  # trailing bytes
        b"\x92\xaapbft-hello\xce\x00\x00\x00\x04",  # version 4, not canonically encoded
    ]:
        answer, accepted = await run_pair(raw_sender(frame(payload)), acceptor(cluster))
        assert isinstance(accepted, HandshakeError), payload
        assert answer == b"", payload


def test_the_client_says_how_replies_disagree_and_why_others_are_missing() -> None:
    line = describe_failure(
        replies={0: b"a", 2: b"b", 3: b"a"},
        connected=[0, 2, 3],
        problems={1: ("127.0.0.1:7001", "cannot connect: connection refused")},
        quorum=3,
    )
    assert line == (
        "3 replies, 2 distinct results (replicas 0, 3: result 1; replica 2: result 2); "
        "replica 1 (127.0.0.1:7001): cannot connect: connection refused "
        "(nothing listens there: is the cluster running?)"
    )


def test_the_client_names_connected_replicas_that_stay_silent() -> None:
    line = describe_failure({1: b"a"}, [0, 1, 2, 3], {}, quorum=2)
    assert line == "only replica 1 replied (agreeing); replicas 0, 2, 3 connected but did not reply"
    assert describe_failure({}, [], {0: ("h:1", None)}, 2) == "replica 0 (h:1): not connected yet"
