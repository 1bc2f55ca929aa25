"""Byzantine clients: a client that lies about itself or its requests.

Honest replicas must not care: each (client, timestamp) executes at most once,
requests carry their client's signature, and replicas order whatever the
primary proposes, so at worst a faulty client hurts only its own operations.

``mode``:

* ``reuse-timestamp``: every request goes out under the first timestamp it
  ever used (replicas answer the old request's cached reply, or ignore it);
* ``split``: under one timestamp, a different operation to each replica;
* ``impersonate``: requests that claim to come from another client, signed
  with its own key (so they fail verification).
"""

from __future__ import annotations

from typing import Any

import attrs

from pbft.client import Client
from pbft.events import Effect, Event, SendToReplicas
from pbft.messages import Request

MODES = ("reuse-timestamp", "split", "impersonate")


class ByzantineClient:
    def __init__(self, client: Client, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown Byzantine client mode {mode!r} (one of {', '.join(MODES)})")
        self.client = client
        self.mode = mode
        self._first_timestamp: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def step(self, event: Event) -> list[Effect]:
        return [out for effect in self.client.step(event) for out in self._rewrite(effect)]

    def _rewrite(self, effect: Effect) -> list[Effect]:
        if type(effect) is not SendToReplicas or type(effect.message.message) is not Request:
            return [effect]
        request = effect.message.message
        sign = self.client.auth.sign
        if self.mode == "reuse-timestamp":
            if self._first_timestamp is None:
                self._first_timestamp = request.timestamp
            reused = attrs.evolve(request, timestamp=self._first_timestamp)
            return [attrs.evolve(effect, message=sign(reused))]
        if self.mode == "split":
            return [
                SendToReplicas(
                    (replica,),
                    sign(attrs.evolve(request, operation=request.operation + bytes([replica]))),
                )
                for replica in effect.replicas
            ]
        others = len(self.client.config.client_keys)
        victim = (request.client + 1) % max(others, 1)
        return [attrs.evolve(effect, message=sign(attrs.evolve(request, client=victim)))]
