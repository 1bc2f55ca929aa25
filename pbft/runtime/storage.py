"""A replica's durable state in SQLite (standard library ``sqlite3``, WAL mode).

This is the runtime's :class:`~pbft.journal.MemoryJournal`: the same
:func:`pbft.journal.changes` decide what is kept, and :meth:`SqliteJournal.load`
returns the :class:`~pbft.replica_recovery.DurableState` a restarted replica
recovers from. The driver calls :meth:`SqliteJournal.record` after each step,
or once with the effects of a burst of steps (group commit), and *before*
sending anything, so a message never leaves that the database does not
remember; each call is one transaction.

The ``durability`` setting (``cluster.toml``'s ``[storage]`` table) picks
SQLite's ``synchronous`` mode. WAL mode with ``synchronous=NORMAL`` (the default)
survives the process being killed (even with SIGKILL): a committed transaction
is in the WAL file, which the next open replays. On an operating-system crash
or power failure it may lose the last transactions, including ones whose
messages already left: a replica restarted after that could contradict
itself, so it must then count as one of the f faulty replicas.
``synchronous=FULL`` (an fsync of the WAL per transaction) closes that gap at a
cost in speed. docs/deploy.md, "Durability", says exactly what each guarantees.

A database is checked before it is used (:mod:`pbft.runtime.storage_check`):
SQLite's ``integrity_check``, the schema, the owner and the decoded contents,
through a read-only connection. A damaged one is refused with one line
(:class:`StorageError`), never repaired and never written to (nor its log).
A new database is created whole: built beside it as ``replica.db.new`` (tables
and owner), synced, renamed into place and the folder synced; so an existing
file without the tables is damaged, never taken for new. A crash before the
rename leaves only the ``.new`` file, which the next start removes.

Tables:

* ``meta``: who this database belongs to (cluster id, replica id), the view,
  the stable checkpoint and its proof, the newest snapshot;
* ``sent``: binding messages the replica signed since the stable checkpoint;
* ``certificates`` and ``committed``: prepared certificates and committed
  batches above the stable checkpoint;
* ``history``: every executed batch (seq, view, digest): an audit trail that
  the demo and the scenario reports compare across replicas.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from pbft.config import DEFAULT_DURABILITY, check_durability
from pbft.encoding import decode_certificate, decode_signed, encode_certificate, encode_signed
from pbft.events import Effect, Executed
from pbft.journal import changes, is_stale_view_message, message_seq
from pbft.replica_recovery import DurableState
from pbft.runtime.storage_check import StorageError, check_file, check_journal, read_only

if TYPE_CHECKING:
    from pbft.replica import Replica

__all__ = ["SCHEMA", "SqliteJournal", "StorageError", "read_history"]

#: ``durability`` -> SQLite's ``PRAGMA synchronous``.
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS sent (
    payload BLOB PRIMARY KEY, data BLOB NOT NULL, seq INTEGER, view INTEGER
);
CREATE TABLE IF NOT EXISTS certificates (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS committed (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY, view INTEGER NOT NULL, digest BLOB NOT NULL, requests BLOB NOT NULL
);
"""


class SqliteJournal:
    """The durable state of one replica, in ``PATH`` (created if missing).

    An existing database is checked first, read-only (:mod:`pbft.runtime.storage_check`):
    a damaged one, or one of another replica or cluster, raises
    :class:`StorageError` and is left as it is, byte for byte.
    """

    def __init__(
        self,
        path: Path | str,
        cluster_id: str,
        replica_id: int,
        durability: str = DEFAULT_DURABILITY,
        replicas: int | None = None,
    ) -> None:
        self.path = Path(path)
        #: The cluster's n, when known: every journalled message must come from a member.
        self.replicas = replicas
        self.durability = check_durability(durability)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not check_file(self.path):
                _create(self.path, cluster_id, replica_id)
            meta = check_journal(self.path, (cluster_id, replica_id), self.replicas)
        except OSError as error:
            reason = error.strerror or str(error)
            where = f" ({error.filename})" if error.filename not in (None, str(self.path)) else ""
            raise StorageError(f"{self.path}: cannot use it: {reason}{where}") from None
        except sqlite3.Error as error:
            raise StorageError(f"{self.path}: cannot create it: {error}") from None
        # Checked, read-only: only now is it opened for writing.
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            raise StorageError(f"{self.path}: cannot open it: {error}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={SYNCHRONOUS[self.durability]}")
        except sqlite3.Error as error:
            self._db.close()
            raise StorageError(f"{self.path}: cannot use it: {error}") from None
        self._stable_seq = meta.get("stable_seq", 0)
        self._snapshot_seq = meta.get("snapshot_seq", 0)
        self._view = meta.get("view", 0)
        self._view_active = meta.get("view_active", True)

    # ------------------------------------------------------------------ writing

    def record(self, replica: Replica, effects: list[Effect]) -> None:
        """Keep what ``effects`` make durable; one transaction, before any send."""
        update = changes(replica, effects, self._stable_seq, self._snapshot_seq)
        executed = [effect for effect in effects if type(effect) is Executed]
        view_changed = (update.view, update.view_active) != (self._view, self._view_active)
        if not (
            update.sent
            or update.certificates
            or update.committed
            or update.stable
            or update.snapshot
            or executed
            or view_changed
        ):
            return
        db = self._db
        db.execute("BEGIN")
        try:
            for signed in update.sent:
                message = signed.message
                db.execute(
                    "INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?)",
                    (signed.payload, encode_signed(signed), message_seq(message), _view(message)),
                )
            for certificate in update.certificates:
                db.execute(
                    "INSERT OR REPLACE INTO certificates VALUES (?, ?)",
                    (certificate.seq, encode_certificate(certificate)),
                )
            for signed in update.committed:
                db.execute(
                    "INSERT OR REPLACE INTO committed VALUES (?, ?)",
                    (signed.message.seq, encode_signed(signed)),
                )
            for entry in executed:
                db.execute(
                    "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?)",
                    (entry.seq, entry.view, entry.digest, msgpack.packb(entry.requests)),
                )
            if view_changed:
                self._set("view", update.view)
                self._set("view_active", update.view_active)
                self._discard_old_view_messages(update.view)
            if update.stable is not None:
                seq, digest, proof = update.stable
                self._set("stable_seq", seq)
                self._set("stable_digest", digest)
                self._set("stable_proof", [encode_signed(signed) for signed in proof])
                for table in ("certificates", "committed"):
                    db.execute(f"DELETE FROM {table} WHERE seq <= ?", (seq,))
                db.execute("DELETE FROM sent WHERE seq IS NOT NULL AND seq <= ?", (seq,))
            if update.snapshot is not None:
                self._set("snapshot_seq", update.snapshot[0])
                self._set("snapshot", update.snapshot[1])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._view, self._view_active = update.view, update.view_active
        if update.stable is not None:
            self._stable_seq = update.stable[0]
        if update.snapshot is not None:
            self._snapshot_seq = update.snapshot[0]

    def _discard_old_view_messages(self, view: int) -> None:
        rows = self._db.execute("SELECT payload, data FROM sent WHERE seq IS NULL").fetchall()
        for payload, data in rows:
            if is_stale_view_message(_decode(data).message, view):
                self._db.execute("DELETE FROM sent WHERE payload = ?", (payload,))

    # ------------------------------------------------------------------ reading

    def load(self) -> DurableState:
        """What a restarted replica recovers from."""
        db = self._db
        proof = tuple(_decode(data) for data in self._get("stable_proof") or [])
        sent = tuple(
            _decode(data) for (data,) in db.execute("SELECT data FROM sent ORDER BY rowid")
        )
        certificates = tuple(
            decode_certificate(data, len(data))
            for (data,) in db.execute("SELECT data FROM certificates ORDER BY seq")
        )
        committed = tuple(
            _decode(data) for (data,) in db.execute("SELECT data FROM committed ORDER BY seq")
        )
        return DurableState(
            view=self._get("view") or 0,
            view_active=self._get_active(),
            stable_seq=self._stable_seq,
            stable_digest=self._get("stable_digest") or b"",
            stable_proof=proof,
            snapshot_seq=self._snapshot_seq,
            snapshot=self._get("snapshot"),
            sent=sent,
            certificates=certificates,
            committed=committed,
        )

    def history(self) -> list[tuple[int, int, bytes, list[list[int]]]]:
        """Every executed batch: (seq, view, digest, [[client, timestamp], ...])."""
        rows = self._db.execute("SELECT seq, view, digest, requests FROM history ORDER BY seq")
        return [(seq, view, digest, msgpack.unpackb(req)) for seq, view, digest, req in rows]

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ helpers

    def _get_active(self) -> bool:
        value = self._get("view_active")
        return True if value is None else bool(value)

    def _get(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else msgpack.unpackb(row[0])

    def _set(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, msgpack.packb(value)))


def read_history(path: Path | str) -> list[tuple[int, int, bytes]]:
    """The executed history in a replica's database, read-only (for reports)."""
    db = read_only(Path(path))
    try:
        return [
            tuple(row) for row in db.execute("SELECT seq, view, digest FROM history ORDER BY seq")
        ]
    finally:
        db.close()


def _create(path: Path, cluster_id: str, replica_id: int) -> None:
    """A new database, whole or not at all: tables and owner are written beside it,
    synced, then renamed into place (and the folder synced), so that a crash never
    leaves a ``path`` that is empty or without its owner. Raises OSError or sqlite3.Error."""
    temp = path.with_name(path.name + ".new")
    for suffix in ("", "-journal", "-wal", "-shm"):  # the leftovers of a crash, if any
        temp.with_name(temp.name + suffix).unlink(missing_ok=True)
    db = sqlite3.connect(temp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")  # all in the one file once committed
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        for key, value in (("cluster_id", cluster_id), ("replica_id", replica_id)):
            db.execute("INSERT INTO meta VALUES (?, ?)", (key, msgpack.packb(value)))
        db.execute("COMMIT")
    finally:
        db.close()
    _fsync(temp)
    for suffix in ("-wal", "-shm"):  # an empty log of no database (check_file): stale
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    os.replace(temp, path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decode(data: bytes) -> Any:
    """A message this replica wrote itself: its own length is the limit.

    The decoder's default limit (4 MiB) is below what an honest replica may send
    with the default parameters (a VIEW-CHANGE takes up to about 4.1 MiB and a
    NEW-VIEW about 16 MiB, :mod:`pbft.bounds`): decoding with it made a replica
    that had journalled such a message unable to restart.
    """
    return decode_signed(data, len(data))


def _view(message: Any) -> int | None:
    for name in ("view", "new_view"):
        value = getattr(message, name, None)
        if value is not None:
            return value
    return None
