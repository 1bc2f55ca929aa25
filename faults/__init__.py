"""Traitors and network faults that wrap honest pbft nodes from the outside.

Honest code in :mod:`pbft` has no traitor branches: a faulty replica is an
honest one whose inputs and outputs pass through a behaviour defined here.
"""
