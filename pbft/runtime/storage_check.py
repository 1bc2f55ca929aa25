"""Is a replica's database fit to recover from? Checked before anything is used.

A replica restarted from a damaged journal could forget what it signed, and
then contradict it: that is Byzantine behaviour, not a crash. So
:class:`~pbft.runtime.storage.SqliteJournal` refuses a database that fails any
of these checks, with one line naming the file and the defect
(:class:`StorageError`), and never repairs or ignores what it finds:

1. **The file**: a regular file that SQLite can read (a garbage or truncated
   file is "not a database" or "malformed"), not empty, with no write-ahead
   log left behind without its database. A new database is created whole
   (``storage``: built aside, then renamed into place), so a file without the
   journal's tables, an empty one included, is damaged, never taken for new;
2. **SQLite's own check**, ``PRAGMA integrity_check``: every page, b-tree,
   free list and record header is consistent, and so are the two indexes (the
   primary keys of ``meta`` and ``sent``; ``quick_check`` skips those, and a
   damaged index silently hides rows: measured, a flipped byte in ``meta``'s
   index made the snapshot vanish). The large table, ``history``, has no index,
   so the check stays about linear in the file's size;
3. **The schema**: the five tables of the journal with their columns;
4. **The owner**: the cluster id and replica id in ``meta``;
5. **The contents**: every meta value decodes and has its type; every message
   decodes (canonical MessagePack, :mod:`pbft.encoding`) and agrees with the
   columns stored beside it (its payload, sequence number and view); every
   message the replica sent names it as sender; every PRE-PREPARE's digest is
   that of its batch, and every certificate's PREPAREs match its PRE-PREPARE
   and come from distinct replicas; the stable checkpoint's proof is of that
   checkpoint, from distinct replicas, and a snapshot held at the stable
   checkpoint has its digest; given the cluster's n, every sender is a member.

The checks read through a read-only connection (:func:`check_journal`): SQLite
neither checkpoints the write-ahead log into the file nor deletes it when that
connection closes, so a refused database and its log are left byte for byte as
they were found, for analysis. Only a database that passed is opened for writing.

Signatures are *not* checked: after a key rotation (docs/deploy.md) a healthy
journal holds messages signed with keys the cluster no longer lists. SQLite
keeps no checksums of its pages, so a flipped bit in a plain number (a view, a
sequence number) can pass every check: a filesystem that checksums data (ZFS,
btrfs) and ECC memory are the defence against that. The ``history`` table (an
audit trail that recovery never reads, and that grows for ever) gets SQLite's
check and one SQL query on its column types, not a decoding of every row.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from pbft.encoding import DecodeError, decode_certificate, decode_signed
from pbft.journal import BINDING_TYPES, message_seq
from pbft.messages import Checkpoint, PrePrepare, batch_digest

#: The journal's tables and their columns, in order (see ``storage.SCHEMA``).
TABLES = {
    "meta": ("key", "value"),
    "sent": ("payload", "data", "seq", "view"),
    "certificates": ("seq", "data"),
    "committed": ("seq", "data"),
    "history": ("seq", "view", "digest", "requests"),
}
#: SHA-256, the digest of a checkpoint's state.
DIGEST_BYTES = 32
#: Each meta key and the check its decoded value must pass.
_META: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "cluster_id": ("a string", lambda value: isinstance(value, str) and value != ""),
    "replica_id": ("a replica id", lambda value: _is_count(value)),
    "view": ("a view number", lambda value: _is_count(value)),
    "view_active": ("true or false", lambda value: isinstance(value, bool)),
    "stable_seq": ("a sequence number", lambda value: _is_count(value)),
    "stable_digest": (
        "a 32-byte digest",
        lambda value: isinstance(value, bytes) and len(value) == DIGEST_BYTES,
    ),
    "stable_proof": (
        "a list of messages",
        lambda value: isinstance(value, list) and all(isinstance(v, bytes) for v in value),
    ),
    "snapshot_seq": ("a sequence number", lambda value: _is_count(value)),
    "snapshot": ("bytes", lambda value: isinstance(value, bytes)),
}
_ADVICE = "restore it from a backup, or see docs/deploy.md, 'A damaged database'"


class StorageError(RuntimeError):
    """The database cannot be used for this replica; the message says why, in one line."""


def damaged(path: Path, problem: str) -> StorageError:
    """The one-line refusal of a damaged database."""
    line = " ".join(f"{path}: damaged: {problem}".split())
    return StorageError(f"{line}; it was not used ({_ADVICE})")


# ------------------------------------------------------------------ the file


def check_file(path: Path) -> bool:
    """Before SQLite opens ``path``: may it? Return whether it exists (False: a new replica).

    May raise :class:`OSError` (a folder it may not read, say): the caller says so."""
    wal = path.with_name(path.name + "-wal")
    if not path.exists():
        if wal.exists() and wal.stat().st_size > 0:
            raise damaged(path, f"missing, but its write-ahead log {wal.name} is there")
        return False
    if not path.is_file():
        raise StorageError(f"{path}: not a regular file, so not a replica's database")
    if path.stat().st_size == 0:
        # Before SQLite opens it: SQLite, even read-only, deletes the log of an empty file.
        raise damaged(path, "the file is empty (0 bytes): a journal is created whole, so truncated")
    return True


def read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot change the file or its log, not even when it closes."""
    return sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)


def check_journal(
    path: Path, owner: tuple[str, int], replicas: int | None = None
) -> dict[str, Any]:
    """Checks 2 to 5 (the module docstring), read-only; return the decoded ``meta``.
    ``owner`` is the (cluster id, replica id) that must own it.

    A read-only connection to a database in WAL mode creates its ``-wal`` (empty)
    and ``-shm`` (an index of the log) if they are missing, and cannot delete them:
    when the database is refused, those it created are removed, so that the folder
    is left as it was found (a database that passes is opened for writing next)."""
    side_files = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    missing = [side for side in side_files if not side.exists()]
    try:
        db = read_only(path)
    except sqlite3.Error as error:
        raise StorageError(f"{path}: cannot open it: {error}") from None
    try:
        check_database(db, path)
        meta = check_contents(db, path, replicas)
        found = (meta["cluster_id"], meta["replica_id"])
        if found != owner:
            raise StorageError(
                f"{path} belongs to replica {found[1]} of cluster {found[0]!r}, not replica "
                f"{owner[1]} of {owner[0]!r}: the data folder of another replica or cluster "
                "(check --id and --data)"
            )
    except BaseException:
        db.close()
        for created in missing:  # nothing in them: a read-only connection writes no log
            created.unlink(missing_ok=True)
        raise
    db.close()
    return meta


def check_database(db: sqlite3.Connection, path: Path) -> None:
    """SQLite's check and the schema: the journal's tables, with their columns."""
    try:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check(4)")]
        if problems != ["ok"]:
            raise damaged(path, "SQLite's integrity_check found: " + "; ".join(problems))
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        if not names:
            raise damaged(path, "no tables at all: not a pbft journal (nor a new one, "
                          "which is created with its tables)")  # fmt: skip
        for table, columns in TABLES.items():
            if table not in names:
                others = ", ".join(sorted(names - set(TABLES))) or "none"
                raise damaged(
                    path, f"not a pbft journal: no table {table} (other tables: {others})"
                )
            found = tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))
            if found != columns:
                raise damaged(
                    path, f"table {table} has columns ({', '.join(found)}), "
                    f"expected ({', '.join(columns)})",
                )  # fmt: skip
    except sqlite3.DatabaseError as error:
        raise damaged(path, f"SQLite cannot read it ({error})") from None


# -------------------------------------------------------------- the contents


def check_contents(
    db: sqlite3.Connection, path: Path, replicas: int | None = None
) -> dict[str, Any]:
    """Everything recovery reads decodes and is consistent (the module docstring, 5);
    return the decoded ``meta`` table, owner included. Given the number of
    ``replicas``, every message must also come from one of them."""
    members = _Members(path, replicas)
    try:
        meta = _check_meta(db, path)
        if "replica_id" not in meta:
            raise damaged(path, "it has tables but no owner (cluster and replica id)")
        _check_sent(db, path, meta["replica_id"], members)
        _check_certificates(db, path, members)
        _check_committed(db, path, members)
        _check_stable(meta, path, members)
        _check_history(db, path)
    except sqlite3.DatabaseError as error:
        raise damaged(path, f"SQLite cannot read it ({error})") from None
    return meta


def _check_meta(db: sqlite3.Connection, path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, raw in db.execute("SELECT key, value FROM meta"):
        if key not in _META:
            raise damaged(path, f"meta: unknown key {key!r}")
        what, valid = _META[key]
        if not isinstance(raw, bytes):  # MessagePack in a blob, as the journal writes it
            raise damaged(path, f"meta {key}: not bytes but {type(raw).__name__}")
        try:
            value = msgpack.unpackb(raw)
        except Exception as error:  # msgpack raises several types; all mean "malformed"
            raise damaged(path, f"meta {key}: not MessagePack ({type(error).__name__})") from None
        if not valid(value):
            got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
            raise damaged(path, f"meta {key}: expected {what}, got {got}")
        meta[key] = value
    if ("cluster_id" in meta) != ("replica_id" in meta):
        raise damaged(path, "meta: the owner (cluster_id and replica_id) is half written")
    return meta


def _check_sent(db: sqlite3.Connection, path: Path, replica_id: int, members: _Members) -> None:
    for rowid, payload, data, seq, view in db.execute(
        "SELECT rowid, payload, data, seq, view FROM sent"
    ):
        where = f"sent message {rowid}"
        signed = _decode(path, where, data)
        message = signed.message
        if signed.payload != payload:
            raise damaged(path, f"{where}: its payload column differs from the message")
        if (message_seq(message), _view(message)) != (seq, view):
            raise damaged(
                path, f"{where}: stored as seq {seq} view {view}, the message says "
                f"seq {message_seq(message)} view {_view(message)}",
            )  # fmt: skip
        if type(message) not in BINDING_TYPES:  # only these have a sender to check
            raise damaged(path, f"{where}: a {message.TYPE}, which is never journalled")
        if message.sender != replica_id:
            raise damaged(path, f"{where}: sent by replica {message.sender}, not by this one")
        if type(message) is PrePrepare:
            _check_batch(path, where, message)
        members.check(where, message)


def _check_certificates(db: sqlite3.Connection, path: Path, members: _Members) -> None:
    for seq, data in db.execute("SELECT seq, data FROM certificates"):
        where = f"certificate {seq}"
        if not isinstance(data, bytes):
            raise damaged(path, f"{where}: not bytes but {type(data).__name__}")
        try:
            certificate = decode_certificate(data, len(data))
        except DecodeError as error:
            raise damaged(path, f"{where}: {error}") from None
        pre_prepare = certificate.pre_prepare.message
        members.check(where, pre_prepare)
        if pre_prepare.seq != seq:
            raise damaged(path, f"{where}: its PRE-PREPARE is for seq {pre_prepare.seq}")
        _check_batch(path, where, pre_prepare)
        key = (pre_prepare.view, pre_prepare.seq, pre_prepare.digest)
        voters = {pre_prepare.sender}
        for prepare in certificate.prepares:
            vote = prepare.message
            if (vote.view, vote.seq, vote.digest) != key:
                raise damaged(path, f"{where}: a PREPARE of replica {vote.sender} does not match")
            members.check(where, vote)
            if vote.sender in voters:
                raise damaged(path, f"{where}: replica {vote.sender} votes twice")
            voters.add(vote.sender)


def _check_committed(db: sqlite3.Connection, path: Path, members: _Members) -> None:
    for seq, data in db.execute("SELECT seq, data FROM committed"):
        where = f"committed batch {seq}"
        message = _decode(path, where, data).message
        if type(message) is not PrePrepare:
            raise damaged(path, f"{where}: a {message.TYPE}, not a PRE-PREPARE")
        if message.seq != seq:
            raise damaged(path, f"{where}: its PRE-PREPARE is for seq {message.seq}")
        _check_batch(path, where, message)
        members.check(where, message)


def _check_stable(meta: dict[str, Any], path: Path, members: _Members) -> None:
    stable_seq = meta.get("stable_seq", 0)
    digest = meta.get("stable_digest", b"")
    senders = set()
    for index, data in enumerate(meta.get("stable_proof", [])):
        where = f"stable checkpoint proof, message {index}"
        message = _decode(path, where, data).message
        if type(message) is not Checkpoint:
            raise damaged(path, f"{where}: a {message.TYPE}, not a CHECKPOINT")
        if (message.seq, message.state_digest) != (stable_seq, digest):
            raise damaged(path, f"{where}: for another checkpoint than seq {stable_seq}")
        members.check(where, message)
        if message.sender in senders:
            raise damaged(path, f"{where}: replica {message.sender} appears twice")
        senders.add(message.sender)
    if stable_seq > 0 and not senders:
        raise damaged(path, f"stable checkpoint {stable_seq} has no proof")
    snapshot_seq = meta.get("snapshot_seq", 0)
    if snapshot_seq > stable_seq:
        raise damaged(path, f"snapshot at seq {snapshot_seq} beyond the stable {stable_seq}")
    snapshot = meta.get("snapshot")
    if snapshot_seq > 0 and snapshot is None:
        raise damaged(path, f"snapshot at seq {snapshot_seq} is missing")
    if snapshot is not None and 0 < snapshot_seq == stable_seq:
        if hashlib.sha256(snapshot).digest() != digest:
            raise damaged(path, f"the snapshot at seq {snapshot_seq} does not match its digest")


def _check_history(db: sqlite3.Connection, path: Path) -> None:
    """Column types only, in SQL: the table grows for ever and recovery never reads it."""
    row = db.execute(
        "SELECT seq FROM history WHERE typeof(view) != 'integer' OR typeof(digest) != 'blob' "
        "OR length(digest) != 32 OR typeof(requests) != 'blob' LIMIT 1"
    ).fetchone()
    if row is not None:
        raise damaged(path, f"history entry {row[0]} is not (view, 32-byte digest, requests)")


# -------------------------------------------------------------------- helpers


class _Members:
    """Checks that a message comes from replica 0..replicas-1 (any, if not known)."""

    def __init__(self, path: Path, replicas: int | None) -> None:
        self.path = path
        self.replicas = replicas

    def check(self, where: str, message: Any) -> None:
        if self.replicas is not None and message.sender >= self.replicas:
            raise damaged(
                self.path, f"{where}: from replica {message.sender}, but the cluster has "
                f"replicas 0..{self.replicas - 1}",
            )  # fmt: skip


def _decode(path: Path, where: str, data: object) -> Any:
    if not isinstance(data, bytes):
        raise damaged(path, f"{where}: not bytes but {type(data).__name__}")
    try:
        return decode_signed(data, len(data))
    except DecodeError as error:
        raise damaged(path, f"{where}: {error}") from None


def _check_batch(path: Path, where: str, pre_prepare: PrePrepare) -> None:
    if batch_digest(pre_prepare.batch) != pre_prepare.digest:
        raise damaged(path, f"{where}: the PRE-PREPARE's batch does not match its digest")


def _view(message: Any) -> int | None:
    for name in ("view", "new_view"):
        value = getattr(message, name, None)
        if value is not None:
            return value
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
