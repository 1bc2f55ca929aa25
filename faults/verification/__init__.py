"""Verifying safety and liveness by search: simulate, check, explore, shrink.

:mod:`.sim` drives the unchanged core under one seed; :mod:`.explore` draws
fault schedules, runs them in parallel and shrinks failures; :mod:`.twins`
enumerates Twins arrangements; :mod:`.checkers`, :mod:`.linearizability` and
:mod:`.invariants` decide whether a run was correct. Depends on
:mod:`faults.traitors` and :mod:`pbft`, never on :mod:`faults.scenarios`.
"""
