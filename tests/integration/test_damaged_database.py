"""`pbft replica` refuses a damaged database in one line, through the real command.

One real cluster runs a few writes (so every replica's database has messages,
certificates and executed batches), then replica 1's database is damaged in
each way and the real command must refuse it: exit status 2, one line on
stderr naming the file and the defect, no traceback, the file and its
write-ahead log left byte for byte as found.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pbft.runtime.files import ClusterFiles, free_loopback_ports, init_cluster
from pbft.runtime.processes import LocalCluster

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("damaged-database")]


def pbft(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def used_cluster(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClusterFiles, Path]:
    """A cluster folder and the data folders of a run that executed a few writes."""
    folder = tmp_path_factory.mktemp("damaged")
    files = init_cluster(
        folder / "cluster", f=1, clients=1, ports=free_loopback_ports(4),
        protocol={"checkpoint_interval": 2, "log_window": 4},
    )  # fmt: skip
    cluster = LocalCluster(files, folder / "data")
    cluster.start()
    try:
        assert cluster.wait_connected(30), cluster.statuses()
        for i in range(5):
            put = pbft("client", str(files.directory), "put", f"k{i}", f"v{i}", "--timeout", "20")
            assert put.returncode == 0, put.stderr
    finally:
        cluster.stop()
    return files, folder / "data"


def _truncate(path: Path, data_dir: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _flip_bytes(path: Path, data_dir: Path) -> None:
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    for page in range(1, len(data) // page_size):  # the b-tree header of every page but 1
        data[page * page_size + 3] ^= 0x40
    path.write_bytes(bytes(data))


def _garbage(path: Path, data_dir: Path) -> None:
    path.write_bytes(b"\x00garbage, not a database\n" * 1000)


def _another_replica(path: Path, data_dir: Path) -> None:
    shutil.copyfile(data_dir / "replica-2" / "replica.db", path)


def _empty(path: Path, data_dir: Path) -> None:
    path.write_bytes(b"")


def _meta_an_integer(path: Path, data_dir: Path) -> None:
    """A value the journal never writes (it writes MessagePack blobs): a traceback, once."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('view', 3)")
    db.close()


def _damaged_in_the_log(path: Path, data_dir: Path) -> None:
    """The owner half deleted in the write-ahead log, as a killed process leaves it
    (not yet in the file): checking it read-write once checkpointed it into the file."""
    aside = path.with_name("aside.db")
    shutil.copyfile(path, aside)
    db = sqlite3.connect(aside, isolation_level=None)
    db.execute("DELETE FROM meta WHERE key = 'cluster_id'")
    shutil.copyfile(f"{aside}-wal", f"{path}-wal")
    db.close()
    aside.unlink()


DAMAGES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "truncated": (_truncate, ": damaged: "),
    "bytes flipped": (_flip_bytes, ": damaged: SQLite"),
    "garbage": (_garbage, ": damaged: SQLite cannot read it (file is not a database)"),
    "another replica's": (_another_replica, " belongs to replica 2 of cluster "),
    "empty": (_empty, ": damaged: the file is empty (0 bytes)"),
    "a meta value an integer": (_meta_an_integer, ": damaged: meta view: not bytes but int"),
    "damaged in its log": (_damaged_in_the_log, ": damaged: meta: the owner "),
}


def _hashes(database: Path) -> dict[str, str]:
    files = [database, database.with_name(database.name + "-wal")]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_pbft_replica_refuses_a_damaged_database(
    used_cluster: tuple[ClusterFiles, Path], tmp_path: Path, damage: str
) -> None:
    files, data_dir = used_cluster
    data = tmp_path / "replica-1"
    data.mkdir()
    database = data / "replica.db"
    shutil.copyfile(data_dir / "replica-1" / "replica.db", database)
    make_damage, expected = DAMAGES[damage]
    make_damage(database, data_dir)
    before, listing = _hashes(database), sorted(data.iterdir())
    result = pbft("replica", str(files.directory), "--id", "1", "--data", str(data))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"pbft replica: error: {database}"), lines[0]
    assert expected in lines[0]
    assert _hashes(database) == before  # never repaired, never written to, nor its log
    assert sorted(data.iterdir()) == listing  # no -wal or -shm made by the check left behind
    assert damage != "damaged in its log" or len(before) == 2


def test_the_undamaged_copy_is_accepted(used_cluster: tuple[ClusterFiles, Path]) -> None:
    """The control: the same journal, undamaged, opens and holds the writes."""
    from pbft.runtime.storage import SqliteJournal

    files, data_dir = used_cluster
    journal = SqliteJournal(
        data_dir / "replica-1" / "replica.db", files.config.cluster_id, 1,
        replicas=files.config.n,
    )  # fmt: skip
    try:
        assert len(journal.history()) >= 5
        assert journal.load().stable_seq >= 2
    finally:
        journal.close()
