"""The ``byzantine`` traitor's view-change attacks: forged VIEW-CHANGEs and NEW-VIEWs.

The view change (Castro & Liskov §4.4) is where a faulty replica has the most
room: a VIEW-CHANGE carries a checkpoint proof C and a set P of prepared
certificates, each a bundle of other replicas' signed messages, and a NEW-VIEW
carries 2f+1 VIEW-CHANGEs (V) and the PRE-PREPAREs (O) computed from them.
Backups must check every nested signature, keep the valid parts of a
VIEW-CHANGE only, recompute O, and bound what they keep. This module builds:

* checkpoint proofs from pooled honest CHECKPOINTs (2f+1 matching ones prove a
  checkpoint; fewer, mixed or for another seq prove nothing);
* VIEW-CHANGEs for the next, the current, a lower or a far view, with pooled
  valid certificates (honestly prepared requests), forged ones (a faulty
  primary's PRE-PREPARE and faulty PREPAREs, too few), several per seq and
  outside (h, h+L], reordered, truncated;
* padded VIEW-CHANGEs: junk certificates repeated until the message is larger
  than the largest NEW-VIEW share an honest replica could need
  (:attr:`pbft.bounds.MessageBounds.view_change`),
  the attack that makes every later NEW-VIEW too large to send;
* NEW-VIEWs as the faulty primary of a coming view: V from pooled and freshly
  colluder-signed VIEW-CHANGEs, O computed exactly as backups do
  (:func:`pbft.certificates.compute_new_view`), then sent as is, with O's
  nested client signatures zeroed under a fresh signature (equal "by value",
  invalid for anyone checking), or with V and O truncated, padded, reordered or
  mixed from several views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from pbft.bounds import message_bounds
from pbft.certificates import check_view_change, compute_new_view
from pbft.events import Effect
from pbft.messages import (
    NULL_DIGEST,
    Checkpoint,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Signed,
    ViewChange,
    batch_digest,
)

if TYPE_CHECKING:
    from faults.traitors.byzantine import Kit


@attrs.define
class ViewAttacks:
    kit: Kit

    def proof(self) -> tuple[int, tuple[Signed[Checkpoint], ...]]:
        """(seq, C): a pooled proof of 2f+1 matching CHECKPOINTs when there is one,
        often spoiled (too few, mixed, duplicated); else the initial checkpoint."""
        kit = self.kit
        groups: dict[tuple[int, bytes], dict[int, Signed[Checkpoint]]] = {}
        for signed in kit.pool.items(Checkpoint):
            message = signed.message
            groups.setdefault((message.seq, message.state_digest), {})[message.sender] = signed
        proven = [(key, votes) for key, votes in groups.items() if len(votes) >= kit.config.quorum]
        if not proven:
            return 0, ()
        (seq, _), votes = proven[kit.rng.randrange(len(proven))]
        proof = tuple(votes[sender] for sender in sorted(votes))[: kit.config.quorum]
        if kit.rng.random() < 0.25:
            proof = kit.mutator.sequence(ViewChange.SCHEMA[2][1].kind, proof, 1)
        return seq, proof

    def certificates(self, count: int) -> list[PreparedCertificate]:
        kit = self.kit
        pooled = list(kit.pool.items(PreparedCertificate))
        chosen = [pooled[kit.rng.randrange(len(pooled))] for _ in range(count)] if pooled else []
        return [c if kit.rng.random() < 0.7 else self.junk_certificate(c) for c in chosen]

    def junk_certificate(self, base: PreparedCertificate | None = None) -> PreparedCertificate:
        """A certificate no honest replica could have: faulty signatures only (too few),
        often for a seq outside the window or another view."""
        kit = self.kit
        if base is not None and kit.rng.random() < 0.5:
            return kit.mutator.message(base)
        view = max(kit.view - kit.rng.randint(0, 1), 0)
        if kit.rng.random() < 0.2:
            view = kit.view + 1 + kit.rng.randint(0, 1)  # of the view being changed into, or later
        seq = kit.seq()
        pooled = kit.pool.pick(kit.rng, PrePrepare)
        batch = pooled.message.batch if pooled is not None else ()
        primary = kit.config.primary(view)
        pre_prepare = kit.keyring.resign(
            kit.rng, PrePrepare(view, seq, batch_digest(batch), batch, primary), 0.5
        )
        prepares = tuple(
            kit.keyring.sign_as(Prepare(view, seq, batch_digest(batch), sender), sender)
            for sender in kit.keyring.replica_ids
            if sender != primary
        )
        return PreparedCertificate(pre_prepare, prepares)

    def _view_change_for(self, new_view: int, sender: int, junk: int = 0) -> Signed[ViewChange]:
        kit = self.kit
        stable_seq, proof = self.proof()
        prepared = [c for c in self.certificates(kit.rng.randint(0, 4)) if c.seq > stable_seq]
        prepared += [self.junk_certificate() for _ in range(junk)]
        message = ViewChange(new_view, stable_seq, proof, tuple(prepared), sender)
        return kit.keyring.sign_as(message, sender)

    def view_change(self) -> list[Effect]:
        kit = self.kit
        rng = kit.rng
        new_view = rng.choice(
            (kit.view + 1, kit.view + 1, kit.view + 2, kit.view, max(kit.view - 1, 0))
        )
        if rng.random() < 0.1:
            new_view = kit.mutator.number(new_view)
        signed = self._view_change_for(new_view, kit.faulty(), junk=rng.choice((0, 0, 1, 3)))
        if rng.random() < 0.3:
            message = kit.mutator.message(signed.message)
            signed = kit.keyring.resign(rng, message, honest_sender=0.05)
        return kit.send(signed)

    def padded_view_change(self) -> list[Effect]:
        """A VIEW-CHANGE past its honest bound, filled with repeated junk certificates."""
        kit = self.kit
        stable_seq, proof = self.proof()
        sender = kit.faulty()
        message = ViewChange(kit.view + 1, stable_seq, proof, self._padding(), sender)
        return kit.send(
            kit.keyring.sign_as(message, sender),
            tuple(r for r in range(kit.config.n) if r != kit.traitor.replica.id),
        )

    def pad(self, signed: Signed[ViewChange]) -> Signed[ViewChange]:
        """The traitor's own VIEW-CHANGE, its real certificates followed by junk ones up
        to past the honest bound: the attack of issue 8's hole 2."""
        message = signed.message
        padded = attrs.evolve(message, prepared=message.prepared + self._padding())
        return self.kit.keyring.sign_as(padded, message.sender)

    def spoil(self, signed: Signed[NewView]) -> Signed[NewView]:
        """The traitor's own NEW-VIEW changed one way (see :meth:`_spoil`), re-signed."""
        message = signed.message
        view_changes, pre_prepares = list(message.view_changes), list(message.pre_prepares)
        self._spoil(view_changes, pre_prepares, message.sender, self.kit.rng.randrange(8))
        spoiled = attrs.evolve(
            message, view_changes=tuple(view_changes), pre_prepares=tuple(pre_prepares)
        )
        return self.kit.keyring.sign_as(spoiled, message.sender)

    def _padding(self) -> tuple[PreparedCertificate, ...]:
        kit = self.kit
        bound = message_bounds(kit.config, kit.params).view_change
        target = min(kit.rng.randint(bound, 2 * bound), 4 * 1024 * 1024)
        distinct = [self.junk_certificate() for _ in range(6)]
        size_each = max(
            1,
            sum(
                len(c.pre_prepare.payload) + sum(len(p.payload) for p in c.prepares)
                for c in distinct
            )
            // 6,
        )
        return tuple(distinct[i % 6] for i in range(target // size_each + 1))

    def new_view(self) -> list[Effect]:
        kit = self.kit
        rng = kit.rng
        views = [v for v in kit.faulty_primary_views() if v > 0]
        if not views:
            return []
        view = views[0] if rng.random() < 0.7 else views[rng.randrange(len(views))]
        primary = kit.config.primary(view)
        by_sender: dict[int, Signed[ViewChange]] = {}
        for signed in kit.pool.items(ViewChange):
            if signed.message.new_view == view:
                by_sender[signed.message.sender] = signed
        for sender in kit.keyring.replica_ids:
            if sender not in by_sender or rng.random() < 0.3:
                by_sender[sender] = self._view_change_for(view, sender)
        auth = kit.keyring.replicas[primary]
        checked = [
            c for sender in sorted(by_sender)
            if (c := check_view_change(auth, kit.config, kit.params, by_sender[sender])) is not None
        ]  # fmt: skip
        if len(checked) < kit.config.quorum and rng.random() < 0.7:
            return []
        chosen = checked[: kit.config.quorum] if checked else []
        if not chosen:
            return []
        plan = compute_new_view(kit.config, view, chosen)
        pre_prepares = [kit.keyring.sign_as(p, primary) for p in plan.pre_prepares]
        view_changes = [c.signed for c in chosen]
        self._spoil(view_changes, pre_prepares, primary)
        message = NewView(view, tuple(view_changes), tuple(pre_prepares), primary)
        return kit.send(kit.keyring.sign_as(message, primary))

    def _spoil(
        self, view_changes: list[Any], pre_prepares: list[Any], primary: int, roll: int = -1
    ) -> None:
        """Change V or O in place, one way (roll 8: none, an honest-looking NEW-VIEW)."""
        kit = self.kit
        rng = kit.rng
        if roll < 0:
            roll = rng.randrange(9)
        if roll == 0:
            # O's nested requests re-signed with zeroes: the same requests "by value".
            for index, signed in enumerate(pre_prepares):
                message = signed.message
                if message.batch:
                    batch = tuple(kit.keyring.zeroed(r.message) for r in message.batch)
                    pre_prepares[index] = kit.keyring.sign_as(
                        attrs.evolve(message, batch=batch), primary
                    )
        elif roll == 1 and view_changes:
            del view_changes[rng.randrange(len(view_changes))]
        elif roll == 2 and view_changes:
            view_changes.append(view_changes[rng.randrange(len(view_changes))])
        elif roll == 3:
            others = [s for s in kit.pool.items(ViewChange) if s not in view_changes]
            if others:
                view_changes[rng.randrange(len(view_changes))] = others[rng.randrange(len(others))]
        elif roll == 4:
            rng.shuffle(pre_prepares)
        elif roll == 5 and pre_prepares:
            del pre_prepares[rng.randrange(len(pre_prepares))]
        elif roll == 6 and pre_prepares:
            index = rng.randrange(len(pre_prepares))
            pre_prepares[index] = kit.keyring.sign_as(
                kit.mutator.message(pre_prepares[index].message), primary
            )
        elif roll == 7:
            # O padded: one PRE-PREPARE more than V implies, after the last or a copy.
            if pre_prepares and rng.random() < 0.5:
                extra = pre_prepares[rng.randrange(len(pre_prepares))].message
            else:
                last = max((s.message.seq for s in pre_prepares), default=kit.low)
                view = pre_prepares[0].message.view if pre_prepares else kit.view + 1
                extra = PrePrepare(view, last + 1, NULL_DIGEST, (), primary)
            pre_prepares.append(kit.keyring.sign_as(extra, primary))
