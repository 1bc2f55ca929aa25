"""The explorer must catch wrong protocols: each mutant of tests/verification/mutants.py
breaks one rule of Castro & Liskov, and some seed among the first 500 must show it.

A mutant is killed by any checker's violation (agreement, validity,
linearizability, liveness) or by an exception inside the simulation. Seeds run
in this process, in order, and stop at the first kill, so a mutant costs as
many runs as it takes to catch. Every mutant of the catalogue must be caught.

Some wrong variants are *known gaps*: the explorer's fault schedules do not
catch them yet, and each names the schedule it would need (its ``gap``). They
are not in the catalogue; ``python scripts/mutant_table.py`` measures them
with the rest, so that a gap closing shows up.
"""

from __future__ import annotations

import pytest

import pbft.certificates as certificates
import pbft.replica_view_change as replica_view_change
from faults.verification.explore import run_seed
from pbft.auth import Authenticator
from pbft.client import Client
from pbft.replica import Replica
from tests.verification.mutants import MUTANTS, Mutant, first_kill

#: Seeds a mutant gets before it counts as surviving (the issue's bound).
SEEDS = 500
#: Seeds the honest code runs without a single violation.
SANITY_SEEDS = 30

_PATCHED_NAMESPACES = (Replica, certificates, replica_view_change, Authenticator, Client)


def _namespaces() -> list[dict[str, object]]:
    return [dict(vars(namespace)) for namespace in _PATCHED_NAMESPACES]


#: The catalogue: every one must be caught within SEEDS seeds.
CATALOGUE = [mutant for mutant in MUTANTS if not mutant.gap]
KNOWN_GAPS = [mutant for mutant in MUTANTS if mutant.gap]


def test_the_catalogue_has_at_least_eight_mutants_each_naming_its_rule() -> None:
    names = [mutant.name for mutant in MUTANTS]
    assert len(set(names)) == len(names), "mutant names must be unique"
    assert len(CATALOGUE) >= 8
    for gap in KNOWN_GAPS:
        assert len(gap.gap) > 40, f"{gap.name}: say which schedule would catch it"
    for mutant in MUTANTS:
        assert mutant.rule and mutant.section.startswith("§"), mutant.name
        assert mutant.patches, mutant.name


def test_each_mutant_patches_its_rule_and_undo_restores_the_honest_code() -> None:
    honest = _namespaces()
    honest_handlers = dict(Replica._handlers)
    for mutant in MUTANTS:
        originals = {patch: getattr(patch.owner, patch.attribute) for patch in mutant.patches}
        with mutant.applied():
            for patch, original in originals.items():
                assert getattr(patch.owner, patch.attribute) is patch.replacement, mutant.name
                # A patched handler must also be what Replica dispatches to.
                for message_type, handler in honest_handlers.items():
                    if handler is original:
                        assert Replica._handlers[message_type] is patch.replacement
            assert _namespaces() != honest, mutant.name
        assert _namespaces() == honest, f"{mutant.name} left a patch behind"
        assert Replica._handlers == honest_handlers


def test_the_honest_code_passes_the_first_30_seeds() -> None:
    """Without a mutant, no checker complains: a kill below is the mutant's doing."""
    for seed in range(SANITY_SEEDS):
        result = run_seed(seed)
        assert not result.violations, (seed, [v.as_dict() for v in result.violations])


@pytest.mark.slow
@pytest.mark.parametrize("mutant", CATALOGUE, ids=[mutant.name for mutant in CATALOGUE])
def test_the_explorer_kills_the_mutant_within_500_seeds(mutant: Mutant) -> None:
    with mutant.applied():
        verdict = first_kill(range(mutant.seeds or SEEDS))
    assert verdict is not None, (
        f"{mutant.name} ({mutant.section}: {mutant.rule}) survived {mutant.seeds or SEEDS} seeds"
    )
    seeds_to_kill = verdict.seed + 1
    message = (
        f"{mutant.name}: killed after {seeds_to_kill} seeds (seed {verdict.seed}) by "
        f"{', '.join(verdict.checkers)}: {verdict.detail}"
    )
    print(message)
    assert seeds_to_kill <= (mutant.seeds or SEEDS), message
