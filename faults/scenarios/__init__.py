"""Scenario files: one experiment written down, run on real processes or simulated.

:mod:`.document` is the scenario's data model and loader, :mod:`.parser` checks
a TOML document line by line, :mod:`.workload` turns a workload into client
operations, :mod:`.runner` runs it on a real Trio cluster, :mod:`.simulated` in
the deterministic simulator, and :mod:`.report` writes the run report.
:mod:`.crash_restart` and :mod:`.crash_restart_report` are the crash-restart run
under load of ``scripts/crash_restart.py``, and :mod:`.hostile` the hostile-input
run of ``scripts/hostile_input.py``. Depends on :mod:`faults.traitors`,
:mod:`faults.verification` and :mod:`pbft`.
"""
