"""Guards the explorer cannot see, checked one by one.

Each test here pins a comparison of the core that a mutation tool changed without any
explorer seed noticing (scripts/mutation_score.py, docs/verification.md, "Mutation
score"): the replicas stayed safe and live, but did something a PBFT replica must not
(believe it is the primary, drop a later checkpoint's votes, accuse nobody, serve no
state), or only worked because of a coincidence (timer names compared by identity).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pbft import service as kv
from pbft.certificates import checkpoint_proof_digest
from pbft.client import RETRANSMIT_TIMER
from pbft.config import ProtocolParams
from pbft.encoding import encode_signed
from pbft.events import (
    EquivocationDetected,
    Invoke,
    NewViewEntered,
    Receive,
    SendToClient,
    SendToReplicas,
    SetTimer,
    TimerFired,
)
from pbft.messages import (
    NULL_DIGEST,
    Checkpoint,
    Commit,
    CommitCertificate,
    FetchCommitted,
    FetchState,
    NewView,
    Prepare,
    PrePrepare,
    Request,
    Signed,
    StateSnapshot,
    ViewChange,
    batch_digest,
)
from pbft.replica import (
    CATCH_UP_TIMER,
    NEW_VIEW_RELAY_TIMER,
    STATE_TRANSFER_TIMER,
    VIEW_CHANGE_RESEND_TIMER,
    VIEW_CHANGE_TIMER,
    Replica,
)
from pbft.simnet import SimCluster, make_cluster


def deliver(replica: Replica, signed: Signed[Any]) -> list[Any]:
    return replica.step(Receive(encode_signed(signed)))


def sent(effects: list[Any], kind: type) -> list[Any]:
    return [
        effect.message.message
        for effect in effects
        if type(effect) in (SendToReplicas, SendToClient) and type(effect.message.message) is kind
    ]


def equal_not_identical(name: str) -> str:
    copy = "".join(list(name))
    assert copy == name and copy is not name
    return copy


def request(cluster: SimCluster, client: int, timestamp: int, key: str = "k") -> Signed[Request]:
    return cluster.clients[client].auth.sign(Request(client, timestamp, kv.put(key, "v")))


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


# ------------------------------------------------------------------------ timers


def test_timer_names_are_compared_by_value() -> None:
    """A driver that rebuilds timer names (from a journal, a trace, a socket) gets the
    same behaviour as one that hands back the core's own string objects."""
    cluster = make_cluster(f=1, clients=1, seed=301)
    backup = cluster.replicas[1]
    deliver(backup, request(cluster, 0, 1))
    backup.step(TimerFired(equal_not_identical(VIEW_CHANGE_TIMER)))
    assert backup.view == 1 and not backup.view_active
    effects = backup.step(TimerFired(equal_not_identical(VIEW_CHANGE_RESEND_TIMER)))
    assert [m.new_view for m in sent(effects, ViewChange)] == [1]

    other = cluster.replicas[2]
    other._start_state_transfer(4)  # as after f+1 peers were seen ahead of its window
    effects = other.step(TimerFired(equal_not_identical(STATE_TRANSFER_TIMER)))
    assert [m.seq for m in sent(effects, FetchState)] == [4]

    # Seq 2 known but seq 1 missing, and no progress for a period: ask for proof.
    third = cluster.replicas[3]
    batch = (request(cluster, 0, 2),)
    pre_prepare = cluster.replicas[0].auth.sign(PrePrepare(0, 2, batch_digest(batch), batch, 0))
    deliver(third, pre_prepare)
    effects = third.step(TimerFired(equal_not_identical(CATCH_UP_TIMER)))
    assert [(m.first_seq, m.last_seq) for m in sent(effects, FetchCommitted)] == [(1, 2)]

    third._new_view_relayed.add(0)
    third.step(TimerFired(equal_not_identical(NEW_VIEW_RELAY_TIMER)))
    assert third._new_view_relayed == set()

    client = cluster.clients[0]
    client.step(Invoke(kv.get("k")))
    effects = client.step(TimerFired(equal_not_identical(RETRANSMIT_TIMER)))
    assert [e.replicas for e in effects if type(e) is SendToReplicas] == [(0, 1, 2, 3)]


# ---------------------------------------------------------------- roles and votes


def test_a_backup_never_assigns_sequence_numbers() -> None:
    """A request sent to a backup directly is not proposed by it, in any view where it is
    not the primary: only the primary of the view may send PRE-PREPAREs."""
    cluster = make_cluster(f=1, clients=2, seed=302)
    for backup in (1, 2, 3):
        effects = deliver(cluster.replicas[backup], request(cluster, 0, 1))
        assert sent(effects, PrePrepare) == [], backup
    primary_effects = deliver(cluster.replicas[0], request(cluster, 1, 1))
    assert [m.seq for m in sent(primary_effects, PrePrepare)] == [1]


def test_commits_for_another_digest_are_not_counted() -> None:
    """Two matching COMMITs and one for another digest (smaller or larger) are not the
    2f+1 matching COMMITs committed-local needs."""
    for other in (b"\0" * 32, b"\xff" * 32):
        cluster = make_cluster(f=1, clients=1, seed=303)
        primary, replica = cluster.replicas[0], cluster.replicas[3]
        batch = (request(cluster, 0, 1),)
        d = batch_digest(batch)
        deliver(replica, primary.auth.sign(PrePrepare(0, 1, d, batch, 0)))
        for sender in (1, 2):
            deliver(replica, cluster.replicas[sender].auth.sign(Prepare(0, 1, d, sender)))
        assert replica.slots[1].prepared
        deliver(replica, cluster.replicas[1].auth.sign(Commit(0, 1, d, 1)))
        deliver(replica, cluster.replicas[2].auth.sign(Commit(0, 1, other, 2)))
        assert not replica.slots[1].committed and replica.last_executed == 0
        deliver(replica, primary.auth.sign(Commit(0, 1, d, 0)))
        assert replica.slots[1].committed and replica.last_executed == 1


def test_evidence_against_a_higher_numbered_sender_is_kept() -> None:
    """Replica 0 catches replica 2 voting two ways: whose id is larger does not matter."""
    cluster = make_cluster(f=1, clients=1, seed=304)
    observer, liar = cluster.replicas[0], cluster.replicas[2].auth
    deliver(observer, liar.sign(Prepare(0, 1, digest("a"), 2)))
    effects = deliver(observer, liar.sign(Prepare(0, 1, digest("b"), 2)))
    assert [type(e) for e in effects if type(e) is EquivocationDetected] == [EquivocationDetected]
    assert len(observer.evidence) == 1


def test_a_pending_request_is_replaced_only_by_a_newer_one() -> None:
    """§4.1: a client has one request outstanding; an older timestamp than the pending
    one is stale, a newer one replaces it."""
    cluster = make_cluster(f=1, clients=1, seed=305)
    backup = cluster.replicas[2]
    deliver(backup, request(cluster, 0, 5))
    deliver(backup, request(cluster, 0, 3))
    assert backup.counters.dropped[("REQUEST", "stale-timestamp")] == 1
    assert backup.pending[0].message.timestamp == 5
    deliver(backup, request(cluster, 0, 7))
    assert backup.pending[0].message.timestamp == 7
    assert backup.counters.dropped[("REQUEST", "stale-timestamp")] == 1


# ----------------------------------------------------------------- checkpoints


def checkpoints(cluster: SimCluster, seq: int, state: bytes, senders: range) -> list[Any]:
    return [
        cluster.replicas[s].auth.sign(Checkpoint(seq, state, s)) for s in senders
    ]  # fmt: skip


def test_a_checkpoint_proof_with_two_digests_proves_nothing() -> None:
    cluster = make_cluster(f=1, clients=1, seed=306)
    auth, config = cluster.replicas[0].auth, cluster.config
    middle = b"\x80" * 32
    good = checkpoints(cluster, 4, middle, range(3))
    assert checkpoint_proof_digest(auth, config, 4, good) == middle
    for odd in (b"\0" * 32, b"\xff" * 32):
        mixed = [*good[:2], cluster.replicas[3].auth.sign(Checkpoint(4, odd, 3))]
        assert checkpoint_proof_digest(auth, config, 4, mixed) is None
        assert checkpoint_proof_digest(auth, config, 4, mixed[::-1]) is None


def run_to(cluster: SimCluster, requests: int) -> None:
    """Execute ``requests`` requests, and a few more, so the last checkpoint's votes land."""
    cluster.network.submit(0, [kv.put(f"k{i}", "v") for i in range(requests + 2)])
    assert cluster.network.run_until_idle(100_000)


def test_votes_for_a_later_checkpoint_outlive_an_earlier_one_becoming_stable() -> None:
    """Garbage collection at checkpoint n discards what is at or below n only: votes
    already received for a later checkpoint still count towards it."""
    cluster = make_cluster(f=1, clients=1, seed=307)
    replica = cluster.replicas[3]
    interval = cluster.params.checkpoint_interval
    early = checkpoints(cluster, 2 * interval, digest("later"), range(2))
    for vote in early:
        deliver(replica, vote)
    run_to(cluster, interval)  # checkpoint `interval` becomes stable everywhere
    assert replica.low_watermark == interval
    assert sorted(replica.checkpoint_votes[2 * interval]) == [0, 1]


def test_state_is_served_from_a_checkpoint_above_the_one_asked_for() -> None:
    """FETCH-STATE(n) asks for a stable checkpoint of at least n: a replica whose stable
    checkpoint is beyond n serves it."""
    cluster = make_cluster(f=1, clients=1, seed=308)
    interval = cluster.params.checkpoint_interval
    run_to(cluster, 2 * interval)
    server = cluster.replicas[0]
    assert server.low_watermark == 2 * interval
    fetch = cluster.replicas[3].auth.sign(FetchState(interval, 3))
    states = sent(deliver(server, fetch), StateSnapshot)
    assert [state.seq for state in states] == [2 * interval]


# ------------------------------------------------------------ view change, catch-up


def test_new_view_entered_counts_reissued_and_null_requests() -> None:
    """The NewViewEntered notice (the explorer's coverage gates read it) counts the
    PRE-PREPAREs of O that carry a prepared batch apart from the null requests, whatever
    the batch's digest (above or below the null request's)."""
    digests = []
    # "v111" happens to make a batch whose digest sorts above the null request's.
    for value in ("A", "B", "v111"):
        cluster = make_cluster(f=1, clients=1, seed=309)
        notices: list[NewViewEntered] = []

        def record(address, effects, notices=notices):  # type: ignore[no-untyped-def]
            notices.extend(e for e in effects if type(e) is NewViewEntered and address[1] == 1)

        def no_commits(source, destination, message):  # type: ignore[no-untyped-def]
            return type(message.message) is not Commit

        cluster.network.on_step = record
        cluster.network.intercept = no_commits
        cluster.network.invoke(0, kv.put("k", value))
        cluster.network.run(20)  # seq 1 prepared everywhere, committed nowhere
        digests.append(cluster.replicas[1].slots[1].pre_prepare.message.digest)
        cluster.network.intercept = None
        cluster.network.crash(("replica", 0))
        assert cluster.network.run_until(lambda notices=notices: bool(notices), 50_000)
        assert notices[0] == NewViewEntered(1, 1, 0), value
    assert any(d < NULL_DIGEST for d in digests) and any(d > NULL_DIGEST for d in digests)


def test_the_primary_resends_the_pre_prepare_of_a_retransmitted_request() -> None:
    """A request retransmitted to the primary after it assigned a sequence number, but
    before that executed, brings the same PRE-PREPARE again (not a new proposal)."""
    cluster = make_cluster(f=1, clients=1, seed=310)
    primary = cluster.replicas[0]
    signed = request(cluster, 0, 1)
    first = sent(deliver(primary, signed), PrePrepare)
    assert [m.seq for m in first] == [1]
    again = sent(deliver(primary, signed), PrePrepare)
    assert again == first


def test_a_replica_that_knows_of_nothing_asks_for_nothing() -> None:
    """Catching up asks for proof of what is known to exist above last_executed; a
    replica that has seen no sequence number at all has no gap to fill."""
    cluster = make_cluster(f=1, clients=1, seed=311)
    effects = cluster.replicas[2].step(TimerFired(CATCH_UP_TIMER))
    assert sent(effects, FetchCommitted) == []


def test_checkpoints_are_taken_on_every_multiple_of_the_interval() -> None:
    """CHECKPOINTs at K, 2K, 3K, ... are votes; anything off that grid is refused."""
    params = ProtocolParams(checkpoint_interval=4, log_window=16)
    cluster = make_cluster(f=1, clients=1, seed=312, params=params)
    replica = cluster.replicas[3]
    for seq in (4, 8, 12, 16):
        deliver(replica, cluster.replicas[1].auth.sign(Checkpoint(seq, digest("s"), 1)))
        assert 1 in replica.checkpoint_votes[seq], seq
    for seq in (2, 5, 6, 10):
        deliver(replica, cluster.replicas[1].auth.sign(Checkpoint(seq, digest("s"), 1)))
    assert replica.counters.dropped[("CHECKPOINT", "not-a-checkpoint-seq")] == 4


def test_distinct_next_view_messages_from_one_sender_are_all_kept() -> None:
    """The next view's messages wait in the future buffer; two different ones from one
    sender are both kept (whichever sorts first), and only an identical copy is a
    duplicate."""
    cluster = make_cluster(f=1, clients=1, seed=313)
    replica = cluster.replicas[3]
    auth = cluster.replicas[2].auth
    low, high = (auth.sign(Prepare(1, 1, bytes([b]) * 32, 2)) for b in (0x00, 0xFF))
    for first, second in ((low, high), (high, low)):
        replica.future.clear()
        deliver(replica, first)
        deliver(replica, second)
        assert [m.payload for m in replica.future[2]] == [first.payload, second.payload]
        deliver(replica, second)
        assert len(replica.future[2]) == 2


def test_a_replica_shown_to_be_behind_fetches_the_state_above_its_own() -> None:
    """CHECKPOINTs from f+1 peers for a seq beyond h + L prove one honest replica is
    ahead of the window: fetch a stable checkpoint above h."""
    cluster = make_cluster(f=1, clients=1, seed=314)
    replica = cluster.replicas[3]
    beyond = cluster.params.log_window + cluster.params.checkpoint_interval
    effects: list[Any] = []
    for sender in (0, 1):
        vote = cluster.replicas[sender].auth.sign(Checkpoint(beyond, digest("s"), sender))
        effects += deliver(replica, vote)
    assert [m.seq for m in sent(effects, FetchState)] == [replica.low_watermark + 1]
    assert replica.fetching == replica.low_watermark + 1


def test_new_view_entered_counts_null_requests_apart() -> None:
    """O with a gap: seq 1 prepared nowhere, seq 2 prepared everywhere. The new view
    re-issues seq 2 and fills seq 1 with a null request (seq 2 goes out while seq 1
    is in flight: batches are not held back for adaptive batching here)."""
    params = ProtocolParams(partial_batches_in_flight=4)
    cluster = make_cluster(f=1, clients=2, seed=315, params=params)
    notices: list[NewViewEntered] = []

    def record(address, effects):  # type: ignore[no-untyped-def]
        notices.extend(e for e in effects if type(e) is NewViewEntered and address[1] == 1)

    def no_seq_1_and_no_commits(source, destination, message):  # type: ignore[no-untyped-def]
        inner = message.message
        if type(inner) is Commit:
            return False
        return not (type(inner) in (PrePrepare, Prepare) and inner.seq == 1)

    cluster.network.on_step = record
    cluster.network.intercept = no_seq_1_and_no_commits
    cluster.network.invoke(0, kv.put("a", "1"))
    cluster.network.run(5)
    cluster.network.invoke(1, kv.put("b", "2"))
    cluster.network.run(20)
    assert cluster.replicas[1].slots[2].prepared and 1 not in cluster.replicas[1].slots
    cluster.network.intercept = None
    cluster.network.crash(("replica", 0))
    assert cluster.network.run_until(lambda: bool(notices), 50_000)
    assert notices[0] == NewViewEntered(1, 1, 1)


# ------------------------------------------------------------------ more edges


def test_a_client_is_busy_only_with_an_operation_outstanding() -> None:
    cluster = make_cluster(f=1, clients=1, seed=316)
    client = cluster.clients[0]
    assert client.busy is False
    client.step(Invoke(kv.get("k")))
    assert client.busy is True
    client.abandon()
    assert client.busy is False
    # A retransmission timer the driver could not cancel in time fires late: nothing.
    assert client.step(TimerFired(RETRANSMIT_TIMER)) == []


def test_the_view_change_timer_doubles_only_for_a_view_change_that_failed() -> None:
    """§4.4: the timer starts at T; when view v + 1 does not start in time, the change
    to v + 2 waits 2T."""
    cluster = make_cluster(f=1, clients=1, seed=317)
    backup = cluster.replicas[2]
    base = cluster.params.view_change_timeout_ticks

    def timers(effects: list[Any]) -> list[int]:
        return [e.ticks for e in effects if type(e) is SetTimer and e.name == VIEW_CHANGE_TIMER]

    assert timers(deliver(backup, request(cluster, 0, 1))) == [base]
    assert timers(backup.step(TimerFired(VIEW_CHANGE_TIMER))) == [base]
    assert backup.view == 1 and not backup.view_active
    for sender in (1, 3):  # a quorum changes to view 1, but its NEW-VIEW never comes
        deliver(backup, cluster.replicas[sender].auth.sign(ViewChange(1, 0, (), (), sender)))
    assert timers(backup.step(TimerFired(VIEW_CHANGE_TIMER))) == [2 * base]
    assert backup.view == 2


def test_a_second_pre_prepare_with_another_digest_is_a_conflict_either_way() -> None:
    """Whether the second digest sorts above or below the first, it conflicts."""
    cluster = make_cluster(f=1, clients=2, seed=318)
    batches = [(request(cluster, 0, 1),), (request(cluster, 1, 1),)]
    assert batch_digest(batches[0]) != batch_digest(batches[1])
    for order in (batches, batches[::-1]):
        cluster = make_cluster(f=1, clients=2, seed=318)
        replica, primary = cluster.replicas[3], cluster.replicas[0].auth
        for batch in order:
            deliver(replica, primary.sign(PrePrepare(0, 1, batch_digest(batch), batch, 0)))
        assert replica.counters.dropped[("PRE-PREPARE", "conflicting-pre-prepare")] == 1


def small_cluster(seed: int, **extra: Any) -> SimCluster:
    params = ProtocolParams(checkpoint_interval=4, log_window=8, **extra)
    return make_cluster(f=1, clients=1, seed=seed, params=params)


def test_commit_certificates_are_served_for_every_seq_asked_for_above_h() -> None:
    cluster = small_cluster(319)
    cluster.network.submit(0, [kv.put(f"k{i}", "v") for i in range(7)])
    assert cluster.network.run_until_idle(100_000)
    server = cluster.replicas[0]
    assert server.low_watermark == 4 and sorted(server.commit_certificates) == [5, 6, 7]
    fetch = cluster.replicas[3].auth.sign(FetchCommitted(5, 7, 3))
    served = [c.pre_prepare.message.seq for c in sent(deliver(server, fetch), CommitCertificate)]
    assert served == [5, 6, 7]


def test_a_sender_keeps_votes_for_a_window_of_checkpoints_only() -> None:
    """One sender's CHECKPOINTs for ever later seqs: L/K + 2 of them are kept, the newest."""
    cluster = small_cluster(320)
    replica = cluster.replicas[3]
    for seq in range(4, 4 * 12, 4):
        deliver(replica, cluster.replicas[1].auth.sign(Checkpoint(seq, digest("x"), 1)))
    kept = sorted(seq for seq, votes in replica.checkpoint_votes.items() if 1 in votes)
    assert kept == list(range(4 * 12 - 4 * 4, 4 * 12, 4))  # 8 // 4 + 2 = 4 checkpoints


def test_a_stable_checkpoint_discards_everything_at_or_below_it() -> None:
    """§4.3: at a stable checkpoint n, messages, certificates, and the replica's own
    checkpoint states at or below n are discarded; those above stay."""
    cluster = small_cluster(321)
    cluster.network.submit(0, [kv.put(f"k{i}", "v") for i in range(10)])
    assert cluster.network.run_until_idle(100_000)
    for replica in cluster.replicas.values():
        low = replica.low_watermark
        assert low == 8
        for store in (replica.slots, replica.prepared_certificates, replica.commit_certificates,
                      replica.own_checkpoints, replica.checkpoint_votes,
                      replica.committed):  # fmt: skip
            assert all(seq > low for seq in store), (replica.id, sorted(store))
        assert sorted(replica.commit_certificates) == [9, 10]


def test_a_state_transfer_drops_pending_requests_it_executed_and_keeps_newer_ones() -> None:
    """The fetched state's client table says what executed: pending requests at or below
    it are done, newer ones still wait; then the commits above the state are fetched."""
    params = ProtocolParams(checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=2, seed=322, params=params)
    laggard = cluster.replicas[3]
    cluster.network.isolate(3)
    cluster.network.submit(1, [kv.put("one", "v")])
    assert cluster.network.run_until_idle(100_000)
    cluster.network.submit(0, [kv.put(f"k{i}", "v") for i in range(8)])
    assert cluster.network.run_until_idle(100_000)
    server = cluster.replicas[0]
    assert server.low_watermark == 8 and server.client_table[1][0] == 1
    deliver(laggard, request(cluster, 1, 1))  # executed at or below seq 8
    deliver(laggard, request(cluster, 0, 10))  # not executed anywhere yet
    assert sorted(laggard.pending) == [0, 1]
    laggard._start_state_transfer(8)  # as after f+1 peers were seen ahead
    fetch = cluster.replicas[3].auth.sign(FetchState(8, 3))
    state = next(
        e.message for e in deliver(server, fetch) if type(e.message.message) is StateSnapshot
    )
    effects = deliver(laggard, state)
    assert laggard.last_executed == 8 and laggard.low_watermark == 8
    assert sorted(laggard.pending) == [0]
    assert [(m.first_seq, m.last_seq) for m in sent(effects, FetchCommitted)] == [(9, 16)]


def test_the_verified_cache_limit_is_its_worst_case() -> None:
    """With every entry of the signature cache used (it starts afresh when full), it
    holds exactly its limit."""
    cluster = small_cluster(323, verified_cache_entries=16)
    replica = cluster.replicas[0]
    for sender in (1, 2):
        for seq in range(1, 9):
            vote = Prepare(0, seq, digest(str(seq)), sender)
            deliver(replica, cluster.replicas[sender].auth.sign(vote))
    assert replica.store_bytes()["verified_cache"] == replica.store_limits()["verified_cache"]


def test_certificates_need_the_pre_prepare_of_the_views_primary() -> None:
    """A prepared or commit certificate whose PRE-PREPARE another replica signed (one
    numbered below or above the view's primary) proves nothing."""
    from pbft.certificates import certificate_is_valid, commit_certificate_is_valid
    from pbft.messages import PreparedCertificate

    cluster = make_cluster(f=1, clients=1, seed=324)
    auth, config, params = cluster.replicas[3].auth, cluster.config, cluster.params
    batch = (request(cluster, 0, 1),)
    d = batch_digest(batch)
    view = 1  # primary 1: replica 0 is below it, replica 2 above
    for signer, valid in ((1, True), (0, False), (2, False)):
        pre_prepare = cluster.replicas[signer].auth.sign(PrePrepare(view, 1, d, batch, signer))
        prepares = tuple(cluster.replicas[s].auth.sign(Prepare(view, 1, d, s)) for s in (2, 3))
        commits = tuple(cluster.replicas[s].auth.sign(Commit(view, 1, d, s)) for s in (1, 2, 3))
        certificate = PreparedCertificate(pre_prepare, prepares)
        assert certificate_is_valid(auth, config, params, certificate) is valid, signer
        proof = CommitCertificate(pre_prepare, commits, 3)
        assert commit_certificate_is_valid(auth, config, params, proof) is valid, signer


def test_commits_arriving_after_execution_commit_nothing_again() -> None:
    """A replica that executed seq 1 through a commit certificate, and then receives the
    COMMITs of seq 1, neither reports it committed again nor keeps it waiting."""
    cluster = make_cluster(f=1, clients=1, seed=325)
    primary, replica = cluster.replicas[0], cluster.replicas[3]
    batch = (request(cluster, 0, 1),)
    d = batch_digest(batch)
    pre_prepare = primary.auth.sign(PrePrepare(0, 1, d, batch, 0))
    commits = tuple(cluster.replicas[s].auth.sign(Commit(0, 1, d, s)) for s in (0, 1, 2))
    deliver(replica, pre_prepare)
    for sender in (1, 2):
        deliver(replica, cluster.replicas[sender].auth.sign(Prepare(0, 1, d, sender)))
    deliver(replica, cluster.replicas[0].auth.sign(CommitCertificate(pre_prepare, commits, 0)))
    assert replica.last_executed == 1
    effects: list[Any] = []
    for commit in commits:
        effects += deliver(replica, commit)
    assert [e for e in effects if type(e).__name__ == "Committed"] == []
    assert replica.committed == {}


def test_a_view_that_executes_resets_the_view_change_timeout() -> None:
    """§4.5.2: once a request executes in the current view, the next view change waits
    the base timeout T again, however many attempts the last one took."""
    cluster = make_cluster(f=1, clients=1, seed=326)
    replica = cluster.replicas[2]
    replica.view_change_attempts = 3  # as after two view changes that failed
    cluster.network.submit(0, [kv.put("k", "v")])
    assert cluster.network.run_until_idle(10_000)
    assert replica.view_change_attempts == 0
    deliver(replica, request(cluster, 0, 5))
    effects = replica.step(TimerFired(VIEW_CHANGE_TIMER))
    timers = [e.ticks for e in effects if type(e) is SetTimer and e.name == VIEW_CHANGE_TIMER]
    assert timers == [cluster.params.view_change_timeout_ticks]


def test_a_new_view_carries_exactly_a_quorum_of_view_changes() -> None:
    """§4.4: V holds 2f+1 VIEW-CHANGEs, the new primary's own among them, even when it
    holds more (its own came last): NEW-VIEW's size bound counts on it."""
    cluster = make_cluster(f=1, clients=1, seed=327)
    primary = cluster.replicas[1]  # of view 1
    for sender in (0, 2, 3):
        deliver(primary, cluster.replicas[sender].auth.sign(ViewChange(1, 0, (), (), sender)))
    assert primary.view == 1 and primary.view_active  # f+1 ahead: it joined, then led
    assert primary.last_new_view is not None
    assert len(primary.last_new_view.message.view_changes) == cluster.config.quorum
    assert 1 in {s.message.sender for s in primary.last_new_view.message.view_changes}


def test_executing_a_batch_of_an_older_view_keeps_the_timeout_doubled() -> None:
    """Only an execution in the current, active view proves the view works: a batch of
    an older view executed late (from a commit certificate) does not reset the count."""
    cluster = make_cluster(f=1, clients=1, seed=328)
    replica = cluster.replicas[3]
    batch = (request(cluster, 0, 1),)
    d = batch_digest(batch)
    pre_prepare = cluster.replicas[0].auth.sign(PrePrepare(0, 1, d, batch, 0))
    commits = tuple(cluster.replicas[s].auth.sign(Commit(0, 1, d, s)) for s in (0, 1, 2))
    replica.view, replica.view_change_attempts = 2, 2  # in view 2 after two attempts
    deliver(replica, cluster.replicas[0].auth.sign(CommitCertificate(pre_prepare, commits, 0)))
    assert replica.last_executed == 1
    assert replica.view_change_attempts == 2


# --------------------------------------------------------------- sample C's edges


def test_a_checkpoint_proof_with_a_vote_for_another_seq_proves_nothing() -> None:
    cluster = make_cluster(f=1, clients=1, seed=329)
    auth, config = cluster.replicas[0].auth, cluster.config
    good = checkpoints(cluster, 8, digest("s"), range(3))
    for other_seq in (4, 12):
        odd = cluster.replicas[2].auth.sign(Checkpoint(other_seq, digest("s"), 2))
        assert checkpoint_proof_digest(auth, config, 8, [*good[:2], odd]) is None
        assert checkpoint_proof_digest(auth, config, 8, [odd, *good[:2]]) is None


def test_a_primary_that_learns_of_a_later_checkpoint_proposes_above_it() -> None:
    """A primary shown a stable checkpoint beyond what it assigned (it was behind) must
    not propose at sequence numbers at or below it."""
    cluster = small_cluster(330)
    primary = cluster.replicas[0]
    for vote in checkpoints(cluster, 8, digest("s"), range(1, 4)):
        deliver(primary, vote)
    assert primary.low_watermark == 8 and primary.next_seq == 9


def test_one_peer_ahead_is_not_enough_to_fetch_state() -> None:
    """A single replica using seqs beyond the window may be a liar: f + 1 are needed."""
    cluster = make_cluster(f=1, clients=1, seed=331)
    replica = cluster.replicas[3]
    beyond = cluster.params.log_window + cluster.params.checkpoint_interval
    effects = deliver(replica, cluster.replicas[0].auth.sign(Checkpoint(beyond, digest("s"), 0)))
    assert sent(effects, FetchState) == [] and replica.fetching is None


def test_a_prepare_from_a_replica_below_the_primary_counts() -> None:
    """In view 1 (primary 1) replica 0 is a backup like any other."""
    cluster = make_cluster(f=1, clients=1, seed=332)
    replica = cluster.replicas[3]
    replica.view = 1  # as after a view change to view 1
    deliver(replica, cluster.replicas[0].auth.sign(Prepare(1, 1, digest("d"), 0)))
    deliver(replica, cluster.replicas[1].auth.sign(Prepare(1, 1, digest("d"), 1)))
    assert replica.counters.dropped[("PREPARE", "prepare-from-primary")] == 1
    assert sorted(replica.slots[1].prepares) == [0]


def test_checkpoints_at_or_below_the_stable_one_are_stale() -> None:
    cluster = small_cluster(333)
    cluster.network.submit(0, [kv.put(f"k{i}", "v") for i in range(10)])
    assert cluster.network.run_until_idle(100_000)
    replica = cluster.replicas[3]
    assert replica.low_watermark == 8
    before = replica.counters.dropped[("CHECKPOINT", "stale")]
    for seq in (4, 8):
        deliver(replica, cluster.replicas[1].auth.sign(Checkpoint(seq, digest("x"), 1)))
    assert replica.counters.dropped[("CHECKPOINT", "stale")] == before + 2


def test_an_active_replica_follows_a_valid_new_view() -> None:
    """A replica that did not take part in the view change (its timer had not expired)
    enters view 1 on the new primary's valid NEW-VIEW."""
    cluster = make_cluster(f=1, clients=1, seed=334)
    primary = cluster.replicas[1]
    for sender in (0, 2):
        deliver(primary, cluster.replicas[sender].auth.sign(ViewChange(1, 0, (), (), sender)))
    new_view = primary.last_new_view
    assert new_view is not None
    follower = cluster.replicas[3]
    assert follower.view == 0 and follower.view_active
    deliver(follower, new_view)
    assert follower.view == 1 and follower.view_active


def test_a_prepared_certificate_needs_2f_prepares() -> None:
    """certificate_is_valid on its own (the invariants and offline checks call it without
    the VIEW-CHANGE's shape check): fewer than 2f distinct PREPAREs prove nothing."""
    from pbft.certificates import certificate_is_valid
    from pbft.messages import PreparedCertificate

    cluster = make_cluster(f=1, clients=1, seed=335)
    auth, config, params = cluster.replicas[3].auth, cluster.config, cluster.params
    batch = (request(cluster, 0, 1),)
    d = batch_digest(batch)
    pre_prepare = cluster.replicas[0].auth.sign(PrePrepare(0, 1, d, batch, 0))
    prepares = tuple(cluster.replicas[s].auth.sign(Prepare(0, 1, d, s)) for s in (1, 2))
    assert certificate_is_valid(auth, config, params, PreparedCertificate(pre_prepare, prepares))
    for fewer in ((), prepares[:1]):
        certificate = PreparedCertificate(pre_prepare, fewer)
        assert not certificate_is_valid(auth, config, params, certificate)


def test_next_view_messages_received_early_count_once_the_view_starts() -> None:
    """A PREPARE of view 1 that arrives before view 1's NEW-VIEW waits in the future
    buffer and is counted when the replica enters view 1."""
    cluster = make_cluster(f=1, clients=1, seed=336)
    primary = cluster.replicas[1]
    for sender in (0, 2):
        deliver(primary, cluster.replicas[sender].auth.sign(ViewChange(1, 0, (), (), sender)))
    follower = cluster.replicas[3]
    early = cluster.replicas[2].auth.sign(Prepare(1, 1, digest("d"), 2))
    deliver(follower, early)
    assert [m.payload for m in follower.future[2]] == [early.payload]
    assert primary.last_new_view is not None
    deliver(follower, primary.last_new_view)
    assert follower.view == 1 and follower.view_active
    assert follower.slots[1].prepares[2].payload == early.payload


def test_a_new_view_from_a_replica_below_the_new_primary_is_refused() -> None:
    cluster = make_cluster(f=1, clients=1, seed=337)
    replica = cluster.replicas[3]
    forged = cluster.replicas[0].auth.sign(NewView(1, (), (), 0))  # view 1's primary is 1
    deliver(replica, forged)
    assert replica.counters.dropped[("NEW-VIEW", "not-primary")] == 1
