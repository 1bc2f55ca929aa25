"""``pbft bench``: a cluster's throughput and latency, and the ceiling it is measured against.

* :mod:`pbft.bench.calibrate` times, in this process, the costs every operation
  pays (Ed25519 sign and verify, a MAC, one message hop over loopback TCP);
* :mod:`pbft.bench.model` turns them into the most operations per second the
  design allows on this machine (its *ceiling*), by counting what one batch costs;
* :mod:`pbft.bench.run` starts real replica processes, drives them with
  closed-loop clients and measures what they reach.
"""
