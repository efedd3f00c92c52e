"""The scale-out figures that time other parts' own entry points over the run's log:
the projector catching up from offset 0, `audit verify`, and a controller planning turn
(bench/controller_plan.py's, with as many addressable adapters as the run has). Each is
off with its --skip flag: at 10^6 the first two take long."""

from __future__ import annotations

import argparse
import time

from bench import controller_plan
from bench.scale_figures import Figure, Run
from mint.audit.verify import verify
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from streams.projector.runner import Projector
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK

MILLION_ADAPTER_EVENTS = 3_000_000  # the 10^6-adapter log: what the time targets are for
PLAN_NODES = 50
PLAN_WANTED = 10_000  # as the issue asks at 10^6; a tenth of the adapters at smaller sizes
PLAN_WANTED_AT_LEAST = 20  # some wanted groups stay while others idle out


def projector_catch_up(run: Run) -> Figure:
    """The live projector (a new consumer group) from offset 0 of the whole log until it
    has caught up, into a prefix of its own."""
    sink = S3Sink(run.s3, run.topic, blobs_bucket=run.topic, prefix="projected/", kek=TEST_KEK)
    projector = Projector(run.kafka, run.topic, sink, group_id=f"{run.topic}-projector")
    quiet_s = 1.0  # how long it must find nothing new to stop: not projecting
    began = time.perf_counter()
    try:
        projector.run(stop_when_caught_up_s=quiet_s)
    finally:
        projector.close()
    seconds = time.perf_counter() - began - quiet_s
    return {
        "events": projector.applied,
        "seconds": round(seconds, 1),
        "events_per_s": round(projector.applied / seconds, 1),
        "seconds_for_3m_events": round(MILLION_ADAPTER_EVENTS * seconds / projector.applied),
        "objects_written": sink.written,
    }


def audit_verify(run: Run) -> Figure:
    """`audit verify` of the whole log: every chain, every blob a revision references."""
    log = KafkaEventLog(run.kafka, run.topic, run.layout.partitions, owned=())
    began = time.perf_counter()
    try:
        report = verify(log.read_all(), S3BlobStore(run.s3, run.topic, TEST_KEK))
    finally:
        log.close()
    seconds = time.perf_counter() - began
    return {
        "events": report.events,
        "streams": report.streams,
        "seconds": round(seconds, 1),
        "events_per_s": round(report.events / seconds),
        "seconds_for_3m_events": round(MILLION_ADAPTER_EVENTS * seconds / report.events),
        "blobs_checked": report.blobs_checked,
        "problems": len(report.problems),
    }


def controller_planning(run: Run) -> Figure:
    """Steady planning turns with the run's number of adapters addressable, a tenth of
    them (at most 10^4) wanted, over 50 simulated nodes, 1% of the wanted replaced each
    turn; and the controller's memory as wants come and go."""
    adapters = run.layout.adapters
    wanted = max(PLAN_WANTED_AT_LEAST, min(PLAN_WANTED, adapters // 10))
    churn, idle_s = max(1, wanted // 100), 10.0
    # Every turn asks for `churn` groups never asked for: stop before they run out.
    asked_first = wanted - int(churn * idle_s / 2) + churn * int(idle_s)
    turns = min(run.options.plan_turns, (adapters - asked_first) // churn)
    if turns < 1:
        raise ValueError(f"{adapters} adapters are too few to plan turns with {wanted} wanted")
    plan = controller_plan.Run(
        argparse.Namespace(
            addressable=adapters,
            wanted=wanted,
            nodes=PLAN_NODES,
            budget_mib=8192,
            turns=turns,
            churn=churn,
            idle_s=idle_s,
        )
    )
    first = plan.first_turn()
    steady, wanted_counts, _ = plan.steady_turns()
    return {
        "addressable": adapters,
        "wanted": [min(wanted_counts), max(wanted_counts)],
        "turns": turns,
        "groups_in_all": plan.demand.started,
        "first_turn_ms": round(first.wall[0], 1),
        **steady.summary(),
        "rss_mib": {stage: round(mib) for stage, mib in plan.rss.items()},
    }
