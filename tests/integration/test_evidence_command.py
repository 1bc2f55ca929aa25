"""``pbft verify-evidence FILE [--cluster DIR]`` as a user runs it.

Exit status: 0 when the file proves that a replica equivocated, 1 when it is
well formed but proves nothing, 2 when it is not evidence at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pbft.auth import Authenticator
from pbft.config import ClusterConfig
from pbft.crypto import Ed25519Signer
from pbft.events import EquivocationDetected
from pbft.evidence import Evidence, encode_evidence
from pbft.messages import Prepare
from pbft.runtime.eventlog import EventLog
from pbft.runtime.files import ClusterFiles, init_cluster
from pbft.runtime.node import ReplicaNode


def pbft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *args], capture_output=True, text=True, timeout=60
    )


def prepares(config: ClusterConfig, signer: Ed25519Signer, sender: int) -> Evidence:
    """Two PREPAREs for (view 0, seq 5) with different digests, signed by ``signer``."""
    auth = Authenticator(config, signer)
    return Evidence(
        auth.sign(Prepare(0, 5, b"a" * 32, sender)), auth.sign(Prepare(0, 5, b"b" * 32, sender))
    )


def cluster(tmp_path: Path, name: str) -> ClusterFiles:
    return init_cluster(tmp_path / name, f=1, base_port=7100)


def write_evidence(tmp_path: Path, files: ClusterFiles) -> Path:
    evidence = prepares(files.config, files.load_signer("replica", 1), 1)
    path = tmp_path / "prepare-v0-n5-from-1.json"
    path.write_bytes(encode_evidence(evidence, files.config))
    return path


def test_valid_evidence_is_accepted_with_and_without_the_cluster(tmp_path: Path) -> None:
    files = cluster(tmp_path, "c")
    path = write_evidence(tmp_path, files)
    alone = pbft("verify-evidence", str(path))
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.strip() == "valid: replica 1 equivocated on PREPARE (view 0, seq 5)"
    assert "--cluster" in alone.stderr
    checked = pbft("verify-evidence", str(path), "--cluster", str(files.directory))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("valid: replica 1 equivocated")


def test_a_tampered_signature_is_invalid(tmp_path: Path) -> None:
    path = write_evidence(tmp_path, cluster(tmp_path, "c"))
    document = json.loads(path.read_text())
    second = document["second"]
    document["second"] = second[:-2] + ("00" if second[-2:] != "00" else "01")
    path.write_text(json.dumps(document))
    result = pbft("verify-evidence", str(path))
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("invalid: ") and "signature" in result.stdout


def test_garbage_is_not_evidence(tmp_path: Path) -> None:
    path = tmp_path / "garbage.json"
    path.write_bytes(b"\x00not evidence\n")
    result = pbft("verify-evidence", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("pbft verify-evidence: error: ")
    missing = pbft("verify-evidence", str(tmp_path / "absent.json"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_a_file_cannot_bring_its_own_key(tmp_path: Path) -> None:
    """A forger signs two PREPAREs with a key of its own and names replica 1 as sender.
    Alone, the file is self-consistent; against the cluster's configuration it is not."""
    files = cluster(tmp_path, "c")
    forger = Ed25519Signer.generate()
    keys = list(files.config.replica_keys)
    keys[1] = forger.public_key
    forged_config = ClusterConfig(
        files.config.cluster_id, files.config.f, keys, files.config.client_keys
    )
    path = tmp_path / "forged.json"
    path.write_bytes(encode_evidence(prepares(forged_config, forger, 1), forged_config))
    assert pbft("verify-evidence", str(path)).returncode == 0
    result = pbft("verify-evidence", str(path), "--cluster", str(files.directory))
    assert result.returncode == 1
    assert result.stdout.startswith("invalid: ") and "not replica 1's key" in result.stdout


def test_evidence_from_another_cluster_is_invalid_there(tmp_path: Path) -> None:
    path = write_evidence(tmp_path, cluster(tmp_path, "c"))
    other = cluster(tmp_path, "other")
    result = pbft("verify-evidence", str(path), "--cluster", str(other.directory))
    assert result.returncode == 1
    assert result.stdout.startswith("invalid: the evidence is for cluster ")


class _NoJournal:
    def record(self, replica: object, effects: object) -> None:
        pass


def test_a_replica_node_writes_what_it_detects_where_the_command_reads_it(
    tmp_path: Path,
) -> None:
    """The runtime writes DATA/evidence/<phase>-v<view>-n<seq>-from-<sender>.json and logs
    an ``equivocation`` event even without --verbose."""
    files = cluster(tmp_path, "c")
    log_path = tmp_path / "replica-0.log"
    with log_path.open("w") as stream:
        node = ReplicaNode(
            files, 0, tmp_path / "data", log=EventLog("replica 0", json_lines=True, stream=stream)
        )
        node._journal = _NoJournal()  # type: ignore[assignment]
        evidence = prepares(files.config, files.load_signer("replica", 1), 1)
        node._carry_out([EquivocationDetected(evidence)])
    path = tmp_path / "data" / "evidence" / "prepare-v0-n5-from-1.json"
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(e["event"], e["sender"], e["phase"], e["file"]) for e in events] == [
        ("equivocation", 1, "PREPARE", str(path))
    ]
    result = pbft("verify-evidence", str(path), "--cluster", str(files.directory))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "valid: replica 1 equivocated on PREPARE (view 0, seq 5)"
