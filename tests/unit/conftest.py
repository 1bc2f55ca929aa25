"""Fixtures for the unit tests: deterministic keys, authenticators and one sample of each message.

Keys come from :func:`pbft.simnet.derive_signer`, so every run uses the same
keys. The samples are built and signed the way replicas and clients build
them, nested signatures included, so that encoding and authentication tests
exercise realistic messages rather than empty shells.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from pbft.auth import Authenticator
from pbft.config import ClusterConfig
from pbft.crypto import ED25519, KEYED_HASH, SCHEMES, Signer
from pbft.messages import (
    CLIENT_SIGNED,
    NULL_DIGEST,
    Checkpoint,
    Commit,
    CommitCertificate,
    FetchCommitted,
    FetchState,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Read,
    Reply,
    ReplyDigest,
    Request,
    StateSnapshot,
    ViewChange,
    batch_digest,
    result_digest,
)
from pbft.simnet import derive_signer

CLUSTER_ID = "unit-test"


@attrs.frozen
class Keyring:
    """The keys of one cluster (n = 3f+1 replicas, some clients) and its configuration."""

    config: ClusterConfig
    replica_signers: tuple[Signer, ...]
    client_signers: tuple[Signer, ...]

    @property
    def scheme(self) -> str:
        return self.config.scheme

    def replica(self, index: int) -> Authenticator:
        """The authenticator of replica ``index``: signs as it, verifies for the cluster."""
        return Authenticator(self.config, self.replica_signers[index])

    def client(self, index: int) -> Authenticator:
        """The authenticator of client ``index``."""
        return Authenticator(self.config, self.client_signers[index])

    def observer(self) -> Authenticator:
        """An authenticator holding no private key (verification only)."""
        return Authenticator(self.config)

    def signer_of(self, message: Any) -> Authenticator:
        """The authenticator of the principal ``message`` names as its sender."""
        if isinstance(message, CLIENT_SIGNED):
            return self.client(message.client)
        return self.replica(message.sender)


def build_keyring(
    scheme: str = ED25519,
    f: int = 1,
    clients: int = 2,
    cluster_id: str = CLUSTER_ID,
    seed: int = 0,
) -> Keyring:
    """A cluster of 3f+1 replicas and ``clients`` clients with deterministic keys."""
    n = 3 * f + 1
    replica_signers = tuple(derive_signer(seed, "replica", i, scheme) for i in range(n))
    client_signers = tuple(derive_signer(seed, "client", c, scheme) for c in range(clients))
    config = ClusterConfig(
        cluster_id=cluster_id,
        f=f,
        replica_keys=tuple(signer.public_key for signer in replica_signers),
        client_keys=tuple(signer.public_key for signer in client_signers),
        scheme=scheme,
    )
    return Keyring(config, replica_signers, client_signers)


def build_samples(keyring: Keyring) -> dict[type, Any]:
    """One realistic, unsigned message of every type, with properly signed nested messages.

    The scenario: view 0, checkpoint 32 stable, a batch of two requests at 33
    prepared, and replica 1 starting view 1.
    """
    sign = lambda message: keyring.signer_of(message).sign(message)  # noqa: E731

    requests = (
        sign(Request(client=0, timestamp=1, operation=b"op-a")),
        sign(Request(client=1, timestamp=7, operation=b"op-b")),
    )
    digest = batch_digest(requests)
    pre_prepare = PrePrepare(view=0, seq=33, digest=digest, batch=requests, sender=0)
    prepares = tuple(sign(Prepare(view=0, seq=33, digest=digest, sender=i)) for i in (1, 2))
    state_digest = bytes(range(32))
    checkpoint_proof = tuple(
        sign(Checkpoint(seq=32, state_digest=state_digest, sender=i)) for i in range(3)
    )
    certificate = PreparedCertificate(pre_prepare=sign(pre_prepare), prepares=prepares)
    view_changes = tuple(
        sign(
            ViewChange(
                new_view=1,
                stable_seq=32,
                checkpoint_proof=checkpoint_proof,
                prepared=(certificate,),
                sender=i,
            )
        )
        for i in (1, 2, 3)
    )
    reissued = (
        sign(PrePrepare(view=1, seq=33, digest=digest, batch=requests, sender=1)),
        sign(PrePrepare(view=1, seq=34, digest=NULL_DIGEST, batch=(), sender=1)),
    )
    return {
        Request: requests[0].message,
        PrePrepare: pre_prepare,
        Prepare: prepares[0].message,
        Commit: Commit(view=0, seq=33, digest=digest, sender=3),
        Reply: Reply(view=0, timestamp=1, client=0, sender=2, result=b"result"),
        ReplyDigest: ReplyDigest(
            view=0, timestamp=1, client=0, sender=2, result_digest=result_digest(b"result")
        ),
        Read: Read(client=0, timestamp=2, operation=b"op-r"),
        Checkpoint: checkpoint_proof[0].message,
        ViewChange: view_changes[0].message,
        NewView: NewView(view=1, view_changes=view_changes, pre_prepares=reissued, sender=1),
        FetchState: FetchState(seq=32, sender=3),
        StateSnapshot: StateSnapshot(
            seq=32, snapshot=b"\x90snapshot", checkpoint_proof=checkpoint_proof, sender=0
        ),
        FetchCommitted: FetchCommitted(first_seq=33, last_seq=40, sender=3),
        CommitCertificate: CommitCertificate(
            pre_prepare=sign(pre_prepare),
            commits=tuple(sign(Commit(view=0, seq=33, digest=digest, sender=i)) for i in range(3)),
            sender=2,
        ),
    }


@pytest.fixture(scope="session", params=SCHEMES)
def keyring(request: pytest.FixtureRequest) -> Keyring:
    """A cluster (f=1, n=4, two clients) for each signature scheme."""
    return build_keyring(request.param)


@pytest.fixture(scope="session")
def make_keyring() -> Callable[..., Keyring]:
    """The keyring factory, for tests that need another cluster id, f or seed."""
    return build_keyring


@pytest.fixture(scope="session")
def ed_keyring() -> Keyring:
    """An Ed25519 cluster (f=1, n=4, two clients)."""
    return build_keyring(ED25519)


@pytest.fixture(scope="session")
def hash_keyring() -> Keyring:
    """A keyed-hash cluster (f=1, n=4, two clients)."""
    return build_keyring(KEYED_HASH)


@pytest.fixture(scope="session")
def samples(keyring: Keyring) -> dict[type, Any]:
    """One sample of every message type, signed with ``keyring``'s keys."""
    return build_samples(keyring)


@pytest.fixture(scope="session")
def ed_samples(ed_keyring: Keyring) -> dict[type, Any]:
    """One sample of every message type, signed with Ed25519 keys."""
    return build_samples(ed_keyring)
