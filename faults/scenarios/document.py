"""Scenario files: a whole fault-injection experiment in one TOML file.

Theory of operation
-------------------
A scenario says how big the cluster is (``f``, optionally ``n``), what the
clients do (``[workload]``), who lies and how (``[[traitor]]``), what the
network does over time (``[[network]]``), which clients misbehave
(``[[byzantine_client]]``) and what must come out (``[expect]``). The file is
read once, checked completely (:mod:`faults.scenarios.parser`), and turned
into a frozen :class:`Scenario`; :func:`run_scenario` runs it on a real Trio
cluster over loopback TCP (:mod:`faults.scenarios.runner`) and returns the report
described in :mod:`faults.scenarios.report`.

Everything a file can get wrong is refused before anything runs, with a
:class:`ScenarioError` whose message starts with ``FILE:LINE:``. More than f
traitors is allowed on purpose: a scenario that exceeds the 3f+1 bound shows
that the bound is tight (and that the checker notices). See
``docs/faults.md`` for the format, key by key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from faults.traitors.base import Behaviour, Trigger
from faults.traitors.behaviours import make_behaviour

if TYPE_CHECKING:
    from faults.scenarios.report import Report

#: Protocol settings a scenario starts from (a ``[protocol]`` table overrides them):
#: quick view changes and frequent checkpoints, so short runs exercise both.
SCENARIO_PROTOCOL: Mapping[str, int] = {
    "view_change_timeout_ticks": 600,
    "checkpoint_interval": 8,
    "log_window": 16,
}
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_DURATION_LIMIT_S = 60.0
TRIGGER_KEYS = ("from_seq", "until_seq", "from_view", "until_view", "at_ms", "until_ms")


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message is one line, ``FILE:LINE: problem``."""


# ------------------------------------------------------------------------ the model


@attrs.frozen
class TraitorTable:
    """One ``[[traitor]]`` table: a behaviour of one replica and when it applies."""

    replica: int
    behaviour: str
    trigger: Trigger
    params: Mapping[str, Any]
    line: int

    def build(self) -> Behaviour:
        return make_behaviour(self.behaviour, self.trigger, **self.params)

    def describe(self) -> str:
        settings = [f"{key}={value!r}" for key, value in self.params.items()]
        trigger = self.trigger
        for key in TRIGGER_KEYS:
            if getattr(trigger, key) is not None:
                settings.append(f"{key}={getattr(trigger, key)}")
        if trigger.types:
            settings.append(f"types={sorted(trigger.types)}")
        if trigger.targets:
            settings.append(f"targets={sorted(trigger.targets)}")
        return self.behaviour + (f"({', '.join(settings)})" if settings else "")


@attrs.frozen
class ByzantineClientSpec:
    """One ``[[byzantine_client]]`` table (see :mod:`faults.traitors.clients`)."""

    client: int
    mode: str
    requests: int


@attrs.frozen
class Workload:
    """What the honest clients do: ``requests`` operations in total, drawn from ``mix``."""

    clients: int = 2
    requests: int = 20
    keys: int = 5
    mix: tuple[tuple[str, float], ...] = (("put", 1.0),)
    timeout_s: float = DEFAULT_TIMEOUT_S


@attrs.frozen
class Scenario:
    """A checked scenario, ready for :func:`run_scenario`."""

    name: str
    f: int
    n: int
    seed: int = 0
    description: str = ""
    workload: Workload = Workload()
    protocol: Mapping[str, int] = attrs.field(factory=dict)
    traitors: tuple[TraitorTable, ...] = ()
    byzantine_clients: tuple[ByzantineClientSpec, ...] = ()
    #: ``[[network]]`` tables as written; checked, and rebuilt per replica with its seed.
    network: tuple[Mapping[str, Any], ...] = ()
    #: Expectation name -> expected value; names not given are not checked.
    expect: Mapping[str, bool] = attrs.field(factory=dict)
    duration_limit_s: float = DEFAULT_DURATION_LIMIT_S
    source: str = "<scenario>"

    @property
    def traitor_ids(self) -> list[int]:
        return sorted({traitor.replica for traitor in self.traitors})

    @property
    def total_clients(self) -> int:
        return self.workload.clients + len(self.byzantine_clients)

    @property
    def honest_clients(self) -> list[int]:
        byzantine = {spec.client for spec in self.byzantine_clients}
        return [c for c in range(self.total_clients) if c not in byzantine]

    def protocol_settings(self) -> dict[str, int]:
        return {**SCENARIO_PROTOCOL, **self.protocol}

    def behaviours_of(self, replica: int) -> list[Behaviour]:
        """Fresh behaviours for one replica, in the order its tables were written."""
        return [spec.build() for spec in self.traitors if spec.replica == replica]


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; :class:`ScenarioError` names the line at fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ScenarioError(f"{path}:1: cannot read the scenario: {reason}") from None
    return parse_scenario(text, str(path))


def parse_scenario(text: str, filename: str = "<scenario>") -> Scenario:
    """Check a scenario given as TOML text; ``filename`` is only used in messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"at line ([0-9]+)", str(error))
        line = found[1] if found else "1"
        raise ScenarioError(f"{filename}:{line}: not valid TOML: {error}") from None
    from faults.scenarios.parser import check_document

    return check_document(document, text, filename)


def run_scenario(
    scenario: Scenario, seed: int | None = None, workdir: Path | None = None
) -> Report:
    """Run the scenario on a real Trio cluster and return its report (a JSON-ready dict).

    ``seed`` replaces the file's; ``workdir`` keeps the cluster folder, the
    databases and the replicas' logs there (default: a temporary directory).
    """
    from faults.scenarios.runner import run_scenario as run

    return run(scenario, seed, workdir)


async def run_scenario_async(
    scenario: Scenario, seed: int | None = None, workdir: Path | None = None
) -> Report:
    """:func:`run_scenario` inside a running Trio loop."""
    from faults.scenarios.runner import run_scenario_async as run

    return await run(scenario, seed, workdir)
