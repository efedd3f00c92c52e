"""The projector catch-up benchmark (bench/projector_catchup.py) at a tiny size against
the real Kafka and S3: both projections equal, every blob checked once by the audit."""

from __future__ import annotations

from bench import projector_catchup


def test_the_catch_up_is_measured_and_both_projections_agree(endpoints: dict[str, str]) -> None:
    figures = projector_catchup.measure(endpoints, adapters=12, concurrency=4)
    assert (figures["adapters"], figures["events"]) == (12, 36)
    # Per adapter: its catalog entry, manifest, revision file and `latest` pointer.
    assert figures["objects_projected"] >= 4 * 12
    assert figures["events_per_s_concurrency_1"] > 0 and figures["events_per_s_concurrency_4"] > 0
    assert figures["audit_verify_s"] > 0 and figures["audit_verify_with_projection_s"] > 0
