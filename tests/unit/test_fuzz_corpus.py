"""The fuzz corpus, run without the fuzzer: every input of ``fuzz/corpus/<target>/``
through its target function (``fuzz/``), as plain Python calls.

A target raises only for a bug, so this checks in CI, without atheris, that no
input the fuzzer ever kept (seeds, coverage finds, pinned regressions) crashes
or breaks an invariant again. Each crash the fuzzer found is also pinned by
name below (``regression-*`` files), with what it was.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fuzz.step import PARAMS, step, world
from fuzz.targets import decoder, handshake
from pbft.auth import Authenticator
from pbft.encoding import encode_signed
from pbft.events import Receive, SendToReplicas
from pbft.messages import (
    Commit,
    CommitCertificate,
    FetchCommitted,
    PrePrepare,
    Request,
    batch_digest,
)
from pbft.replica import Replica
from pbft.service import put

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"
TARGETS: dict[str, Callable[[bytes], None]] = {
    "decoder": decoder,
    "handshake": handshake,
    "step": step,
}


def _inputs(target: str) -> list[Path]:
    return sorted(path for path in (CORPUS / target).iterdir() if path.is_file())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_corpus_input_passes(target: str) -> None:
    inputs = _inputs(target)
    assert any(path.name.startswith("seed-") for path in inputs), "seeds are missing"
    failures = []
    for path in inputs:
        try:
            TARGETS[target](path.read_bytes())
        except Exception as error:  # report every failing input, not only the first
            failures.append(f"{path.name}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)


def test_corpus_stays_small() -> None:
    total = sum(path.stat().st_size for path in CORPUS.rglob("*") if path.is_file())
    assert total < 2 * 1024 * 1024, f"fuzz/corpus holds {total} bytes"


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff" * 64, b"\x01\x00\x00\x00\x04\x90"])
def test_targets_take_junk(target: str, data: bytes) -> None:
    TARGETS[target](data)


def test_fuzz_script_parses_libfuzzer_output() -> None:
    spec = importlib.util.spec_from_file_location(
        "fuzz_script", CORPUS.parents[1] / "scripts" / "fuzz.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_script"] = script
    spec.loader.exec_module(script)
    log = "\n".join(
        [
            "INFO: Seed: 1",
            "#2\tINITED cov: 128 ft: 139 corp: 2/349b exec/s: 0 rss: 60Mb",
            "#40\tNEW    cov: 131 ft: 150 corp: 3/400b lim: 4 exec/s: 0 rss: 60Mb L: 4/4",
            "#26497\tDONE   cov: 139 ft: 157 corp: 14/1Kb lim: 1024 exec/s: 1261 rss: 70Mb",
            "stat::number_of_executed_units: 26497",
            "stat::average_exec_per_sec:     1261",
        ]
    )
    parsed = script.parse_libfuzzer(log)
    assert (parsed["cov_start"], parsed["cov_end"]) == (128, 139)
    assert (parsed["ft_start"], parsed["ft_end"]) == (139, 157)
    assert parsed["number_of_executed_units"] == 26497
    assert parsed["average_exec_per_sec"] == 1261


# ---------------------------------------------------------------------- regressions


def _regression(target: str, name: str) -> bytes:
    return (CORPUS / target / f"regression-{name}").read_bytes()


def test_commit_certificate_served_under_its_senders_name() -> None:
    """Found by the ``step`` target: a replica that executed a batch from a peer's
    COMMIT-CERTIFICATE kept it naming that peer as sender, and served it to the next
    replica to ask (FETCH-COMMITTED) signed with its own key: every receiver refused
    it as bad-signature, so catch-up could not go through a replica that had caught up.
    The fuzzer's input is kept (it replayed an earlier honest pool, so it is now only a
    corpus input); the scenario below is the fuzzer's, written out.
    """
    step(_regression("step", "commit-certificate-served-under-its-senders-name"))
    cluster = world()[0]
    config, signers = cluster.config, cluster.replica_signers
    sign = {i: Authenticator(config, signers[i]).sign for i in range(config.n)}
    request = Authenticator(config, cluster.client_signers[0]).sign(
        Request(client=0, timestamp=1, operation=put("k", "v"))
    )
    digest = batch_digest((request,))
    pre_prepare = sign[0](PrePrepare(view=0, seq=1, digest=digest, batch=(request,), sender=0))
    commits = tuple(sign[i](Commit(view=0, seq=1, digest=digest, sender=i)) for i in (0, 2, 3))
    replica = Replica(1, config, signers[1], PARAMS)
    replica.step(Receive(encode_signed(sign[2](CommitCertificate(pre_prepare, commits, 2)))))
    assert replica.last_executed == 1
    fetch = sign[3](FetchCommitted(first_seq=1, last_seq=1, sender=3))
    sent = [e for e in replica.step(Receive(encode_signed(fetch))) if type(e) is SendToReplicas]
    assert [effect.replicas for effect in sent] == [(3,)]
    served = sent[0].message
    assert type(served.message) is CommitCertificate and served.message.sender == 1
    assert Authenticator(config).verify(served) is None
