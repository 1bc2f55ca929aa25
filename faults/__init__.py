"""Everything outside the honest protocol: the adversary, experiments, and verification.

Honest code in :mod:`pbft` has no traitor branches: a faulty replica is an
honest one whose inputs and outputs pass through a behaviour defined here.
Three folders, one concern each, depending on each other in one direction only
(``tests/protocol/test_layering.py`` checks it):

* :mod:`faults.traitors`: the fault model. Traitor behaviours and triggers,
  the model-strength ``byzantine`` traitor, Byzantine clients, network faults,
  and the ``--traitor`` spec language.
* :mod:`faults.verification`: the deterministic simulator, random schedules,
  the explorer and its shrinker, Twins, the checkers (agreement, validity,
  linearizability, liveness) and the per-step invariants. Uses traitors.
* :mod:`faults.scenarios`: scenario files (document, parser, workload), their
  runners on a real cluster and in the simulator, and run reports. Uses both.
"""
