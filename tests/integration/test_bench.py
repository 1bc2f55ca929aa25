"""``pbft bench`` end to end: real replica processes, real clients, one JSON report."""

from __future__ import annotations

import json
import subprocess
import sys


def pbft(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbft", *args], capture_output=True, text=True, timeout=timeout
    )


def test_bench_reports_its_figures_against_the_same_run_ceiling() -> None:
    result = pbft("bench", "--json", "--clients", "3", "--duration", "2", "--warmup", "0.5",
                  "--batch", "4")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("throughput_ops", "latency_ms", "timeouts", "ceiling_ops", "efficiency",
                "cpu_ms_per_op", "batch_mean", "n", "f", "clients", "auth"):  # fmt: skip
        assert key in report, key
    assert (report["n"], report["f"], report["clients"], report["auth"]) == (4, 1, 3, "macs")
    assert report["operations"] > 0 and report["timeouts"] == 0
    assert report["throughput_ops"] > 0
    # Three closed-loop clients cannot fill more than three requests into a batch.
    assert 1 <= report["batch_mean"] <= 3
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    # The ceiling counts only part of the work: no run reaches it.
    assert 0 < report["efficiency"] < 1
    assert report["cpu_ms_per_op"]["replicas"] > 0 and report["cpu_ms_per_op"]["clients"] > 0
    # The largest replica's resident memory, sampled from the window's start to its end.
    timeline = report["rss_mb_timeline"]
    assert len(timeline) >= 2 and timeline[0][0] == 0 and timeline[-1][0] >= 2
    assert all(size > 10 for _, size in timeline)
    # Progress went to stderr, the report alone to stdout.
    assert "ceiling of the design" in result.stderr and "ops/s" in result.stderr
    assert len(result.stdout.strip().splitlines()) == 1


def test_bench_with_fast_reads_answers_reads_unordered() -> None:
    result = pbft("bench", "--json", "--clients", "2", "--duration", "2", "--warmup", "0.5",
                  "--reads", "0.5", "--protocol", "fast_reads=1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["reads"] == 0.5 and report["protocol"] == {"fast_reads": 1}
    assert report["operations"] > 0 and report["timeouts"] == 0
    # Half the operations took no part in a batch: two clients' writes alone fill them
    # (the window's edges can cut a batch, so a little below 1 is possible).
    assert 0.5 <= report["batch_mean"] <= 2


def test_bench_with_digest_replies_completes_reads_of_long_values() -> None:
    """Real processes: only the designated replier sends each 500-byte result."""
    result = pbft("bench", "--json", "--clients", "2", "--duration", "2", "--warmup", "0.5",
                  "--reads", "0.5", "--value-bytes", "500",
                  "--protocol", "digest_replies=1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["protocol"] == {"digest_replies": 1} and report["value_bytes"] == 500
    assert report["operations"] > 0 and report["timeouts"] == 0
    # Per request one full REPLY from the designated replier, digests from the others
    # (the first f+1 to arrive complete it, so some of either are never read).
    accepted = report["client_accepted"]
    assert accepted["REPLY"] > 0 and accepted["REPLY-DIGEST"] > 0


def test_bench_refuses_a_bad_option_in_one_line() -> None:
    for args, message in (
        (("--clients", "0"), "--clients must be at least 1"),
        (("--reads", "1.5"), "--reads must lie in [0, 1]"),
        (("--value-bytes", "5000"), "--value-bytes must lie in [0, 2048]"),
    ):
        result = pbft("bench", *args)
        assert result.returncode == 2
        assert result.stderr.strip() == f"pbft bench: error: {message}"


def test_bench_refuses_an_unknown_or_impossible_protocol_setting_in_one_line() -> None:
    for value, message in (
        ("nope=1", "--protocol nope: not a protocol setting"),
        ("batch_size", "--protocol 'batch_size': expected KEY=VALUE"),
        ("batch_size=x", "--protocol 'batch_size=x': the value must be an integer"),
        ("partial_batches_in_flight=9",
         "--protocol: partial_batches_in_flight must lie in [1, max_inflight_batches]"),
    ):  # fmt: skip
        result = pbft("bench", "--protocol", value)
        assert result.returncode == 2
        assert result.stderr.strip() == f"pbft bench: error: {message}"
