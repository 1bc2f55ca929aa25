"""Coverage-guided fuzz targets for the code that handles a peer's bytes.

Three targets, each a plain function ``target(data: bytes) -> None`` that
raises only for a bug (an unexpected exception or a broken invariant):

* ``decoder`` (:mod:`fuzz.targets`): a frame off the network, through
  :func:`pbft.encoding.decode_signed` and the replica's authenticator, as the
  runtime applies them;
* ``handshake`` (:mod:`fuzz.targets`): an unauthenticated peer's byte stream,
  fed to the acceptor (or the dialer) side of :mod:`pbft.runtime.handshake`;
* ``step`` (:mod:`fuzz.step`): a sequence of events (honest frames replayed
  in any order, messages forged by the faulty replica and the clients, raw
  bytes, timers) stepped through one :class:`pbft.replica.Replica`, with the
  simulator's per-step invariants checked after every step.

The functions need no fuzzer: ``tests/unit/test_fuzz_corpus.py`` runs every
file of ``fuzz/corpus/<target>/`` through them. :mod:`fuzz.run` drives one
target under atheris (libFuzzer); ``scripts/fuzz.py`` runs targets for a time
budget and merges what adds coverage into the corpus; :mod:`fuzz.seeds`
writes the seed corpus from a simulated run.
"""
