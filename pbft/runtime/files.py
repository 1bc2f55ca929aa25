"""A cluster's configuration folder: reading it, checking it, and creating it.

``pbft init DIR`` creates the folder that every replica and client of one
cluster is started from::

    DIR/
      cluster.toml        who is in the cluster and how to reach them; no secrets
      keys/               mode 0700
        replica-0.key     one private key per replica and per client, mode 0600
        ...
        client-0.key

``cluster.toml`` holds the cluster id, f, optional ``[protocol]`` tuning (any
:class:`~pbft.config.ProtocolParams` field), an optional ``[storage]`` table
(``durability = "normal"`` or ``"full"``, :data:`pbft.config.DURABILITY_LEVELS`;
"normal" when absent), one ``[[replica]]`` table per
replica (id, host, port, public key) and one ``[[client]]`` table per client
(id, public key). It is public: it can be copied to every machine as it is.

A key file holds one principal's 32-byte Ed25519 seed as 64 hex characters and
a newline. A machine needs only the keys of the principals it runs. A key file
is created with mode 0600 from the start (never written first and restricted
later), and is refused when group or others may read it, or when it does not
match its public key in ``cluster.toml``.

Everything read from the folder is checked before it is used. Every problem
raises :class:`ConfigFileError` with one line naming the file, the table or key
and the problem, so the command line can print it as it is. Messages never
quote key material: a private key pasted into the wrong place must not end up
in a log (the checks are in :mod:`pbft.runtime.cluster_document`). The standard
library reads TOML but does not write it; tomli-w writes ``cluster.toml``, into a
temporary file that then replaces the old one, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import secrets
import shlex
import socket
import stat
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from pbft.config import (
    DEFAULT_DURABILITY,
    ClusterConfig,
    ProtocolParams,
)
from pbft.crypto import Ed25519Signer
from pbft.runtime.cluster_document import (
    CONFIG_NAME,
    HEX_KEY,
    ReplicaAddress,
    fail,
    integer,
    parse_document,
    parse_storage,
)
from pbft.runtime.cluster_document import (
    ConfigFileError as ConfigFileError,  # the error of this module's functions too
)

KEYS_NAME = "keys"
ROLES = ("replica", "client")

_KEY_FILE = re.compile(r"(replica|client)-[0-9]+\.key")
_LARGEST_KEY_FILE_BYTES = 4096
_HEADER = (
    "# pbft cluster configuration: written by `pbft init`\n"
    "# Public: no private keys here. They are in keys/, one file per replica and client.\n"
)


@attrs.frozen
class ClusterFiles:
    """A checked cluster folder: membership, tuning, addresses, and where the keys are."""

    directory: Path
    config: ClusterConfig
    params: ProtocolParams
    #: Sorted by id, so ``replicas[i].id == i``.
    replicas: tuple[ReplicaAddress, ...]
    #: ``[storage] durability``: how the replicas' journals sync (pbft.config.DURABILITY_LEVELS).
    durability: str = DEFAULT_DURABILITY

    def address(self, replica_id: int) -> tuple[str, int]:
        """The (host, port) that replica ``replica_id`` listens on."""
        self._public_key("replica", replica_id)
        replica = self.replicas[replica_id]
        return replica.host, replica.port

    def key_path(self, role: str, id: int) -> Path:
        """Where the private key of ``role`` ``id`` is kept."""
        self._public_key(role, id)
        return self.directory / KEYS_NAME / f"{role}-{id}.key"

    def load_signer(self, role: str, id: int) -> Ed25519Signer:
        """Read and check the private key of ``role`` ``id`` (see the module docstring)."""
        public_key = self._public_key(role, id)
        name = f"{KEYS_NAME}/{role}-{id}.key"
        signer = Ed25519Signer.from_seed(_read_seed(self.key_path(role, id), name, role))
        if not hmac.compare_digest(signer.public_key, public_key):
            fail(name, f"does not match the public key of {role} {id} in {CONFIG_NAME}")
        return signer

    def _public_key(self, role: str, id: int) -> bytes:
        if role not in ROLES:
            raise ValueError(f"role must be 'replica' or 'client', got {role!r}")
        keys = self.config.replica_keys if role == "replica" else self.config.client_keys
        if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id < len(keys):
            fail(CONFIG_NAME, f"no {role} {id} (the {role}s are 0..{len(keys) - 1})")
        return keys[id]


def _read_seed(path: Path, name: str, role: str) -> bytes:
    """The 32-byte seed in a key file that only its owner may read."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fail(name, f"missing (every {role} needs its private key to run)")
    except OSError as error:
        fail(name, f"cannot read it: {error.strerror or error}")
    try:
        # Checked on the open file, not on the path, so the file cannot be swapped in between.
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            fail(name, "not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if os.name == "posix" and mode & 0o077:
            fail(name, f"permissions {mode:04o} are too open; run chmod 600 on it")
        content = os.read(descriptor, _LARGEST_KEY_FILE_BYTES)
    except OSError as error:
        fail(name, f"cannot read it: {error.strerror or error}")
    finally:
        os.close(descriptor)
    text = content.decode("ascii", errors="replace").strip()
    if not HEX_KEY.fullmatch(text):
        fail(name, "not an Ed25519 private key (expected 64 hex characters and a newline)")
    return bytes.fromhex(text)


# ------------------------------------------------------------------------- reading


def load_cluster(directory: Path) -> ClusterFiles:
    """Read and check ``directory/cluster.toml``; key files are read by :meth:`load_signer`."""
    directory = Path(directory)
    try:
        content = (directory / CONFIG_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        command = f"pbft init {shlex.quote(str(directory))} --f 1"
        fail(str(directory), f"no {CONFIG_NAME} here (create one with: {command})")
    except OSError as error:
        fail(CONFIG_NAME, f"cannot read it: {error.strerror or error}")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        fail(CONFIG_NAME, f"not UTF-8 text (bad byte at offset {error.start})")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line = re.search(r"at line ([0-9]+)", str(error))
        fail(CONFIG_NAME if line is None else f"{CONFIG_NAME}: line {line[1]}", f"{error}")
    config, params, replicas = parse_document(document)
    return ClusterFiles(directory, config, params, replicas, parse_storage(document))


# ------------------------------------------------------------------------- writing


def init_cluster(
    directory: Path,
    f: int,
    host: str | Sequence[str] = "127.0.0.1",
    base_port: int = 7000,
    clients: int = 1,
    n: int | None = None,
    ports: Sequence[int] | None = None,
    protocol: Mapping[str, int] | None = None,
    force: bool = False,
    durability: str = DEFAULT_DURABILITY,
) -> ClusterFiles:
    """Create a cluster folder with fresh keys; replica i listens on ``base_port + i``.

    ``host`` is one address for every replica, or one per replica (replica i on
    the i-th: one machine each). ``durability`` goes into ``[storage]``.

    Everything is checked, with the same rules :func:`load_cluster` applies,
    before anything is written. An existing non-empty ``cluster.toml`` or
    ``keys/`` is refused unless ``force``, which replaces them.
    """
    directory = Path(directory)
    f = integer({"f": f}, "f", CONFIG_NAME)
    n = 3 * f + 1 if n is None else integer({"n": n}, "n", CONFIG_NAME)
    clients = integer({"clients": clients}, "clients", CONFIG_NAME)
    # The same words ClusterConfig uses, checked here so that no key is generated in vain.
    if f < 0:
        fail(CONFIG_NAME, f"f must be at least 0, got {f}")
    if n < 3 * f + 1:
        fail(
            CONFIG_NAME,
            f"n = {n} replicas cannot tolerate f = {f}: PBFT needs n >= 3f+1 = {3 * f + 1}",
        )
    if clients < 1:
        fail(CONFIG_NAME, f"clients must be at least 1, got {clients}")
    if ports is None:
        ports = [base_port + i for i in range(n)]
    if len(ports) != n:
        fail(CONFIG_NAME, f"{len(ports)} ports given for n = {n} replicas")
    hosts = [host] * n if isinstance(host, str) else list(host)
    if len(hosts) == 1:
        hosts *= n
    if len(hosts) != n:
        fail(CONFIG_NAME, f"{len(hosts)} hosts given for n = {n} replicas (give 1 or {n})")
    replica_signers = [Ed25519Signer.generate() for _ in range(n)]
    client_signers = [Ed25519Signer.generate() for _ in range(clients)]
    document: dict[str, Any] = {"cluster_id": secrets.token_hex(8), "f": f}
    if protocol:
        document["protocol"] = dict(protocol)
    document["storage"] = {"durability": durability}
    document["replica"] = [
        {"id": i, "host": address, "port": port, "public_key": signer.public_key.hex()}
        for i, (address, port, signer) in enumerate(zip(hosts, ports, replica_signers, strict=True))
    ]
    document["client"] = [
        {"id": c, "public_key": signer.public_key.hex()} for c, signer in enumerate(client_signers)
    ]
    parse_document(document)
    parse_storage(document)
    try:
        _check_replaceable(directory, force)
        _write_cluster(directory, document, replica_signers, client_signers)
    except OSError as error:
        fail(str(error.filename or directory), f"cannot write it: {error.strerror or error}")
    return load_cluster(directory)


def _check_replaceable(directory: Path, force: bool) -> None:
    config_path, keys_path = directory / CONFIG_NAME, directory / KEYS_NAME
    if force:
        return
    if config_path.is_file() and config_path.stat().st_size > 0:
        fail(
            CONFIG_NAME,
            f"already exists in {directory} (pbft init --force replaces it and its keys)",
        )
    if keys_path.is_dir() and any(keys_path.iterdir()):
        fail(f"{KEYS_NAME}/", f"not empty in {directory} (pbft init --force replaces the keys)")


def _write_cluster(
    directory: Path,
    document: Mapping[str, Any],
    replica_signers: Sequence[Ed25519Signer],
    client_signers: Sequence[Ed25519Signer],
) -> None:
    """Keys first and ``cluster.toml`` last, so an interrupted init leaves no usable config."""
    keys = directory / KEYS_NAME
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    for old in keys.iterdir():
        if _KEY_FILE.fullmatch(old.name):
            old.unlink()
    for role, signers in (("replica", replica_signers), ("client", client_signers)):
        for i, signer in enumerate(signers):
            _write_key(keys / f"{role}-{i}.key", signer.private_bytes())
    _fsync_directory(keys)
    _write_atomically(directory / CONFIG_NAME, _render_toml(document))


def _render_toml(document: Mapping[str, Any]) -> str:
    """The header, top-level values, then each table and each ``[[role]]`` table.

    tomli-w spells every value; the layout is ours: left to itself it writes short
    arrays of tables inline (``client = [{ id = 0, ... }]``), where the documented
    and hand-editable form is one ``[[client]]`` table each.
    """
    values = {key: value for key, value in document.items() if not isinstance(value, dict | list)}
    parts = [_HEADER + tomli_w.dumps(values)]
    for key, value in document.items():
        if isinstance(value, dict):
            parts.append(tomli_w.dumps({key: value}))
        elif isinstance(value, list):
            parts += [f"[[{key}]]\n" + tomli_w.dumps(table) for table in value]
    return "\n".join(parts)


def _write_key(path: Path, seed: bytes) -> None:
    # O_EXCL and mode 0600 at creation: the key is never readable by others, even briefly.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        if hasattr(os, "fchmod"):
            os.fchmod(file.fileno(), 0o600)  # the umask may have removed owner bits
        file.write(seed.hex() + "\n")
        file.flush()
        os.fsync(file.fileno())


def _write_atomically(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600, but cluster.toml is public
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (POSIX only)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ----------------------------------------------------------------------- test aids


def free_loopback_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free on ``host`` a moment ago.

    All sockets are bound at once (so the operating system hands out distinct
    ports), then closed. Another process may take a port before it is used, so
    this is for throw-away clusters (``pbft demo``, tests), not deployments.
    """
    if count < 0:
        raise ValueError(f"count must be at least 0, got {count}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
