"""A replica restarted after the others changed view rejoins their view at once.

Found by scripts/crash_restart.py: a replica that came back from its journal in a view
the others had left (they changed view while it was down) stayed in its old view, in the
normal state, for as long as no client retransmitted to it. It never hears a VIEW-CHANGE
for the current view (they were all sent while it was down), the current view's
PREPAREs and COMMITs are "future" to it and only buffered, and clients send to the
current primary alone. It kept up its state through checkpoints and state transfer but
ordered nothing: the cluster ran with one replica fewer than it thought, and the next
crash stalled it (about 2,500 ticks, 2.5 view-change timeouts, below) until client
retransmissions woke the stale replica's timer. Now f+1 replicas' messages of view v+1
make it ask for v+1's NEW-VIEW (``GateMixin._follow_next_view``).
"""

from __future__ import annotations

from pbft.config import ProtocolParams
from pbft.messages import PrePrepare
from pbft.simnet import SimCluster, make_cluster
from tests.conftest import assert_agreement, completed_all, submit_puts
from tests.protocol.test_recovery import journaled


def restarted_behind_a_view_change() -> SimCluster:
    """Replica 3 is down while 0, 1, 2 change to view 1; then it restarts from its journal."""
    params = ProtocolParams(batch_size=2, checkpoint_interval=4, log_window=8)
    cluster = make_cluster(f=1, clients=3, seed=82, params=params)
    journals = journaled(cluster)
    submit_puts(cluster, per_client=5, prefix="a")
    cluster.network.run(2000)
    cluster.network.crash(("replica", 3))
    # The primary's PRE-PREPAREs are lost for a while: the others change to view 1.
    cluster.network.intercept = lambda source, destination, message: (
        not (type(message.message) is PrePrepare and source == ("replica", 0))
    )
    submit_puts(cluster, per_client=3, prefix="b")
    cluster.network.run(20_000)
    cluster.network.intercept = None
    assert all(cluster.replicas[r].view == 1 for r in (0, 1, 2))
    submit_puts(cluster, per_client=10, prefix="c")
    assert cluster.network.run_until_idle(200_000)
    cluster.restart(3, journals[3])
    submit_puts(cluster, per_client=30, prefix="d")
    assert cluster.network.run_until_idle(400_000)
    return cluster


def test_a_replica_restarted_behind_a_view_change_rejoins_the_current_view() -> None:
    cluster = restarted_behind_a_view_change()
    assert cluster.replicas[3].view == cluster.replicas[0].view == 1
    assert cluster.replicas[3].view_active
    assert cluster.replicas[3].last_executed == cluster.replicas[0].last_executed


def test_the_next_crash_then_costs_no_stall_and_no_view_change() -> None:
    cluster = restarted_behind_a_view_change()
    cluster.network.crash(("replica", 2))  # progress now needs replica 3
    submit_puts(cluster, per_client=5, prefix="e")
    assert cluster.network.run_until_idle(400_000)
    assert completed_all(cluster)
    latencies = [op.return_tick - op.invoke_tick for op in cluster.network.operations[-15:]]
    assert max(latencies) < cluster.params.view_change_timeout_ticks, latencies
    assert cluster.replicas[3].view == cluster.replicas[0].view == 1
    assert_agreement(cluster, [0, 1, 3])
