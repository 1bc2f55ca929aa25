"""Every failing seed found so far, pinned. Each was a real bug; each test names it.

The first ones came from the lossy-network sweep used while building the core
(n = 4 or 7, 20% loss, 10% duplication, up to 50 ticks of delay until 3,000 ticks,
then a healthy network; odd seeds crash the primary, every third seed isolates
the last replica for the lossy period).
"""

from __future__ import annotations

import pytest

from pbft.config import ProtocolParams
from pbft.simnet import LinkFaults, make_cluster
from tests.conftest import assert_agreement, completed_all, submit_puts


def lossy_sweep(f: int, seed: int) -> None:
    params = ProtocolParams(
        batch_size=2, checkpoint_interval=4, log_window=8, view_change_timeout_ticks=300
    )
    faults = LinkFaults(drop=0.2, duplicate=0.1, max_delay_ticks=50)
    cluster = make_cluster(f=f, clients=3, seed=seed, params=params, faults=faults,
                           scheme="keyed-hash")  # fmt: skip
    submit_puts(cluster, 8)
    crashed = []
    if seed % 2:
        cluster.network.run(seed % 300)
        cluster.network.crash(("replica", 0))
        crashed = [0]
    if seed % 3 == 0:
        cluster.network.isolate(cluster.config.n - 1)
    cluster.network.run(3000)
    cluster.network.heal(cluster.config.n - 1)
    cluster.network.faults = LinkFaults(max_delay_ticks=5)
    assert cluster.network.run_until_idle(60_000), "not live after the network healed"
    assert completed_all(cluster)
    assert_agreement(cluster, [r for r in cluster.replicas if r not in crashed])


@pytest.mark.parametrize(
    ("f", "seed", "bug"),
    [
        (1, 5, "the timer of a replica waiting for NEW-VIEW only started on 2f+1 VIEW-CHANGEs"),
        (1, 37, "a NEW-VIEW lost to one replica was never sent again"),
        (1, 116, "a fetch that could not succeed blocked execution for good"),
        (1, 128, "a fetch that could not succeed blocked execution for good"),
        (1, 153, "views raced apart once the timeout doubling was capped"),
        (1, 293, "views raced apart once the timeout doubling was capped"),
    ],
)
def test_pinned_lossy_sweep_seed(f: int, seed: int, bug: str) -> None:
    lossy_sweep(f, seed)


def test_a_message_to_a_replica_that_does_not_exist_is_dropped_even_by_a_twin() -> None:
    """A traitor may address any replica id; with a twin in the run, the simulator's
    routing of a message to an id outside the cluster raised IndexError (found by
    scripts/coverage_core.py over the 2,000 CI seeds)."""
    from faults.verification.sim import TwinPlan
    from pbft.events import SendToReplicas
    from pbft.messages import Prepare
    from pbft.simnet import make_cluster

    cluster = make_cluster(f=1, clients=1, seed=7)
    network = cluster.network
    twin = TwinPlan(1, (("both",) * 4,), 1000)
    network.twin_route = lambda now, peer, replica: twin.routes[0][peer[1]]
    network.nodes[("twin", 1)] = cluster.fresh_replica(1)
    prepare = cluster.replicas[1].auth.sign(Prepare(0, 1, b"\\0" * 32, 1))
    before = network.messages_sent
    network._apply(("replica", 1), SendToReplicas((2, 7), prepare))
    assert network.messages_sent == before + 1  # replica 2 only


def test_explorer_seed_198_a_replica_alone_in_a_view_change_catches_up() -> None:
    """Fast reads, a mute primary and 10% loss: replica 2 lost the COMMITs of seq 1 and
    its view-change timer fired alone; it cleared its log, dropped every message of the
    view the others stayed in, and a write that needed its reply (2f+1 with fast reads)
    never completed. A replica in a view change now keeps fetching commit certificates."""
    from faults.verification.draw import draw_params
    from faults.verification.explore import run_seed

    assert draw_params(198).fast_reads  # the seed still draws what found the bug
    result = run_seed(198)
    assert not result.violations, [violation.as_dict() for violation in result.violations]


def test_explorer_seed_907_a_replica_behind_every_stable_checkpoint_fetches_the_state() -> None:
    """Fast reads, n = 7, two stalling traitors, replica 4 crashed and restarted: it came
    back at seq 7 while the others had executed 11 and made checkpoint 8 stable, so
    nobody held seq 8's commit certificate any more, and it had missed their CHECKPOINTs.
    With every write needing its reply (2f+1 = 5 of 5 honest), nothing moved, so no new
    checkpoint could tell it where the others were. After two catch-up periods without
    progress, a replica now also asks for the state at last_executed + 1."""
    from faults.verification.draw import draw_params
    from faults.verification.explore import run_seed

    assert draw_params(907).fast_reads
    result = run_seed(907)
    assert not result.violations, [violation.as_dict() for violation in result.violations]
