"""Mutants: deliberately wrong variants of PBFT's rules, to prove the explorer catches them.

Theory of operation
-------------------
A checker that never fails proves nothing. Each :class:`Mutant` here breaks
exactly one rule of Castro & Liskov's protocol by monkeypatching the honest
code (a method of :class:`pbft.replica.Replica` or of one of its mixins, or a
function of :mod:`pbft.certificates` where its caller looks it up), and names
the rule it breaks and the section of the paper that states it. Mutants are
switched on only from tests: ``with mutant.applied(): ...`` (or ``apply()`` and
``undo()``). Nothing in :mod:`pbft` knows they exist.

A patch goes where the honest code *looks the name up*: ``Replica._handlers``
holds the message handlers themselves, so patching a handler also swaps that
table; :mod:`pbft.replica_view_change` imports ``compute_new_view`` and
``check_view_change`` by name, so those are patched there.

:func:`run_guarded` runs one explorer seed (:func:`faults.verification.explore.run_seed`)
and reports which checkers it violated; an exception raised inside the
simulation counts as a violation of the pseudo-checker ``"crash"``. A mutant
is *killed* by the first seed with any violation (:func:`first_kill`). Patches
live in the process that applies them and in the workers it forks, so
:func:`verdicts` can run seeds in parallel. Every replica runs the mutated
code, traitors' inner replicas included: the bug is in the implementation.

A mutant whose ``gap`` is set is one the explorer's fault schedules do not
catch within 500 seeds; ``gap`` says what schedule would. It stays in the
catalogue (and in ``scripts/mutant_table.py``'s table) until the explorer
catches it.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

import pbft.certificates as certificates
import pbft.replica_gate as replica_gate
import pbft.replica_view_change as replica_view_change
from faults.verification.explore import run_seed
from pbft.auth import Authenticator
from pbft.certificates import NewViewPlan, compute_new_view, pre_prepare_is_well_formed
from pbft.client import Client
from pbft.events import Committed, Prepared
from pbft.messages import (
    CLIENT_SIGNED,
    Commit,
    CommitCertificate,
    PreparedCertificate,
    ViewChange,
)
from pbft.replica import Replica

_MISSING = object()

# The honest code, kept before any mutant patches it.
_HONEST_COMPUTE_NEW_VIEW = certificates.compute_new_view
_HONEST_ON_PRE_PREPARE = Replica._on_pre_prepare
_HONEST_VIEW_GATE = Replica._view_gate
_HONEST_PRECHECK_VIEW = Replica._precheck_view
_HONEST_EXECUTE_READY = Replica._execute_ready
_HONEST_START_VIEW_CHANGE = Replica._start_view_change
_HONEST_ENTER_VIEW = Replica._enter_view
_HONEST_PRECHECK = Replica._precheck
_HONEST_CLIENT_INIT = Client.__init__
_HONEST_VERIFY = Authenticator.verify


@attrs.frozen
class Patch:
    """Replace ``owner.attribute`` (a class or a module) with ``replacement``."""

    owner: Any
    attribute: str
    replacement: Any


@attrs.define
class Mutant:
    """One wrong rule: its name, the rule it breaks, the paper's section, its patches."""

    name: str
    rule: str
    section: str
    patches: tuple[Patch, ...]
    #: Empty if the explorer catches this mutant; else the schedule it would need.
    gap: str = ""
    #: Seeds the explorer gets to kill it (test_mutants.py), when not the usual 500.
    seeds: int | None = None
    _saved: list[tuple[Any, str, Any]] = attrs.field(factory=list, init=False, repr=False)

    def apply(self) -> None:
        if self._saved:
            raise RuntimeError(f"mutant {self.name} is already applied")
        for patch in self._expanded():
            original = vars(patch.owner).get(patch.attribute, _MISSING)
            self._saved.append((patch.owner, patch.attribute, original))
            setattr(patch.owner, patch.attribute, patch.replacement)

    def undo(self) -> None:
        while self._saved:
            owner, attribute, original = self._saved.pop()
            if original is _MISSING:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)

    @contextmanager
    def applied(self) -> Iterator[Mutant]:
        self.apply()
        try:
            yield self
        finally:
            self.undo()

    def _expanded(self) -> list[Patch]:
        """The patches, plus the handler table when a patched method is a handler."""
        patches = list(self.patches)
        handlers = dict(Replica._handlers)
        for patch in self.patches:
            if patch.owner is Replica:
                original = getattr(Replica, patch.attribute)
                for message_type, handler in handlers.items():
                    if handler is original:
                        handlers[message_type] = patch.replacement
        if handlers != Replica._handlers:
            patches.append(Patch(Replica, "_handlers", handlers))
        return patches


# ----------------------------------------------------------------- normal case (§4.2)


def _prepared_after(prepares_needed: Callable[[Replica], int]) -> Callable[..., None]:
    """``_check_prepared`` with another count of PREPAREs than the paper's 2f."""

    def _check_prepared(self: Replica, seq: int, slot: Any) -> None:
        if slot.prepared or slot.pre_prepare is None:
            return
        pre_prepare = slot.pre_prepare.message
        matching = [
            prepare
            for _, prepare in sorted(slot.prepares.items())
            if prepare.message.digest == pre_prepare.digest
        ]
        needed = prepares_needed(self)
        if len(matching) < needed:
            return
        slot.prepared = True
        certificate = PreparedCertificate(slot.pre_prepare, tuple(matching[:needed]))
        self.prepared_certificates[seq] = certificate
        self._emit(Prepared(certificate))
        commit = self._sign(Commit(pre_prepare.view, seq, pre_prepare.digest, self.id))
        slot.commits[self.id] = commit
        self._broadcast(commit)
        self._check_committed(seq, slot)

    return _check_prepared


def _committed_on_own_commit(self: Replica, seq: int, slot: Any) -> None:
    """``_check_committed`` satisfied by the replica's own COMMIT: prepared is enough."""
    if slot.committed or not slot.prepared:
        return
    slot.committed = True
    proof = tuple(
        c for c in slot.commits.values() if c.message.digest == slot.pre_prepare.message.digest
    )
    self.commit_certificates[seq] = CommitCertificate(slot.pre_prepare, proof, self.id)
    if seq > self.last_executed:
        self._emit(Committed(slot.pre_prepare))
        self.committed[seq] = slot.pre_prepare.message
        self._execute_ready()


def _pre_prepare_ignoring_watermarks(self: Replica, signed: Any) -> str | None:
    """``_on_pre_prepare`` without its watermark check: any n is taken."""
    pre_prepare = signed.message
    reason = self._view_gate(signed, pre_prepare.view)
    if reason is not None:
        return reason
    slot = self.slots.get(pre_prepare.seq)
    if slot is not None and slot.pre_prepare is not None:
        if slot.pre_prepare.message.digest == pre_prepare.digest:
            return "duplicate"
        self._note_conflict(slot.pre_prepare, signed)
        return "conflicting-pre-prepare"
    own = slot.prepares.get(self.id) if slot is not None else None
    if own is not None and own.message.digest != pre_prepare.digest:
        return "conflicting-pre-prepare"
    reason = pre_prepare_is_well_formed(self.auth, self.params, pre_prepare)
    if reason is not None:
        return reason
    self._accept_pre_prepare(signed)
    return None


def _pre_prepare_latest_wins(self: Replica, signed: Any) -> str | None:
    """``_on_pre_prepare`` that, given a second PRE-PREPARE of its primary for (v, n) with
    another digest, forgets the first and its own votes for it, then accepts the second."""
    pre_prepare = signed.message
    slot = self.slots.get(pre_prepare.seq)
    if (
        slot is not None
        and slot.pre_prepare is not None
        and slot.pre_prepare.message.digest != pre_prepare.digest
        and pre_prepare.view == self.view
        and self.view_active
        and pre_prepare.sender == self.primary
    ):
        slot.pre_prepare = None
        slot.prepares.pop(self.id, None)
        slot.prepared = slot.committed = False
    return _HONEST_ON_PRE_PREPARE(self, signed)


def _view_gate_ignoring_old_views(self: Replica, signed: Any, view: int) -> str | None:
    """``_view_gate`` that takes a message of an earlier view as one of the current view."""
    return _HONEST_VIEW_GATE(self, signed, max(view, self.view))


def _precheck_view_ignoring_old_views(self: Replica, view: int, seq: int) -> str | None:
    """``_precheck_view`` that lets a message of an earlier view through."""
    return _HONEST_PRECHECK_VIEW(self, max(view, self.view), seq)


def _execute_without_waiting(self: Replica) -> None:
    """``_execute_ready`` that does not wait for a missing lower sequence number: it
    jumps over the gap and executes the committed batches above it at once."""
    if self.committed and self.last_executed >= self.low_watermark:
        lowest = min(self.committed)
        if lowest > self.last_executed + 1:
            self.last_executed = lowest - 1
    _HONEST_EXECUTE_READY(self)


def _no_request_timer(self: Replica, request: Any) -> None:
    """``_start_request_timer`` that starts nothing."""


# ------------------------------------------------------------------- checkpoints (§4.3)


def _record_checkpoint_weak_quorum(self: Replica, signed: Any) -> str | None:
    """``_record_checkpoint`` that makes a checkpoint stable on f+1 matching votes."""
    checkpoint = signed.message
    votes = self.checkpoint_votes.setdefault(checkpoint.seq, {})
    held = votes.get(checkpoint.sender)
    if held is not None:
        self._note_conflict(held, signed)
        return "duplicate"
    votes[checkpoint.sender] = signed
    self._bound_checkpoint_votes(checkpoint.sender)
    matching = sorted(
        (vote for vote in votes.values() if vote.message.state_digest == checkpoint.state_digest),
        key=lambda vote: vote.message.sender,
    )
    if len(matching) >= self.config.weak_quorum:
        proof = tuple(matching[: self.config.weak_quorum])
        self._stabilize(checkpoint.seq, checkpoint.state_digest, proof)
    return None


# ------------------------------------------------------------------ view changes (§4.4)


def _view_change_with_current_view_only(self: Replica, new_view: int) -> None:
    """``_start_view_change`` from a replica that kept certificates in the view's log: the
    ones prepared in earlier views are gone by the time it leaves this one."""
    if new_view > self.view:
        self.prepared_certificates = {
            seq: certificate
            for seq, certificate in self.prepared_certificates.items()
            if certificate.view == self.view
        }
    _HONEST_START_VIEW_CHANGE(self, new_view)


def _compute_new_view_ignoring_prepared(config: Any, view: int, view_changes: Any) -> NewViewPlan:
    """``compute_new_view`` that reads only the checkpoints of V, not its certificates."""
    stripped = [attrs.evolve(checked, certificates={}) for checked in view_changes]
    return _HONEST_COMPUTE_NEW_VIEW(config, view, stripped)


@attrs.frozen
class _PlanWithGaps(NewViewPlan):
    """A plan whose O may skip sequence numbers; max-s is kept apart."""

    last_seq: int = 0

    @property
    def max_seq(self) -> int:
        return self.last_seq


def _compute_new_view_without_nulls(config: Any, view: int, view_changes: Any) -> NewViewPlan:
    """``compute_new_view`` that leaves the gaps between certificates empty."""
    plan = _HONEST_COMPUTE_NEW_VIEW(config, view, view_changes)
    kept = tuple(pre_prepare for pre_prepare in plan.pre_prepares if pre_prepare.batch)
    return _PlanWithGaps(plan.min_seq, plan.checkpoint_source, kept, plan.max_seq)


def _outranks_lower_view(candidate: PreparedCertificate, incumbent: PreparedCertificate) -> bool:
    """``_outranks`` with the comparison of views turned around: the lowest view wins."""
    candidate_key = (-candidate.view, candidate.pre_prepare.message.digest)
    incumbent_key = (-incumbent.view, incumbent.pre_prepare.message.digest)
    return candidate_key > incumbent_key


def _enter_view_numbering_from_min_s(
    self: Replica, view: int, plan: Any, pre_prepares: Any
) -> None:
    """``_enter_view`` with a primary that numbers new requests from min-s+1, over O."""
    forgetful = _PlanWithGaps(plan.min_seq, plan.checkpoint_source, plan.pre_prepares, plan.min_seq)
    _HONEST_ENTER_VIEW(self, view, forgetful, pre_prepares)


def _on_new_view_unchecked(self: Replica, signed: Any) -> str | None:
    """``_on_new_view`` that checks only who sent it (and, in the precheck, its view): not
    V, not O."""
    new_view = signed.message
    if new_view.sender != self.config.primary(new_view.view):
        return "not-primary"
    checked = [c for c in map(self._checked, new_view.view_changes) if c is not None]
    if not checked:
        return "invalid-new-view"
    source = max(checked, key=lambda c: (c.stable_seq, -c.sender))
    pre_prepares = tuple(pre_prepare.message for pre_prepare in new_view.pre_prepares)
    self.last_new_view = signed
    plan = NewViewPlan(source.stable_seq, source, pre_prepares)
    self._enter_view(new_view.view, plan, new_view.pre_prepares)
    return None


def _check_view_change_trusting_checkpoint(
    auth: Any, config: Any, params: Any, signed: Any
) -> certificates.CheckedViewChange | None:
    """``check_view_change`` that believes the claimed stable checkpoint without checking
    its proof: the digest is read off the first CHECKPOINT, if there is one."""
    view_change = signed.message
    if view_change.new_view == 0:
        return None
    proof = view_change.checkpoint_proof
    stable_digest = proof[0].message.state_digest if proof else certificates.GENESIS_DIGEST
    kept: dict[int, PreparedCertificate] = {}
    for certificate in view_change.prepared:
        valid = certificates.view_change_shape_defect(config, params, signed) is None
        valid = valid and certificates.certificate_is_valid(auth, config, params, certificate)
        known = kept.get(certificate.seq)
        if valid and (known is None or certificates._outranks(certificate, known)):
            kept[certificate.seq] = certificate
    return certificates.CheckedViewChange(signed, stable_digest, kept)


# ------------------------------------------------------- the holes of issue 8, reverted


def _verify_new_view_by_value(self: Replica, new_view: Any) -> NewViewPlan | None:
    """``_verify_new_view`` before hole 1 was closed: O compared by decoded value, which
    ignores the nested client signatures (``Signed`` equality ignores signatures)."""
    checked = []
    senders: set[int] = set()
    for signed in new_view.view_changes:
        view_change = signed.message
        if view_change.new_view != new_view.view or view_change.sender in senders:
            return None
        if self.auth.verify(signed) is not None:
            return None
        result = self._checked(signed)
        if result is None:
            return None
        senders.add(view_change.sender)
        checked.append(result)
    if len(checked) < self.config.quorum:
        return None
    plan = compute_new_view(self.config, new_view.view, checked)
    if len(plan.pre_prepares) != len(new_view.pre_prepares):
        return None
    for expected, signed in zip(plan.pre_prepares, new_view.pre_prepares, strict=True):
        if signed.message != expected or self.auth.verify(signed):
            return None
    return plan


def _no_shape_defect(config: Any, params: Any, signed: Any) -> str | None:
    """``view_change_shape_defect`` before hole 2 was closed: any shape, any size."""
    return None


def _precheck_without_view_change_bound(self: Replica, signed: Any) -> str | None:
    """``_precheck`` that lets a VIEW-CHANGE of any size through (hole 2 reverted)."""
    if type(signed.message) is ViewChange:
        return "own-message" if signed.message.sender == self.id else None
    return _HONEST_PRECHECK(self, signed)


def _verify_caching_payloads(self: Authenticator, signed: Any, channel: Any = None) -> str | None:
    """``Authenticator.verify`` before hole 3 was closed: verified messages remembered by
    their whole payload and signature (the fix keeps a 32-byte digest)."""
    key = self.signer_key(signed.message)
    if key is None:
        return "non-member"
    if channel is not None and type(signed.message) in self.channel_types:
        own_role = "client" if isinstance(signed.message, CLIENT_SIGNED) else "replica"
        if channel[0] == own_role:
            return None
    if len(signed.signature) != self._signature_bytes:
        return "bad-signature"
    cache_key = signed.payload + signed.signature
    if cache_key in self._verified:
        return None
    data = self._prefixes[type(signed.message)] + signed.payload
    if not self._verifier.verify(key, signed.signature, data):
        return "bad-signature"
    self._remember(cache_key)
    return None


def _view_gate_by_count(self: Replica, signed: Any, view: int) -> str | None:
    """``_view_gate`` before hole 3 was closed: each sender's share of the next view's
    buffer counted in messages only, whatever their size."""
    if view == self.view and self.view_active:
        return None
    messages = self.future.setdefault(signed.message.sender, [])
    if len(messages) >= self.params.future_buffer_messages // self.config.n:
        return "future-view-buffer-full"
    if any(kept.payload == signed.payload for kept in messages):
        return "duplicate"
    messages.append(signed)
    return replica_gate.BUFFERED


# ------------------------------------------------------------------------- catalogue


# ----------------------------------------------------------------- fast reads (§5.1.3)


def _read_executing_anything(self: Replica, signed: Any) -> str | None:
    read = signed.message
    self._send_reply(read.client, read.timestamp, self.service.execute(read.operation))
    return None


def _client_with_weak_quorum(self: Client, *args: Any, **kwargs: Any) -> None:
    _HONEST_CLIENT_INIT(self, *args, **kwargs)
    self.reply_quorum = self.config.weak_quorum


def _verify_trusting_any_channel(
    self: Authenticator, signed: Any, channel: Any = None
) -> str | None:
    if channel is not None and type(signed.message) in self.channel_types:
        return None if self.signer_key(signed.message) is not None else "non-member"
    return _HONEST_VERIFY(self, signed, channel)


def _any_full_result(self: Client, key: bytes) -> bytes | None:
    return next(iter(self._results.values()), None)


def _replica(attribute: str, replacement: Any) -> tuple[Patch, ...]:
    return (Patch(Replica, attribute, replacement),)


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "prepared-with-2f-minus-1",
        "prepared(m, v, n, i) holds with 2f-1 matching PREPAREs instead of 2f",
        "§4.2",
        _replica("_check_prepared", _prepared_after(lambda replica: replica.config.quorum - 2)),
    ),
    Mutant(
        "commit-without-prepare",
        "a backup multicasts COMMIT as soon as it accepts the PRE-PREPARE, with no PREPAREs",
        "§4.2",
        _replica("_check_prepared", _prepared_after(lambda replica: 0)),
    ),
    Mutant(
        "execute-when-prepared",
        "a replica executes once prepared, without waiting for 2f+1 COMMITs (committed-local)",
        "§4.2",
        _replica("_check_committed", _committed_on_own_commit),
    ),
    Mutant(
        "pre-prepare-outside-watermarks",
        "a backup accepts a PRE-PREPARE whose n is not in (h, h+L]",
        "§4.2",
        _replica("_on_pre_prepare", _pre_prepare_ignoring_watermarks),
    ),
    Mutant(
        "second-pre-prepare-accepted",
        "a backup accepts a second PRE-PREPARE for (v, n) with another digest and votes again",
        "§4.2",
        _replica("_on_pre_prepare", _pre_prepare_latest_wins),
        gap="needs a twinned primary of view 1 whose two PRE-PREPAREs for one (v, n) reach a "
        "backup that hears both copies, in the view-1 phase (faults.verification.twins "
        "arrangements 842, "
        "844, 979 for n = 4 kill it); the explorer rarely twins replica 1",
    ),
    Mutant(
        "view-not-matched",
        "PREPAREs and COMMITs of an earlier view count toward the current view's quorums",
        "§4.2",
        _replica("_view_gate", _view_gate_ignoring_old_views)
        + _replica("_precheck_view", _precheck_view_ignoring_old_views),
    ),
    Mutant(
        "execute-out-of-order",
        "a committed batch executes without waiting for every lower sequence number",
        "§4.2",
        _replica("_execute_ready", _execute_without_waiting),
    ),
    Mutant(
        "checkpoint-stable-with-f-plus-1",
        "a checkpoint becomes stable on f+1 matching CHECKPOINTs instead of 2f+1",
        "§4.3",
        _replica("_record_checkpoint", _record_checkpoint_weak_quorum),
    ),
    Mutant(
        "view-change-timer-never-started",
        "a backup holding a request starts no timer, so it never suspects the primary",
        "§4.4",
        _replica("_start_request_timer", _no_request_timer),
    ),
    Mutant(
        "view-change-forgets-earlier-views",
        "P carries only the requests prepared in the view being left, not in earlier views",
        "§4.4",
        _replica("_start_view_change", _view_change_with_current_view_only),
    ),
    Mutant(
        "new-primary-ignores-prepared",
        "O is computed from V's checkpoints only: prepared certificates are ignored",
        "§4.4",
        (Patch(replica_view_change, "compute_new_view", _compute_new_view_ignoring_prepared),),
    ),
    Mutant(
        "null-requests-omitted",
        "O leaves the sequence numbers without a certificate empty instead of null requests",
        "§4.4",
        (Patch(replica_view_change, "compute_new_view", _compute_new_view_without_nulls),),
    ),
    Mutant(
        "lowest-view-certificate-wins",
        "for each n, O takes the request whose certificate has the lowest view, not the highest",
        "§4.4",
        (Patch(certificates, "_outranks", _outranks_lower_view),),
        gap="needs two view changes in a row with certificates of two views and two digests "
        "for one n: a request prepared only at a replica cut off during the change to v+1 "
        "(so O gives n a null or another request, which commits) that rejoins for v+2",
    ),
    Mutant(
        "new-primary-reuses-sequence-numbers",
        "the new primary numbers new requests from min-s+1 instead of max-s+1, over O",
        "§4.4",
        _replica("_enter_view", _enter_view_numbering_from_min_s),
    ),
    Mutant(
        "new-view-unchecked",
        "a backup accepts NEW-VIEW without checking its view, V, or that O follows from V",
        "§4.4",
        _replica("_on_new_view", _on_new_view_unchecked),
    ),
    Mutant(
        "new-view-o-compared-by-value",
        "a backup compares NEW-VIEW's O with the O it computes by decoded value, so the "
        "nested client signatures go unchecked (issue 8, hole 1)",
        "§4.4",
        _replica("_verify_new_view", _verify_new_view_by_value),
    ),
    Mutant(
        "view-change-shape-unchecked",
        "a VIEW-CHANGE of any shape and size is kept, its bad certificates dropped one by "
        "one, so NEW-VIEWs that carry it outgrow the frame limit (issue 8, hole 2)",
        "§4.4",
        (
            Patch(certificates, "view_change_shape_defect", _no_shape_defect),
            Patch(replica_view_change, "view_change_shape_defect", _no_shape_defect),
            Patch(Replica, "_precheck", _precheck_without_view_change_bound),
        ),
    ),
    Mutant(
        "verify-cache-keyed-by-payload",
        "the signature cache keeps whole payloads, so signed traffic pins memory beyond "
        "its bound (issue 8, hole 3)",
        "§2 (bounded resources)",
        (Patch(Authenticator, "verify", _verify_caching_payloads),),
    ),
    Mutant(
        "future-buffer-bounded-by-count",
        "the next view's buffer is bounded per sender in messages, not bytes (issue 8, hole 3)",
        "§2 (bounded resources)",
        _replica("_view_gate", _view_gate_by_count),
    ),
    Mutant(
        "checkpoint-proof-unverified",
        "a VIEW-CHANGE's stable checkpoint is believed without checking its 2f+1 proof",
        "§4.4",
        (Patch(replica_view_change, "check_view_change", _check_view_change_trusting_checkpoint),),
        # A rare kill: two in seeds 0-499 before the fast-read and digest-reply draws,
        # now seed 1,149 (agreement) and 1,659 (liveness) in 0-1,999.
        seeds=1200,
    ),
    Mutant(
        "read-executes-writes",
        "a replica answers a READ whatever its operation, so a write a client sent as a "
        "READ changes some replicas' state outside the order",
        "§5.1.3",
        _replica("_on_read", _read_executing_anything),
    ),
    Mutant(
        "fast-reads-with-weak-write-quorum",
        "with fast reads on, clients still accept f+1 matching replies for writes, so a "
        "later read's 2f+1 replies may all predate a completed write",
        "§5.1.3",
        (Patch(Client, "__init__", _client_with_weak_quorum),),
    ),
    Mutant(
        "digest-replies-trust-the-full-result",
        "with digest replies, a client takes the full result it holds once enough digests "
        "match, without checking that the result has their digest",
        "§5.1.1",
        (Patch(Client, "_full_result", _any_full_result),),
    ),
    Mutant(
        "read-trusted-on-any-channel",
        "a replica takes an unsigned READ on any authenticated channel, so a faulty replica "
        "can make the honest ones answer a client's outstanding write with a read's result",
        "§5.1.3",
        (Patch(Authenticator, "verify", _verify_trusting_any_channel),),
    ),
)


def mutant(name: str) -> Mutant:
    for candidate in MUTANTS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no mutant named {name!r}")


# -------------------------------------------------------------------------- running


@attrs.frozen
class Verdict:
    """What one seed found: the checkers it violated (``"crash"`` for an exception)."""

    seed: int
    checkers: tuple[str, ...]
    detail: str = ""

    @property
    def killed(self) -> bool:
        return bool(self.checkers)


def run_guarded(seed: int) -> Verdict:
    """Run one explorer seed; an exception inside the simulation is a ``crash``."""
    try:
        result = run_seed(seed)
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        detail = f"{type(error).__name__}: {error} ({where.filename}:{where.lineno})"
        return Verdict(seed, ("crash",), detail)
    checkers = tuple(dict.fromkeys(violation.checker for violation in result.violations))
    detail = result.violations[0].detail if result.violations else ""
    return Verdict(seed, checkers, detail)


def first_kill(seeds: Iterable[int]) -> Verdict | None:
    """The first seed with a violation, run in this process; None if none has one."""
    for seed in seeds:
        verdict = run_guarded(seed)
        if verdict.killed:
            return verdict
    return None


def verdicts(seeds: Iterable[int], jobs: int = 1) -> list[Verdict]:
    """Every seed's verdict, in seed order; ``jobs`` > 1 forks workers, which inherit the
    patches applied in this process."""
    seeds = list(seeds)
    if jobs <= 1 or len(seeds) <= 1:
        return [run_guarded(seed) for seed in seeds]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        found = pool.imap_unordered(run_guarded, seeds, chunksize=4)
        return sorted(found, key=lambda verdict: verdict.seed)
