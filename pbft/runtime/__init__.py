"""The Trio runtime: runs the sans-IO protocol core over real TCP connections.

The core (:mod:`pbft.replica`, :mod:`pbft.client`) never does I/O; this
package is one of its drivers. It is built in layers, each written against
``trio.abc.Stream`` so that tests can swap memory streams for sockets:

* :mod:`pbft.runtime.framing`: length-prefixed frames over a byte stream.
* :mod:`pbft.runtime.handshake`: mutual authentication of the two ends of a
  connection, so every frame is attributed to a principal that proved it
  holds its private key.
* :mod:`pbft.runtime.links`: the outgoing, send-only connection to one peer
  (queueing, coalesced writes, reconnection with backoff) and the acceptor
  side of one incoming connection.
"""
