"""The fleet as reports describe it (pure): liveness, holders and failed loads."""

from __future__ import annotations

from mint.backends.kafka_residency import to_proto
from mint.serving.fleet import FleetView
from mint.serving.requests import RevisionRef
from mint.v1 import residency_pb2 as pb

REF = RevisionRef("id1", "acme/a", 1, "0" * 64, 1000, base_fingerprint="base-a")


def failed_on(node: str, base: str) -> pb.NodeReport:
    outcome = pb.LoadOutcome(
        kind=pb.LoadOutcome.FAILED, revision=to_proto(REF, facts=False), error=f"{node} failed"
    )
    return pb.NodeReport(node=node, base_fingerprint=base, outcomes=[outcome])


def test_only_a_failed_load_on_a_node_of_the_revisions_base_counts() -> None:
    fleet = FleetView()
    fleet.apply(failed_on("other", "base-b"))  # placed there by mistake: says nothing
    assert fleet.failure(REF) is None
    fleet.apply(failed_on("own", "base-a"))
    assert fleet.failure(REF) == "own failed"
