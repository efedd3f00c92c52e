"""The scale-out benchmark (bench/scale_out.py) at a tiny size against the real Kafka and
S3, as CI can run it: every figure is produced, and what must hold at any size holds."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bench import scale_out
from bench.scale_figures import Options, fill_topic
from bench.scale_paired import interleaved, paired_latency
from bench.scale_report import checks

TINY = Options(
    listed=30,
    commands=20,
    list_requests=3,
    clients=4,
    append_commands=40,
    settle_s=2.0,
    plan_turns=10,
    start_timeout_s=60.0,  # a replica that does not serve fails here, well before pytest's limit
)


@pytest.fixture(scope="module")
def figures(endpoints: dict[str, str]) -> dict[str, Any]:
    return scale_out.measure_size(endpoints, 50, TINY, keep=False)


def test_every_figure_is_measured(figures: dict[str, Any]) -> None:
    measured = {name: f for name, f in figures.items() if isinstance(f, dict)}
    assert {name: f["error"] for name, f in measured.items() if "error" in f} == {}
    later = ["projector_catch_up", "audit_verify", "controller_planning"]
    assert list(measured) == [name for name, _ in scale_out.WITH_REPLICAS] + later


def test_a_replica_starts_from_the_snapshots_its_first_start_wrote(figures: dict[str, Any]) -> None:
    assert figures["fill"]["events"] == 3 * 50 + 1  # and the base
    first = figures["first_start"]
    assert 0 < first["ready_s"] <= first["snapshots_written_s"]
    ready = figures["ready_from_snapshots"]
    assert ready["snapshots_used"] is True
    assert 0 < ready["rss_mib"] <= ready["peak_rss_mib"]


def test_commands_and_pages_are_timed(figures: dict[str, Any]) -> None:
    commands = figures["command_latency"]
    assert (commands["commands"], commands["not_applied"]) == (20, 0)
    assert 0 < commands["p50_ms"] <= commands["p99_ms"]
    listing = figures["list_adapters"]
    assert listing["adapters"] == 30
    assert listing["walk_each_once"] is True
    assert 0 < listing["p50_ms"] <= listing["p99_ms"]


def test_a_non_owner_refuses_and_writes_nothing(figures: dict[str, Any]) -> None:
    refused = figures["non_owner"]
    assert refused["asked"] == "first"  # for the partitions the second took
    assert refused["all_refused"] and refused["publish_refused"]
    assert refused["bucket_objects_before"] > 0
    assert refused["bucket_unchanged"] is True
    assert refused["read_answer"] == "OK" and refused["read_ms"] > 0


def test_the_second_replica_takes_some_partitions(figures: dict[str, Any]) -> None:
    joined = figures["second_replica"]
    assert joined["second_took_partitions"] is True
    assert 0 < len(joined["kept_partitions"]) < 6
    assert joined["during"]["commands"] > 0 and joined["steady"]["commands"] == 20
    assert figures["append_one_replica"]["registry_events_per_s"] > 0
    assert figures["append_two_replicas"]["registry_events_per_s"] > 0


def test_the_projector_and_verify_read_the_whole_log(figures: dict[str, Any]) -> None:
    projected, verified = figures["projector_catch_up"], figures["audit_verify"]
    assert verified["problems"] == 0
    assert verified["events"] == projected["events"] > 3 * 50
    assert verified["blobs_checked"] == 50  # one per adapter: blobs are sealed per adapter


def test_the_controller_plans_with_as_many_adapters_addressable(figures: dict[str, Any]) -> None:
    planning = figures["controller_planning"]
    assert planning["addressable"] == 50
    assert 0 < planning["wanted"][0] <= planning["wanted"][1] < 50
    assert planning["turns"] == 10
    assert planning["groups_in_all"] <= 50
    assert 0 < planning["wall_p50_ms"] <= planning["wall_p99_ms"]


def test_every_target_is_judged(figures: dict[str, Any]) -> None:
    judged = {c["label"]: c for c in checks({50: figures})}
    assert judged["snapshots used"]["met"] == "yes"
    assert judged["refused publish: bucket unchanged"]["met"] == "yes"
    assert judged["ready from snapshots"]["met"] == "n/a below 10⁶"  # stated for 10^6 only
    assert all(c["met"] in ("yes", "NO", "n/a", "n/a below 10⁶", "-") for c in judged.values())


def test_two_sizes_are_timed_side_by_side(endpoints: dict[str, str]) -> None:
    only_replicas = replace(TINY, projector=False, audit=False)  # no blobs to store
    with (
        scale_out.world(endpoints, 20, only_replicas, keep=False) as small,
        scale_out.world(endpoints, 40, only_replicas, keep=False) as large,
    ):
        fill_topic(small)
        fill_topic(large)
        found = paired_latency({20: small, 40: large}, commands=12, pages=4)
    for size in (20, 40):
        commands, pages = found[size]["commands"], found[size]["list_page"]
        assert (commands["commands"], commands["not_applied"], commands["failed_attempts"]) == (
            12,
            0,
            0,
        )
        assert 0 < commands["p50_ms"] <= commands["p99_ms"]
        assert pages["pages"] == 4 and 0 < pages["p50_ms"] <= pages["p99_ms"]
    judged = {c["label"]: c for c in checks({s: {"paired": f} for s, f in found.items()})}
    for label in ("command p50", "command p99", "ListAdapters page p99"):
        check = judged[f"{label}, side by side"]
        assert check["largest_vs_smallest"] > 0 and check["met"] in ("yes", "NO")


def test_each_round_reverses_the_order_of_the_sizes() -> None:
    calls: list[int] = []

    def call(size: int) -> int:
        calls.append(size)
        return size * 10

    found = interleaved([1, 2], 3, call)
    assert calls == [1, 2, 2, 1, 1, 2]
    assert found == {1: [10, 10, 10], 2: [20, 20, 20]}


def test_the_help_names_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        scale_out.parse_args(["--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name, _ in scale_out.WITH_REPLICAS)


def test_sizes_that_do_not_parse_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        scale_out.parse_args(["--sizes", "1e6"])
    assert "expected sizes like 1000,1000000" in capsys.readouterr().err
