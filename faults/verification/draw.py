"""One seed, one fault schedule: how the explorer draws a :class:`SimPlan`.

Every choice comes from ``random.Random(seed)``, in a fixed order, so a seed
names its schedule for ever (until this module changes: pinned regressions
then keep their plans explicitly).

* Cluster: n = 4 for about 60% of seeds and n = 7 for the rest (unless ``f``
  is fixed), 2 to 4 clients, 20 to 36 operations.
* Time base: a stabilization time of 1.5 to 4 s, and a workload span of 50%
  to 90% of it over which the operations are released
  (:mod:`faults.verification.timeline`); network rules, crashes, restarts and
  timed triggers are drawn inside the span, so they meet traffic.
* Faulty replicas (up to f): the primary of view 0 in 75% of seeds, with a
  behaviour that stops the normal case so that most runs need a view change;
  Twins; a lying primary of view 1; backups with one or two behaviours of
  :mod:`faults.traitors.behaviours`. On top, the ``byzantine`` traitor
  (:mod:`faults.traitors.byzantine`) on each faulty replica with probability
  0.35 (on the primary, the next primary or a backup; with f = 2 the two
  traitors then collude, each holding both keys), alone or combined with the
  behaviour drawn for it.
* A faulty next primary: in 12% of seeds replica 1, the primary of view 1,
  is the one faulty replica, running the ``byzantine`` traitor, and the honest
  primary of view 0 crashes early (restarting later): the view change to
  view 1 then happens under a primary that may spoil its NEW-VIEW (issue 8,
  hole 1 was found this way).
* Byzantine clients: in a quarter of the seeds the last client is faulty,
  mostly in the ``byzantine`` mode that mixes all the others.
* The network: 0 to 3 rules (partitions, loss, duplication, delay,
  reordering), a lossy primary sometimes, an honest crash with restart.
* Quiet runs: 5% of seeds have no fault at all, and must then need no view
  change and no retransmission (:func:`faults.verification.checkers.check_quiet`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs

from faults.traitors.base import Trigger
from faults.traitors.behaviours import BEHAVIOURS
from faults.traitors.clients import MODES as CLIENT_MODES
from faults.verification.sim import (
    SIM_PARAMS,
    CrashPlan,
    SimPlan,
    TraitorPlan,
    TwinPlan,
    random_workload,
)
from pbft import service as kv
from pbft.config import ProtocolParams

LIES = ["all", "digest", "checkpoint", "result", "view-change", "invent", "new-view"]
#: Behaviour parameters that make each behaviour bite in a short run.
_PARAMS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "stall": lambda rng: {"ms": rng.choice([None, 200, 800])},
    "crash": lambda rng: {"restart_ms": rng.choice([None, 500, 1500])},
    "lie": lambda rng: {"what": rng.choice(LIES)},
    "replay": lambda rng: {"count": rng.randint(1, 4)},
    "forge": lambda rng: {"mode": rng.choice(["bad-signature", "impersonate"])},
    "flood": lambda rng: {"count": rng.randint(1, 5), "junk": rng.random() < 0.5},
    "mutate": lambda rng: {"rate": rng.choice([0.1, 0.3, 0.6])},
}  # fmt: skip
#: The behaviours drawn for a backup (the byzantine traitor is drawn apart).
_BACKUP_BEHAVIOURS = sorted(name for name in BEHAVIOURS if name != "byzantine")
#: Probability that a faulty replica also runs the byzantine traitor.
BYZANTINE_SHARE = 0.35
#: Probability of a faulty next primary with a crashed honest primary of view 0.
NEXT_PRIMARY_SHARE = 0.12
#: Probability that the last client is Byzantine.
BYZANTINE_CLIENT_SHARE = 0.25
#: Probability of a run without any fault (drawn from its own stream, so that the
#: other seeds keep their schedules).
QUIET_SHARE = 0.05
#: Probability of a run with the runtime's adaptive batching (a partial batch waits while
#: one is in flight) instead of a sequence number per request at once.
ADAPTIVE_BATCHING_SHARE = 0.25
#: Probability of a run whose REPLYs rely on authenticated channels, as the runtime's
#: do, instead of every message standing on its signature alone.
CHANNELS_SHARE = 0.25
#: Share of the seeds whose clients send reads as fast READs (2f+1 replies).
FAST_READS_SHARE = 0.25
#: Share of the seeds whose replicas send digest replies (the designated one in full).
DIGEST_REPLIES_SHARE = 0.25


def draw_params(seed: int) -> ProtocolParams:
    """The protocol settings of one seed: :data:`SIM_PARAMS`, with the runtime's
    adaptive batching, channels, fast reads and digest replies each in a share of
    the seeds. Each is drawn from a stream of its own, so every seed keeps its fault
    schedule whatever they draw."""
    params = SIM_PARAMS
    if random.Random(f"batching:{seed}").random() < ADAPTIVE_BATCHING_SHARE:
        params = attrs.evolve(params, partial_batches_in_flight=1)
    if random.Random(f"channels:{seed}").random() < CHANNELS_SHARE:
        params = attrs.evolve(params, signed_replies=0)
    if random.Random(f"fast-reads:{seed}").random() < FAST_READS_SHARE:
        params = attrs.evolve(params, fast_reads=1)
    if random.Random(f"digest-replies:{seed}").random() < DIGEST_REPLIES_SHARE:
        params = attrs.evolve(params, digest_replies=1)
    return params


def draw_plan(seed: int, f: int | None = None) -> SimPlan:
    """The run of one seed, its fault schedule and its protocol settings
    (:func:`draw_params`): every random choice comes from ``seed``."""
    return attrs.evolve(_draw_schedule(seed, f), params=draw_params(seed))


def _draw_schedule(seed: int, f: int | None) -> SimPlan:
    if random.Random(f"quiet:{seed}").random() < QUIET_SHARE:
        return _quiet_plan(random.Random(f"quiet-plan:{seed}"), f)
    rng = random.Random(seed)
    if f is None:
        f = 1 if rng.random() < 0.6 else 2
    n = 3 * f + 1
    clients = rng.randint(2, 4)
    operations = rng.randint(20, 36)
    stabilization = rng.randint(1500, 4000)
    span = int(stabilization * rng.uniform(0.5, 0.9))
    next_primary = rng.random() < NEXT_PRIMARY_SHARE
    faulty = [0] if rng.random() < 0.75 else []
    others = list(range(1, n))
    rng.shuffle(others)
    while len(faulty) < rng.randint(0, f) or (not faulty and rng.random() < 0.3):
        faulty.append(others.pop())
    faulty = [1] if next_primary else faulty[:f]
    traitors: list[TraitorPlan] = []
    twin = None
    lossy_primary = False
    for replica in faulty:
        if next_primary:
            params = (("budget", 300), ("large", rng.randint(0, 1)), ("rate", 0.25))
            traitors.append(TraitorPlan(replica, "byzantine", Trigger(), params))
            continue
        if rng.random() < BYZANTINE_SHARE:
            traitors.append(_byzantine(rng, replica))
            if rng.random() < 0.4:
                continue  # the byzantine traitor alone
        # A twinned primary (or next primary) equivocates by itself: each copy
        # orders requests its own way; peers hearing both catch it.
        if twin is None and rng.random() < (0.3 if replica in (0, 1) else 0.1):
            twin = _draw_twin(rng, replica, n)
            continue
        if replica == 1 and rng.random() < 0.4:
            # The primary of view 1 forging its NEW-VIEW: backups must recompute O.
            traitors.append(TraitorPlan(1, "lie", Trigger(), (("what", "new-view"),)))
            continue
        if replica == 0 and rng.random() < 0.9:
            # A primary that stops the normal case: most runs need a view change.
            traitors.append(_disruptive_primary(rng, n, span))
            lossy_primary = rng.random() < 0.4
            continue
        for _ in range(rng.choice([1, 1, 2])):
            traitors.append(_draw_traitor(rng, replica, n, span))
    honest = [r for r in range(n) if r not in faulty]
    crashes = []
    if next_primary:
        at = rng.randint(span // 8, span // 3)
        crashes.append(CrashPlan(0, at, rng.randint(at + 500, max(at + 500, span))))
    elif rng.random() < (0.6 if 0 in honest else 0.3):
        at = rng.randint(0, span // 2)
        victim = 0 if 0 in honest and rng.random() < 0.7 else rng.choice(honest)
        crashes.append(CrashPlan(victim, at, rng.randint(at + 200, max(at + 200, span))))
    rules = [_draw_rule(rng, n, span) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
    if lossy_primary:
        # Some PRE-PREPAREs lost: prepared requests with gaps between them, which the
        # next NEW-VIEW fills with null requests.
        links = [[0, peer] for peer in range(1, n)]
        rules.append({"kind": "loss", "rate": 0.5, "links": links, "until_ms": span})
    byzantine_clients: tuple[tuple[int, str], ...] = ()
    if rng.random() < BYZANTINE_CLIENT_SHARE:
        mode = "byzantine" if rng.random() < 0.6 else rng.choice(CLIENT_MODES)
        byzantine_clients = ((clients - 1, mode),)
    workload = random_workload(rng, clients, operations, keys=rng.randint(2, 5))
    for client, _ in byzantine_clients:
        workload = _own_keys(workload, client)
    return SimPlan(
        f=f, n=n, clients=clients, workload=workload,
        traitors=tuple(traitors), network=tuple(rules), crashes=tuple(crashes), twin=twin,
        byzantine_clients=byzantine_clients, stabilization_ms=stabilization,
        workload_span_ms=span,
    )  # fmt: skip


def _quiet_plan(rng: random.Random, f: int | None) -> SimPlan:
    """No fault at all, checked by :func:`faults.verification.checkers.check_quiet`."""
    if f is None:
        f = 1 if rng.random() < 0.6 else 2
    clients = rng.randint(2, 4)
    workload = random_workload(rng, clients, rng.randint(20, 36), keys=rng.randint(2, 5))
    stabilization = rng.randint(1500, 4000)
    return SimPlan(
        f=f, n=3 * f + 1, clients=clients, workload=workload, stabilization_ms=stabilization,
        workload_span_ms=int(stabilization * rng.uniform(0.5, 0.9)), quiet=True,
    )  # fmt: skip


Workload = tuple[tuple[bytes, ...], ...]


def _own_keys(workload: Workload, client: int) -> Workload:
    """The faulty client's operations on keys of its own: the checkers cannot see what a
    faulty client writes (its history is not checked), so it must not share keys with
    honest clients whose histories are."""
    own = tuple(
        kv.put(f"faulty-key-{i % 3}", f"x{i}") if i % 2 == 0 else kv.get(f"faulty-key-{i % 3}")
        for i in range(len(workload[client]))
    )
    return (*workload[:client], own, *workload[client + 1 :])


def _byzantine(rng: random.Random, replica: int) -> TraitorPlan:
    params = {"rate": rng.choice([0.1, 0.25, 0.5]), "budget": rng.choice([100, 300])}
    params["large"] = 1 if rng.random() < 0.3 else 0
    return TraitorPlan(replica, "byzantine", Trigger(), tuple(sorted(params.items())))


def _draw_twin(rng: random.Random, replica: int, n: int) -> TwinPlan:
    """Two copies of ``replica``; in each of two phases every peer hears one copy or
    both (hearing both is how equivocation gets caught)."""
    routes = tuple(
        tuple(rng.choice(["replica", "twin", "both", "both"]) for _ in range(n)) for _ in range(2)
    )
    return TwinPlan(replica, routes, rng.randint(400, 1500))


def _disruptive_primary(rng: random.Random, n: int, span: int) -> TraitorPlan:
    behaviour = rng.choice(["mute", "stall", "crash", "equivocate", "selective"])
    peers = list(range(1, n))
    trigger: dict[str, Any] = {}
    params: dict[str, Any] = {}
    if rng.random() < 0.5:
        trigger["from_seq"] = rng.randint(2, 12)
    if behaviour in ("equivocate", "selective"):
        trigger["targets"] = frozenset(rng.sample(peers, len(peers) // 2 + rng.randint(0, 1)))
    elif behaviour == "crash":
        params["restart_ms"] = rng.choice([None, rng.randint(300, max(300, span))])
    return TraitorPlan(0, behaviour, Trigger(**trigger), tuple(sorted(params.items())))


def _draw_traitor(rng: random.Random, replica: int, n: int, span: int) -> TraitorPlan:
    behaviour = rng.choice(_BACKUP_BEHAVIOURS)
    trigger: dict[str, Any] = {}
    if rng.random() < 0.3:
        trigger["from_seq"] = rng.randint(1, 10)
    if rng.random() < 0.2:
        trigger["at_ms"] = rng.randint(0, span // 2)
    if rng.random() < 0.5:
        peers = [r for r in range(n) if r != replica]
        trigger["targets"] = frozenset(rng.sample(peers, rng.randint(1, len(peers))))
    params = _PARAMS.get(behaviour, lambda rng: {})(rng)
    return TraitorPlan(replica, behaviour, Trigger(**trigger), tuple(sorted(params.items())))


def _draw_rule(rng: random.Random, n: int, span: int) -> dict[str, Any]:
    kind = rng.choice(["partition", "partition", "loss", "duplicate", "delay", "reorder"])
    at = rng.randint(0, max(0, span - 300))
    rule: dict[str, Any] = {
        "kind": kind,
        "at_ms": at,
        "until_ms": rng.randint(at + 100, span + 100),
    }
    if kind == "partition":
        replicas = list(range(n))
        rng.shuffle(replicas)
        cut = rng.randint(1, n - 1)
        rule["groups"] = [sorted(replicas[:cut]), sorted(replicas[cut:])]
    elif kind == "delay":
        rule["ms"] = rng.randint(1, 40)
        rule["jitter_ms"] = rng.randint(0, 40)
    else:
        rule["rate"] = rng.choice([0.05, 0.1, 0.2, 0.4])
    return rule
