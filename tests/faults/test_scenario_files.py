"""Scenario files are checked completely before anything runs, and every mistake is
reported as ``FILE:LINE: problem`` with the line the mistake is on."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.scenarios.document import (
    SCENARIO_PROTOCOL,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from faults.scenarios.workload import plan
from faults.traitors.behaviours import BEHAVIOURS
from pbft.cli import main

SCENARIOS = Path(__file__).parents[2] / "scripts" / "scenarios"

#: The shape the issue promises, verbatim.
EXAMPLE = """\
name = "equivocating primary on a lossy network"
f = 1                  # n = 3f+1 replicas unless `n` is given
seed = 7
[workload]
clients = 3
requests = 60          # in total, spread over the clients
keys = 5               # operations pick keys from key-0 .. key-4
mix = { put = 0.5, get = 0.35, delete = 0.05, cas = 0.1 }
[[traitor]]
replica = 0
behaviour = "equivocate"   # equivocate | lie | stall | mute | crash | replay | forge | flood
from_seq = 3               # optional triggers: from_seq, until_seq, from_view, until_view
targets = [1, 2]           # optional: which peers it treats differently
# several [[traitor]] tables for the same replica combine their behaviours
[[network]]
kind = "partition"         # partition | delay | loss | duplicate | reorder
groups = [[0, 1], [2, 3]]  # for partition; `links`, `ms`, `jitter_ms`, `rate` for the others
at_ms = 500
until_ms = 1500
[expect]
safe = true
live = true
view_change = true         # optional: a view change must (true) or must not (false) happen
"""

#: A small valid scenario that the error cases below break one line at a time.
BASE = """\
name = "base"
f = 1
[workload]
clients = 2
requests = 10
mix = { put = 1, get = 1 }
[[traitor]]
replica = 0
behaviour = "stall"
[[traitor]]
replica = 1
behaviour = "flood"
count = 3
[[network]]
kind = "delay"
ms = 5
[expect]
live = true
"""


def test_the_example_of_the_issue_parses_as_written() -> None:
    scenario = parse_scenario(EXAMPLE, "example.toml")
    assert (scenario.name, scenario.f, scenario.n, scenario.seed) == (
        "equivocating primary on a lossy network", 1, 4, 7,
    )  # fmt: skip
    assert scenario.workload.clients == 3 and scenario.workload.requests == 60
    assert dict(scenario.workload.mix) == {"put": 0.5, "get": 0.35, "delete": 0.05, "cas": 0.1}
    (traitor,) = scenario.traitors
    assert traitor.replica == 0 and traitor.behaviour == "equivocate"
    assert traitor.trigger.from_seq == 3 and traitor.trigger.targets == {1, 2}
    assert traitor.line == 9
    assert scenario.network == ({"kind": "partition", "groups": [[0, 1], [2, 3]],
                                 "at_ms": 500, "until_ms": 1500},)  # fmt: skip
    assert scenario.expect == {"safe": True, "live": True, "view_change": True}


def test_defaults() -> None:
    """n = 3f+1; safety is always expected unless the file says otherwise; nothing else is."""
    scenario = parse_scenario("f = 2\n", "defaults.toml")
    assert scenario.n == 7 and scenario.name == "defaults" and scenario.seed == 0
    assert scenario.expect == {"safe": True}
    assert scenario.workload.requests >= 1 and scenario.workload.timeout_s == 10
    assert scenario.duration_limit_s == 60
    assert scenario.protocol_settings() == dict(SCENARIO_PROTOCOL)


def test_several_tables_for_one_replica_combine_in_order() -> None:
    text = BASE.replace("count = 3\n", 'count = 3\n[[traitor]]\nreplica = 1\nbehaviour = "lie"\n'
                        'what = "result"\n')  # fmt: skip
    scenario = parse_scenario(text)
    assert scenario.traitor_ids == [0, 1]
    assert [type(b).__name__ for b in scenario.behaviours_of(1)] == ["Flood", "Lie"]
    assert scenario.behaviours_of(1)[1].what == "result"
    assert scenario.behaviours_of(2) == []


def test_more_than_f_traitors_is_allowed_but_not_fewer_than_3f_plus_1_replicas() -> None:
    text = BASE.replace("replica = 1", "replica = 3")
    assert parse_scenario(text.replace("f = 1", "f = 0\nn = 4")).traitor_ids == [0, 3]
    with pytest.raises(ScenarioError, match=r"^x.toml:3: n = 3 replicas cannot tolerate f = 1"):
        parse_scenario(BASE.replace("f = 1", "f = 1\nn = 3"), "x.toml")


def test_byzantine_clients_take_the_next_ids_or_the_one_given() -> None:
    text = (
        BASE + '[[byzantine_client]]\nmode = "split"\n[[byzantine_client]]\nmode = "impersonate"\n'
    )
    scenario = parse_scenario(text)
    assert [spec.client for spec in scenario.byzantine_clients] == [2, 3]
    assert scenario.honest_clients == [0, 1] and scenario.total_clients == 4
    chosen = parse_scenario(BASE + '[[byzantine_client]]\nmode = "split"\nclient = 0\n')
    assert chosen.honest_clients == [1, 2]


# Each case: (what to replace in BASE, with what, the line reported, a part of the message).
ERRORS = {
    "unknown top-level key": ("f = 1\n", "f = 1\ncolour = 3\n", 3, "unknown key 'colour'"),
    "unknown workload key": ("requests = 10\n", "requests = 10\nspeed = 3\n", 6, "'speed'"),
    "unknown operation": ("get = 1 }", "fly = 1 }", 6, "unknown key 'fly' in the operation mix"),
    "negative weight": ("get = 1 }", "get = -1 }", 6, "weight of get must be a number >= 0"),
    "weights of zero": ("{ put = 1, get = 1 }", "{ put = 0 }", 6, "add up to more than 0"),
    "no requests": ("requests = 10", "requests = 0", 5, "requests must be at least 1"),
    "no such replica": ("replica = 1\n", "replica = 4\n", 11, "replica 4 does not exist"),
    "no such behaviour": ('"flood"', '"sulk"', 12, "unknown behaviour 'sulk'"),
    "no such parameter": ("count = 3\n", "count = 3\nloud = 2\n", 14, "unknown key 'loud'"),
    "parameter type": ("count = 3", 'count = "many"', 13, "count must be int"),
    "empty seq window": ("count = 3\n", "count = 3\nfrom_seq = 5\nuntil_seq = 5\n", 15,
                         "until_seq (5) must be above from_seq (5)"),
    "empty time window": ("count = 3\n", "count = 3\nat_ms = 9\nuntil_ms = 9\n", 15,
                          "until_ms (9) must be above at_ms (9)"),
    "empty view window": ("count = 3\n", "count = 3\nuntil_view = 0\n", 14,
                          "until_view (0) must be above from_view (0)"),
    "after the end": ("count = 3\n", "count = 3\nat_ms = 70000\n", 14, "would never happen"),
    "no such target": ("count = 3\n", "count = 3\ntargets = [1, 9]\n", 14,
                       "targets: replica 9 does not exist"),
    "no such message type": ("count = 3\n", 'count = 3\ntypes = ["prepare", "gossip"]\n', 14,
                             "unknown message type 'GOSSIP'"),
    "unknown network key": ("ms = 5\n", "ms = 5\nspeed = 1\n", 17, "'speed' in [[network]]"),
    "unknown network kind": ('"delay"', '"teleport"', 15, "unknown network fault kind"),
    "network window": ("ms = 5\n", "ms = 5\nat_ms = 100\nuntil_ms = 50\n", 18,
                       "until_ms (50) must be above at_ms (100)"),
    "network group": ('kind = "delay"\nms = 5', 'kind = "partition"\ngroups = [[0], [2, 7]]', 16,
                      "replica 7 does not exist"),
    "network link": ("ms = 5\n", "ms = 5\nlinks = [[0, 5]]\n", 17, "replica 5 does not exist"),
    "network rate": ('kind = "delay"\nms = 5', 'kind = "loss"\nrate = 2.0', 16,
                     "rate must be a probability"),
    "network parameter": ("ms = 5\n", "ms = 5\nrate = 0.5\n", 17, "'rate' does not apply"),
    "unknown expectation": ("live = true\n", "live = true\nfast = true\n", 19, "'fast'"),
    "expectation type": ("live = true", 'live = "yes"', 18, "live must be true or false"),
    "protocol key": ("f = 1\n", "f = 1\n[protocol]\nbatchsize = 4\n", 4, "'batchsize'"),
    "protocol value": ("f = 1\n", "f = 1\n[protocol]\nlog_window = 12\n", 4,
                       "log_window must be a multiple of checkpoint_interval"),
    "client mode": ("[expect]", '[[byzantine_client]]\nmode = "sneaky"\n[expect]', 18,
                    "unknown Byzantine client mode 'sneaky'"),
    "no such client": ("[expect]", '[[byzantine_client]]\nmode = "split"\nclient = 3\n[expect]',
                       19, "client 3 does not exist"),
    "selective client": ("count = 3\n", 'count = 3\n[[traitor]]\nreplica = 2\nbehaviour = '
                         '"selective"\nclients = [0, 5]\n', 17, "entry 2 (5) is not a client id"),
    "missing f": ("f = 1\n", "", 1, "missing key f"),
    "missing behaviour": ('behaviour = "flood"\n', "", 10, "missing key behaviour"),
    "not an array of tables": ("[[network]]", "[network]", 14, "[[network]] tables"),
    "bad TOML": ("count = 3", "count = = 3", 13, "not valid TOML"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_mistakes_are_refused_with_the_line_they_are_on(case: str) -> None:
    old, new, line, message = ERRORS[case]
    assert old in BASE
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(BASE.replace(old, new, 1), "broken.toml")
    text = str(caught.value)
    assert text.startswith(f"broken.toml:{line}: "), text
    assert message in text
    assert "\n" not in text


def test_a_key_is_found_in_the_right_table_of_several() -> None:
    """The third [[traitor]] table's `targets`, not the first table's."""
    text = "f = 1\n" + "".join(
        f"[[traitor]]\nreplica = {i}\nbehaviour = 'mute'\ntargets = [{9 if i == 2 else 1}]\n"
        for i in range(3)
    )
    with pytest.raises(ScenarioError, match=r"^s.toml:13: targets: replica 9 does not exist"):
        parse_scenario(text, "s.toml")


def test_a_header_inside_a_multi_line_string_is_not_a_table() -> None:
    text = (
        'description = """\n[[traitor]]\n"""\nf = 1\n[[traitor]]\nreplica = 7\nbehaviour = "mute"\n'
    )
    with pytest.raises(ScenarioError, match=r"^s.toml:6: replica 7 does not exist"):
        parse_scenario(text, "s.toml")


def test_a_missing_file_is_reported_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nothing.toml:1: cannot read the scenario"):
        load_scenario(tmp_path / "nothing.toml")


def test_the_workload_plan_depends_on_the_seed_only() -> None:
    workload = parse_scenario(EXAMPLE).workload
    first, again = plan(workload, [0, 1, 2], 7), plan(workload, [0, 1, 2], 7)
    assert first == again and first != plan(workload, [0, 1, 2], 8)
    assert sorted(len(operations) for operations in first.values()) == [20, 20, 20]
    operations = [op for ops in first.values() for op in ops]
    assert {op.op for op in operations} == {"put", "get", "delete", "cas"}
    assert all(op.key in {f"key-{k}" for k in range(5)} for op in operations)
    for op in operations:
        if op.op == "cas":
            assert isinstance(op.value, list) and len(op.value) == 2
        elif op.op in ("get", "delete"):
            assert op.value is None


# ------------------------------------------------------------------ the scripted ones


def scripted() -> list[Path]:
    return sorted(SCENARIOS.glob("*.toml"))


def test_every_scripted_scenario_validates_and_has_a_unique_name() -> None:
    scenarios = [load_scenario(path) for path in scripted()]
    names = [scenario.name for scenario in scenarios]
    assert len(names) == len(set(names))
    for path, scenario in zip(scripted(), scenarios, strict=True):
        assert path.read_text().startswith("#"), f"{path.name} should open with a comment"
        assert scenario.workload.requests <= 60, f"{path.name}: keep scenarios short"


def test_there_is_a_scenario_for_each_behaviour_and_for_each_story() -> None:
    names = {path.stem for path in scripted()}
    assert set(BEHAVIOURS) <= names
    for behaviour in BEHAVIOURS:
        scenario = load_scenario(SCENARIOS / f"{behaviour}.toml")
        assert behaviour in {traitor.behaviour for traitor in scenario.traitors}
    stories = {
        "equivocating-primary", "stalled-primary-lying-backup",
        "crashed-replicas-healing-partition", "replay-during-view-change",
        "f-plus-one-breaks-safety",
    }  # fmt: skip
    assert stories <= names
    unsafe = load_scenario(SCENARIOS / "f-plus-one-breaks-safety.toml")
    assert len(unsafe.traitor_ids) == unsafe.f + 1 and unsafe.expect["safe"] is False


# ------------------------------------------------------------------ the command line


def test_pbft_scenario_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["scenario", "check", str(SCENARIOS / "mute.toml")]) == 0
    assert "ok" in capsys.readouterr().out
    broken = tmp_path / "broken.toml"
    broken.write_text(BASE.replace("replica = 1", "replica = 4"))
    assert main(["scenario", "check", str(broken)]) == 2
    assert main(["scenario", "run", str(broken)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"{broken}:11: replica 4 does not exist (replicas are 0..3)"] * 2
