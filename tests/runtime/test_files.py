"""The cluster folder: `pbft init` writes it, every replica and client reads it back.

Each refusal is checked for its exact one-line message, since the command line
prints these messages as they are.
"""

from __future__ import annotations

import os
import socket
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pbft.config import ProtocolParams
from pbft.crypto import Ed25519Signer
from pbft.runtime.cluster_document import PROTOCOL_FIELDS, ReplicaAddress, toml_string
from pbft.runtime.files import (
    ClusterFiles,
    ConfigFileError,
    free_loopback_ports,
    init_cluster,
    load_cluster,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file permissions")
SMALL_ORDER_KEY = "01" + "00" * 31  # the identity point: verifies forged signatures
# A fixed key: it appears in test ids, which pytest-xdist's workers must all collect alike.
VALID_KEY = Ed25519Signer.from_seed(bytes(32)).public_key.hex()


def refused(action: Callable[[], Any]) -> str:
    """Run ``action``, which must raise ConfigFileError; return its one-line message."""
    with pytest.raises(ConfigFileError) as caught:
        action()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterFiles:
    return init_cluster(tmp_path / "cluster", f=1, clients=2)


def config_text(cluster: ClusterFiles) -> str:
    return (cluster.directory / "cluster.toml").read_text()


def edit(cluster: ClusterFiles, old: str, new: str) -> None:
    """Replace one exact piece of cluster.toml, which must occur exactly once."""
    path = cluster.directory / "cluster.toml"
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    path.write_text(text.replace(old, new))


def replica_key(cluster: ClusterFiles, replica_id: int) -> str:
    return cluster.config.replica_keys[replica_id].hex()


# ------------------------------------------------------------------- round trip


def test_init_then_load_gives_the_same_cluster(cluster: ClusterFiles) -> None:
    loaded = load_cluster(cluster.directory)
    assert loaded == cluster
    assert loaded.config.f == 1
    assert loaded.config.n == 4
    assert len(loaded.config.client_keys) == 2
    assert len(loaded.config.cluster_id) == 16
    int(loaded.config.cluster_id, 16)
    assert loaded.params == ProtocolParams()
    assert loaded.replicas == tuple(ReplicaAddress(i, "127.0.0.1", 7000 + i) for i in range(4))
    assert [loaded.address(i) for i in range(4)] == [("127.0.0.1", 7000 + i) for i in range(4)]


def test_every_key_loads_and_matches_its_public_key(cluster: ClusterFiles) -> None:
    for i, public_key in enumerate(cluster.config.replica_keys):
        signer = cluster.load_signer("replica", i)
        assert signer.public_key == public_key
        assert cluster.key_path("replica", i) == cluster.directory / "keys" / f"replica-{i}.key"
    for c, public_key in enumerate(cluster.config.client_keys):
        assert cluster.load_signer("client", c).public_key == public_key
    assert len(set(cluster.config.replica_keys + cluster.config.client_keys)) == 6


@posix_only
def test_key_files_are_private_from_the_start(cluster: ClusterFiles) -> None:
    keys = cluster.directory / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    names = sorted(path.name for path in keys.iterdir())
    assert names == ["client-0.key", "client-1.key"] + [f"replica-{i}.key" for i in range(4)]
    for path in keys.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        content = path.read_text()
        assert len(content) == 65 and content.endswith("\n")
        bytes.fromhex(content.strip())


def test_no_private_key_appears_in_cluster_toml(cluster: ClusterFiles) -> None:
    raw = (cluster.directory / "cluster.toml").read_bytes()
    for role, count in (("replica", 4), ("client", 2)):
        for i in range(count):
            seed = cluster.load_signer(role, i).private_bytes()
            assert seed.hex().encode() not in raw.lower()
            assert seed not in raw


def test_cluster_toml_is_the_documented_layout(cluster: ClusterFiles) -> None:
    text = config_text(cluster)
    assert text.startswith("# pbft cluster configuration: written by `pbft init`\n")
    document = tomllib.loads(text)
    assert list(document) == ["cluster_id", "f", "storage", "replica", "client"]
    assert document["storage"] == {"durability": "normal"}
    assert document["replica"][1] == {
        "id": 1,
        "host": "127.0.0.1",
        "port": 7001,
        "public_key": replica_key(cluster, 1),
    }
    assert document["client"][1] == {"id": 1, "public_key": cluster.config.client_keys[1].hex()}
    assert not any(name.startswith(".cluster.toml") for name in os.listdir(cluster.directory))


def test_init_takes_n_ports_host_and_clients(tmp_path: Path) -> None:
    ports = [9100, 9107, 9102, 9103, 9104, 9105]
    cluster = init_cluster(tmp_path, f=1, n=6, ports=ports, host="localhost", clients=3)
    assert cluster.config.n == 6 and cluster.config.quorum == 4
    assert [replica.port for replica in cluster.replicas] == ports
    assert cluster.address(1) == ("localhost", 9107)
    assert len(cluster.config.client_keys) == 3
    assert load_cluster(tmp_path) == cluster


def test_f_zero_is_a_single_replica(tmp_path: Path) -> None:
    cluster = init_cluster(tmp_path, f=0, base_port=8000)
    assert cluster.replicas == (ReplicaAddress(0, "127.0.0.1", 8000),)


def test_protocol_overrides_round_trip(tmp_path: Path) -> None:
    overrides = {"checkpoint_interval": 16, "log_window": 48, "view_change_timeout_ticks": 250}
    cluster = init_cluster(tmp_path, f=1, protocol=overrides)
    assert cluster.params == ProtocolParams(**overrides)
    assert tomllib.loads(config_text(cluster))["protocol"] == overrides
    assert load_cluster(tmp_path).params == cluster.params


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        'quote " and backslash \\ and \\"',
        "control \x00 \x01 \x1f \x7f \b \t \n \f \r",
        "unicode é ∑ 🚀 and a trailing backslash \\",
        "",
    ],
)
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(f"value = {toml_string(text)}")["value"] == text


def test_a_host_that_needs_escaping_round_trips(tmp_path: Path) -> None:
    host = 'odd"host\\name'
    assert init_cluster(tmp_path, f=0, host=host).address(0) == (host, 7000)


# ------------------------------------------------------------------------ force


def test_an_existing_cluster_is_not_replaced_without_force(cluster: ClusterFiles) -> None:
    message = refused(lambda: init_cluster(cluster.directory, f=1))
    assert message == (
        f"cluster.toml: already exists in {cluster.directory} "
        "(pbft init --force replaces it and its keys)"
    )
    assert load_cluster(cluster.directory) == cluster


def test_existing_keys_are_not_replaced_without_force(cluster: ClusterFiles) -> None:
    (cluster.directory / "cluster.toml").unlink()
    message = refused(lambda: init_cluster(cluster.directory, f=1))
    assert message == (
        f"keys/: not empty in {cluster.directory} (pbft init --force replaces the keys)"
    )


def test_an_empty_cluster_toml_and_keys_folder_may_be_filled(tmp_path: Path) -> None:
    (tmp_path / "cluster.toml").touch()
    (tmp_path / "keys").mkdir()
    assert init_cluster(tmp_path, f=1).config.n == 4


def test_force_replaces_the_cluster_and_all_its_keys(tmp_path: Path) -> None:
    old = init_cluster(tmp_path, f=2, clients=2)
    new = init_cluster(tmp_path, f=1, force=True)
    assert new.config.cluster_id != old.config.cluster_id
    assert new.config.n == 4 and load_cluster(tmp_path) == new
    assert not set(new.config.replica_keys) & set(old.config.replica_keys)
    names = sorted(path.name for path in (tmp_path / "keys").iterdir())
    assert names == ["client-0.key"] + [f"replica-{i}.key" for i in range(4)]
    for i in range(4):
        assert new.load_signer("replica", i).public_key == new.config.replica_keys[i]


def test_init_into_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    message = refused(lambda: init_cluster(tmp_path / "taken", f=1))
    assert message.startswith(str(tmp_path / "taken"))
    assert ": cannot write it: " in message


def test_a_refused_init_writes_nothing(tmp_path: Path) -> None:
    refused(lambda: init_cluster(tmp_path / "new", f=1, n=3))
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------- init refusals


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"f": -1}, "cluster.toml: f must be at least 0, got -1"),
        (
            {"f": 1, "n": 3},
            "cluster.toml: n = 3 replicas cannot tolerate f = 1: PBFT needs n >= 3f+1 = 4",
        ),
        ({"f": 1, "clients": 0}, "cluster.toml: clients must be at least 1, got 0"),
        (
            {"f": 0, "n": -1},
            "cluster.toml: n = -1 replicas cannot tolerate f = 0: PBFT needs n >= 3f+1 = 1",
        ),
        (
            {"f": 1, "clients": True},
            "cluster.toml: clients must be an integer, got the boolean true",
        ),
        ({"f": True}, "cluster.toml: f must be an integer, got the boolean true"),
        (
            {"f": 1, "ports": [7000, 7001, 7001, 7003]},
            "cluster.toml: replica 2: port 7001 is also used by replica 1",
        ),
        (
            {"f": 1, "ports": [7000, 7001, 70000, 7003]},
            "cluster.toml: replica 2: port 70000 is not in 1..65535",
        ),
        ({"f": 1, "base_port": 0}, "cluster.toml: replica 0: port 0 is not in 1..65535"),
        ({"f": 1, "base_port": 65533}, "cluster.toml: replica 3: port 65536 is not in 1..65535"),
        ({"f": 1, "ports": [7000, 7001]}, "cluster.toml: 2 ports given for n = 4 replicas"),
        (
            {"f": 0, "host": ""},
            'cluster.toml: replica 0: host must be a host name or an IP address, got the string ""',
        ),
        (
            {"f": 1, "protocol": {"log_window": 50}},
            "cluster.toml: [protocol]: log_window must be a multiple of checkpoint_interval",
        ),
        (
            {"f": 1, "protocol": {"batch_size": True}},
            "cluster.toml: [protocol]: batch_size must be an integer, got the boolean true",
        ),
        (
            {"f": 1, "protocol": {"timeout": 5}},
            "cluster.toml: [protocol]: unknown key timeout (valid keys: "
            + ", ".join(PROTOCOL_FIELDS)
            + ")",
        ),
    ],
)
def test_init_refuses(tmp_path: Path, arguments: dict[str, Any], expected: str) -> None:
    assert refused(lambda: init_cluster(tmp_path, **arguments)) == expected
    assert not (tmp_path / "cluster.toml").exists()


# --------------------------------------------------------------- load refusals


def test_a_missing_folder_says_how_to_create_one(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert refused(lambda: load_cluster(missing)) == (
        f"{missing}: no cluster.toml here (create one with: pbft init {missing} --f 1)"
    )
    odd = tmp_path / "two words"
    odd.mkdir()
    assert refused(lambda: load_cluster(odd)).endswith(
        f"(create one with: pbft init '{odd}' --f 1)"
    )


def test_a_toml_syntax_error_names_the_line(cluster: ClusterFiles) -> None:
    edit(cluster, "port = 7001\n", "port = = 7001\n")
    line = config_text(cluster).splitlines().index("port = = 7001") + 1
    message = refused(lambda: load_cluster(cluster.directory))
    assert message.startswith(f"cluster.toml: line {line}: ")
    assert f"(at line {line}, column 8)" in message


def test_a_file_that_is_not_utf8_is_refused(cluster: ClusterFiles) -> None:
    (cluster.directory / "cluster.toml").write_bytes(b'cluster_id = "\xff"\n')
    assert refused(lambda: load_cluster(cluster.directory)) == (
        "cluster.toml: not UTF-8 text (bad byte at offset 14)"
    )


LOAD_REFUSALS: list[tuple[str, str, str]] = [
    # (old text, new text, expected message); "{r1}" stands for replica 1's public key,
    # "{r1 shortened}" for it without its last character.
    (
        "f = 1\n",
        "f = 1\ncolour = 'blue'\n",
        "cluster.toml: unknown key colour "
        "(valid keys: cluster_id, f, protocol, storage, replica, client)",
    ),
    ("f = 1\n", "", "cluster.toml: missing key f"),
    ("f = 1\n", "f = true\n", "cluster.toml: f must be an integer, got the boolean true"),
    ("f = 1\n", "f = 1.0\n", "cluster.toml: f must be an integer, got the float 1.0"),
    ("f = 1\n", "f = -1\n", "cluster.toml: f must be at least 0, got -1"),
    (
        "f = 1\n",
        "f = 2\n",
        "cluster.toml: n = 4 replicas cannot tolerate f = 2: PBFT needs n >= 3f+1 = 7",
    ),
    (
        'cluster_id = "',
        'cluster_id = "a|',
        "cluster.toml: cluster_id must be a non-empty string without '|'",
    ),
    (
        "cluster_id = ",
        "cluster_id = 5 #",
        "cluster.toml: cluster_id must be a string, got the integer 5",
    ),
    (
        "port = 7001\n",
        "port = 7001\nhots = 'x'\n",
        "cluster.toml: replica 1: unknown key hots (valid keys: id, host, port, public_key)",
    ),
    (
        "port = 7001\n",
        'port = 7001\n"bad\\nkey" = 1\n',
        'cluster.toml: replica 1: unknown key "bad\\nkey" (valid keys: id, host, port, public_key)',
    ),
    ("port = 7002\n", "", "cluster.toml: replica 2: missing key port"),
    (
        "port = 7002\n",
        'port = "7002"\n',
        'cluster.toml: replica 2: port must be an integer, got the string "7002"',
    ),
    (
        "id = 2\n",
        "id = 2.0\n",
        "cluster.toml: [[replica]] number 3: id must be an integer, got the float 2.0",
    ),
    (
        "id = 2\n",
        "id = 1\n",
        "cluster.toml: replica ids must be exactly 0..3 with one [[replica]] each: "
        "1 appears 2 times, 2 is missing",
    ),
    (
        "id = 3\n",
        "id = 7\n",
        "cluster.toml: replica ids must be exactly 0..3 with one [[replica]] each: "
        "3 is missing, 7 is out of range",
    ),
    (
        "id = 2\n",
        "id = true\n",
        "cluster.toml: [[replica]] number 3: id must be an integer, got the boolean true",
    ),
    (
        "port = 7002\n",
        "port = 7001\n",
        "cluster.toml: replica 2: port 7001 is also used by replica 1",
    ),
    (
        "port = 7002\n",
        "port = 65536\n",
        "cluster.toml: replica 2: port 65536 is not in 1..65535",
    ),
    (
        "{r1}",
        "{r1 shortened}",
        "cluster.toml: replica 1: public_key must be 64 hex characters (32 bytes), "
        "got 63 characters",
    ),
    (
        "{r1}",
        "{r1 not hex}",
        "cluster.toml: replica 1: public_key must be 64 hex characters (32 bytes), "
        "got non-hex characters",
    ),
    (
        "{r1}",
        SMALL_ORDER_KEY,
        "cluster.toml: replica 1: public_key: the Ed25519 public key has small order "
        "(such a key verifies forged signatures)",
    ),
    (
        "{r1}",
        "{r0}",
        "cluster.toml: replica 1 has the same public key as replica 0",
    ),
    (
        "[[client]]\nid = 1\n",
        "[[client]]\nid = 2\n",
        "cluster.toml: client ids must be exactly 0..1 with one [[client]] each: "
        "1 is missing, 2 is out of range",
    ),
    (
        "f = 1\n",
        "f = 1\nprotocol = 3\n",
        "cluster.toml: protocol must be a [protocol] table, got the integer 3",
    ),
    (
        "f = 1\n",
        "f = 1\n[protocol]\ncheckpoint_interval = 0\n",
        "cluster.toml: [protocol]: checkpoint_interval must be at least 1",
    ),
    (
        "f = 1\n",
        "f = 1\n[protocol]\nbatch = 1\n",
        "cluster.toml: [protocol]: unknown key batch (valid keys: "
        + ", ".join(PROTOCOL_FIELDS)
        + ")",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), LOAD_REFUSALS)
def test_load_refuses(cluster: ClusterFiles, old: str, new: str, expected: str) -> None:
    keys = {
        "{r0}": replica_key(cluster, 0),
        "{r1}": replica_key(cluster, 1),
        "{r1 shortened}": replica_key(cluster, 1)[:-1],
        "{r1 not hex}": "zz" + replica_key(cluster, 1)[2:],
    }
    for placeholder, key in keys.items():
        old, new = old.replace(placeholder, key), new.replace(placeholder, key)
    edit(cluster, old, new)
    assert refused(lambda: load_cluster(cluster.directory)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'cluster_id = "x"\nf = 0\n',
            "cluster.toml: no [[replica]] tables (each replica needs one)",
        ),
        (
            'cluster_id = "x"\nf = 0\nreplica = 5\n',
            "cluster.toml: replica must be [[replica]] tables, got the integer 5",
        ),
        (
            'cluster_id = "x"\nf = 0\nreplica = []\nclient = []\n',
            "cluster.toml: no [[client]] tables (a cluster needs at least one client)",
        ),
        (
            'cluster_id = "x"\nf = 0\nreplica = []\n'
            f'[[client]]\nid = 0\npublic_key = "{VALID_KEY}"\n',
            "cluster.toml: n = 0 replicas cannot tolerate f = 0: PBFT needs n >= 3f+1 = 1",
        ),
        (
            'f = 0\ncluster_id = "x"\n[[replica]]\nid = 0\nhost = "h"\nport = 1\n'
            f'public_key = "{VALID_KEY}"\n',
            "cluster.toml: no [[client]] tables (a cluster needs at least one client)",
        ),
    ],
)
def test_load_refuses_incomplete_files(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "cluster.toml").write_text(text)
    assert refused(lambda: load_cluster(tmp_path)) == expected


def test_a_private_key_pasted_as_a_public_key_is_not_quoted(cluster: ClusterFiles) -> None:
    seed = cluster.load_signer("replica", 1).private_bytes().hex()
    edit(cluster, replica_key(cluster, 1), seed + "0")
    assert seed not in refused(lambda: load_cluster(cluster.directory))


# ----------------------------------------------------------------- key refusals


def test_a_missing_key_file_is_named(cluster: ClusterFiles) -> None:
    cluster.key_path("replica", 3).unlink()
    assert refused(lambda: cluster.load_signer("replica", 3)) == (
        "keys/replica-3.key: missing (every replica needs its private key to run)"
    )
    cluster.key_path("client", 1).unlink()
    assert refused(lambda: cluster.load_signer("client", 1)) == (
        "keys/client-1.key: missing (every client needs its private key to run)"
    )


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_a_key_others_may_read_is_refused(cluster: ClusterFiles, mode: int) -> None:
    os.chmod(cluster.key_path("replica", 0), mode)
    assert refused(lambda: cluster.load_signer("replica", 0)) == (
        f"keys/replica-0.key: permissions {mode:04o} are too open; run chmod 600 on it"
    )


@posix_only
def test_a_read_only_key_is_accepted(cluster: ClusterFiles) -> None:
    os.chmod(cluster.key_path("replica", 0), 0o400)
    assert cluster.load_signer("replica", 0).public_key == cluster.config.replica_keys[0]


@pytest.mark.parametrize(
    "content",
    [b"", b"zz" * 32 + b"\n", b"ab" * 31 + b"\n", b"ab" * 33 + b"\n", b"\xff" * 64, b"ab" * 10_000],
)
def test_a_key_file_that_is_not_a_key_is_refused(cluster: ClusterFiles, content: bytes) -> None:
    path = cluster.key_path("client", 0)
    path.write_bytes(content)
    message = refused(lambda: cluster.load_signer("client", 0))
    assert message == (
        "keys/client-0.key: not an Ed25519 private key (expected 64 hex characters and a newline)"
    )


def test_a_key_file_without_its_newline_is_accepted(cluster: ClusterFiles) -> None:
    path = cluster.key_path("replica", 2)
    path.write_text(path.read_text().strip())
    assert cluster.load_signer("replica", 2).public_key == cluster.config.replica_keys[2]


def test_a_key_that_does_not_match_cluster_toml_is_refused(cluster: ClusterFiles) -> None:
    cluster.key_path("replica", 0).write_bytes(cluster.key_path("replica", 1).read_bytes())
    assert refused(lambda: cluster.load_signer("replica", 0)) == (
        "keys/replica-0.key: does not match the public key of replica 0 in cluster.toml"
    )


def test_a_folder_in_place_of_a_key_is_refused(cluster: ClusterFiles) -> None:
    path = cluster.key_path("replica", 1)
    path.unlink()
    path.mkdir()
    message = refused(lambda: cluster.load_signer("replica", 1))
    assert message.startswith("keys/replica-1.key: ")


def test_unknown_principals_are_refused(cluster: ClusterFiles) -> None:
    assert refused(lambda: cluster.load_signer("replica", 4)) == (
        "cluster.toml: no replica 4 (the replicas are 0..3)"
    )
    assert (
        refused(lambda: cluster.address(-1))
        == "cluster.toml: no replica -1 (the replicas are 0..3)"
    )
    assert refused(lambda: cluster.key_path("client", 2)) == (
        "cluster.toml: no client 2 (the clients are 0..1)"
    )
    with pytest.raises(ValueError, match="role must be 'replica' or 'client'"):
        cluster.load_signer("primary", 0)


# ---------------------------------------------------------------------- ports


def test_free_loopback_ports_are_distinct_and_bindable() -> None:
    ports = free_loopback_ports(8)
    assert len(ports) == len(set(ports)) == 8
    assert all(1 <= port <= 65535 for port in ports)
    listeners = []
    try:
        for port in ports:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.bind(("127.0.0.1", port))
            listener.listen()
    finally:
        for listener in listeners:
            listener.close()
    assert free_loopback_ports(0) == []


def test_free_loopback_ports_make_a_throw_away_cluster(tmp_path: Path) -> None:
    ports = free_loopback_ports(4)
    cluster = init_cluster(tmp_path, f=1, ports=ports)
    assert [cluster.address(i)[1] for i in range(4)] == ports


# ------------------------------------------------------------- storage and hosts


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_durability_is_written_and_read_back(tmp_path: Path, durability: str) -> None:
    made = init_cluster(tmp_path, f=1, durability=durability)
    assert made.durability == load_cluster(tmp_path).durability == durability
    assert f'[storage]\ndurability = "{durability}"\n' in config_text(made)


def test_a_cluster_toml_without_storage_means_normal(cluster: ClusterFiles) -> None:
    edit(cluster, '[storage]\ndurability = "normal"\n', "")
    assert load_cluster(cluster.directory).durability == "normal"


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (
            '[storage]\ndurability = "fast"\n',
            "cluster.toml: [storage]: durability must be one of 'normal', 'full', got 'fast'",
        ),
        (
            "[storage]\ndurability = 1\n",
            "cluster.toml: [storage]: durability must be one of 'normal', 'full', got int",
        ),
        (
            '[storage]\nsynchronous = "full"\n',
            "cluster.toml: [storage]: unknown key synchronous (valid keys: durability)",
        ),
    ],
)
def test_a_bad_storage_table_is_refused(cluster: ClusterFiles, new: str, expected: str) -> None:
    edit(cluster, '[storage]\ndurability = "normal"\n', new)
    assert refused(lambda: load_cluster(cluster.directory)) == expected


def test_init_puts_each_replica_on_its_own_host(tmp_path: Path) -> None:
    hosts = ["10.0.0.1", "10.0.0.2", "db-3.example", "fd00::4"]
    made = init_cluster(tmp_path, f=1, host=hosts, base_port=7000)
    assert [(r.host, r.port) for r in made.replicas] == [
        ("10.0.0.1", 7000), ("10.0.0.2", 7001), ("db-3.example", 7002), ("fd00::4", 7003),
    ]  # fmt: skip
    assert load_cluster(tmp_path).replicas == made.replicas


def test_init_refuses_a_host_count_that_is_not_1_or_n(tmp_path: Path) -> None:
    message = refused(lambda: init_cluster(tmp_path, f=1, host=["10.0.0.1", "10.0.0.2"]))
    assert message == "cluster.toml: 2 hosts given for n = 4 replicas (give 1 or 4)"
    assert not (tmp_path / "cluster.toml").exists()


@posix_only
@pytest.mark.parametrize("role", ["replica", "client"])
def test_every_command_that_loads_a_key_refuses_one_others_may_read(
    cluster: ClusterFiles, role: str
) -> None:
    """Both principals that load a private key (pbft replica: ReplicaNode; pbft client,
    pbft bench, scenario clients: RemoteClient) go through ClusterFiles.load_signer, and
    the real commands refuse with its one line, before touching the network."""
    import subprocess
    import sys

    os.chmod(cluster.key_path(role, 1), 0o640)
    command = {
        "replica": ["replica", str(cluster.directory), "--id", "1"],
        "client": ["client", str(cluster.directory), "--client", "1", "get", "k"],
    }[role]
    result = subprocess.run(
        [sys.executable, "-m", "pbft", *command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"pbft {role}: error: keys/{role}-1.key: permissions 0640 are too open; "
        "run chmod 600 on it\n"
    )
