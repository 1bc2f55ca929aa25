"""Byzantine clients: a client that lies about itself or its requests.

Honest replicas must not care: each (client, timestamp) executes at most once,
requests carry their client's signature, and replicas order whatever the
primary proposes, so at worst a faulty client hurts only its own operations.
Byte bounds matter too: a request larger than ``max_request_bytes`` must be
refused before it is stored, or one client pins memory and makes every
PRE-PREPARE carrying it too large.

``mode``:

* ``reuse-timestamp``: every request goes out under the first timestamp it
  ever used (replicas answer the old request's cached reply, or ignore it);
* ``split``: under one timestamp, a different operation to each replica
  (conflicting requests);
* ``impersonate``: requests that claim to come from another client, signed
  with its own key (so they fail verification);
* ``oversized``: the operation padded to just under, just over, and far past
  ``max_request_bytes`` (up to 256 KiB, a frame far larger than any request);
* ``huge-timestamp``: timestamps near 2^63 (the largest the wire form takes:
  once executed, the client table can never move on), and 2^64 - 1 (which no
  replica can decode);
* ``subset``: each request (and each retransmission) to a random subset of
  the replicas only, so that some hear of it and others never do;
* ``write-as-read``: the request goes to every replica as a READ, the
  unordered fast path that only read-only operations may take (a ``put``
  executed that way on some replicas and not others would fork their states);
* ``byzantine``: any of the above (or the honest request) per request, drawn
  from the client's seeded ``random.Random``.

A driver that traces a run sets :attr:`ByzantineClient.on_forged` to learn which sends
carry a rewritten request (and by which mode), as :class:`faults.traitors.base.Traitor` does.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs

from pbft.client import Client
from pbft.encoding import encode_message
from pbft.events import Effect, Event, SendToReplicas
from pbft.messages import Read, Request, Signed

SIMPLE_MODES = (
    "reuse-timestamp", "split", "impersonate", "oversized", "huge-timestamp", "subset",
    "write-as-read",
)  # fmt: skip
MODES = (*SIMPLE_MODES, "byzantine")
#: What the client sends that a mode rewrites.
_REWRITTEN = (Request, Read)
#: The largest request the ``oversized`` mode builds (bytes of operation).
LARGEST_OVERSIZED_BYTES = 256 * 1024


class ByzantineClient:
    def __init__(
        self, client: Client, mode: str, seed: int = 0, max_request_bytes: int = 4096
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown Byzantine client mode {mode!r} (one of {', '.join(MODES)})")
        self.client = client
        self.mode = mode
        self.rng = random.Random(seed)
        self.max_request_bytes = max_request_bytes
        self._first_timestamp: int | None = None
        #: Requests rewritten (sent other than the honest client would).
        self.rewrites = 0
        #: Told (mode, effect) of each send carrying a rewritten request (a trace); None: no one.
        self.on_forged: Callable[[str, Effect], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def step(self, event: Event) -> list[Effect]:
        return [out for effect in self.client.step(event) for out in self._rewrite(effect)]

    def _rewrite(self, effect: Effect) -> list[Effect]:
        if type(effect) is not SendToReplicas or type(effect.message.message) not in _REWRITTEN:
            return [effect]
        mode = self.mode
        if mode == "byzantine":
            mode = self.rng.choice((*SIMPLE_MODES, "honest"))
            if mode == "honest":
                return [effect]
        self.rewrites += 1
        request = effect.message.message
        rewritten: list[Effect] = getattr(self, "_" + mode.replace("-", "_"))(effect, request)
        if self.on_forged is not None:
            for out in rewritten:
                if out.message is not effect.message:  # type: ignore[attr-defined]
                    self.on_forged(mode, out)
        return rewritten

    def _write_as_read(self, effect: SendToReplicas, request: Request) -> list[Effect]:
        read = Read(request.client, request.timestamp, request.operation)
        return [SendToReplicas(tuple(range(self.client.config.n)), self._sign(read))]

    def _sign(self, request: Any) -> Signed[Any]:
        return self.client.auth.sign(request)

    def _reuse_timestamp(self, effect: SendToReplicas, request: Request) -> list[Effect]:
        if self._first_timestamp is None:
            self._first_timestamp = request.timestamp
        reused = attrs.evolve(request, timestamp=self._first_timestamp)
        return [attrs.evolve(effect, message=self._sign(reused))]

    def _split(self, effect: SendToReplicas, request: Request) -> list[Effect]:
        return [
            SendToReplicas(
                (replica,),
                self._sign(attrs.evolve(request, operation=request.operation + bytes([replica]))),
            )
            for replica in effect.replicas
        ]

    def _impersonate(self, effect: SendToReplicas, request: Request) -> list[Effect]:
        others = len(self.client.config.client_keys)
        victim = (request.client + 1) % max(others, 1)
        return [attrs.evolve(effect, message=self._sign(attrs.evolve(request, client=victim)))]

    def _oversized(self, effect: SendToReplicas, request: Request) -> list[Effect]:
        limit = self.max_request_bytes
        overhead = len(encode_message(request)) - len(request.operation)
        size = self.rng.choice(
            (limit - overhead, limit - overhead + 1, limit + 1, 4 * limit, LARGEST_OVERSIZED_BYTES)
        )
        padded = request.operation + b"\0" * max(size - len(request.operation), 0)
        return [attrs.evolve(effect, message=self._sign(attrs.evolve(request, operation=padded)))]

    def _huge_timestamp(self, effect: SendToReplicas, request: Request) -> list[Effect]:
        timestamp = self.rng.choice(
            (2**63 - 1, 2**63 - 2, 2**63 - 1 - request.timestamp, 2**64 - 1)
        )
        return [
            attrs.evolve(effect, message=self._sign(attrs.evolve(request, timestamp=timestamp)))
        ]

    def _subset(self, effect: SendToReplicas, request: Request) -> list[Effect]:
        replicas = list(range(self.client.config.n))
        chosen = tuple(sorted(self.rng.sample(replicas, self.rng.randint(1, len(replicas) - 1))))
        return [SendToReplicas(chosen, effect.message)]
