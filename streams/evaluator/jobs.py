"""What the evaluator owes an adapter: the (revision, platform gate) pairs that have no
platform verdict yet. Pure: decided from the adapter as the registry answers it."""

from __future__ import annotations

from dataclasses import dataclass

from mint.domain.gates import MEAN_LOGPROB, PLATFORM, THRESHOLD
from mint.v1 import registry_pb2 as pb


@dataclass(frozen=True)
class Job:
    ref: str  # tenant/name
    adapter_id: str
    revision: int
    suite: str
    examples_sha256: str
    threshold: float

    @property
    def request_id(self) -> str:
        """The same for every attempt at this verdict, by any evaluator replica: the
        registry appends it once however often it is recorded (redelivery, restarts)."""
        return (
            f"evaluator/{self.adapter_id}/{self.revision}/{self.suite}/"
            f"{self.examples_sha256[:16]}/{self.threshold!r}"
        )


def owed(adapter: pb.Adapter, revisions: list[int]) -> list[Job]:
    """Jobs for `revisions` of `adapter` under each distinct platform gate, less those
    already recorded (as the log shows them: the registry's answer)."""
    seen: set[Job] = set()
    jobs = []
    for channel in sorted(adapter.gate_rules):
        rule = adapter.gate_rules[channel]
        if rule.requirement != PLATFORM:
            continue
        for number in revisions:
            job = Job(
                f"{adapter.ref.tenant}/{adapter.ref.name}",
                adapter.adapter_id,
                number,
                rule.suite,
                rule.examples_sha256,
                rule.threshold,
            )
            if job not in seen and not _recorded(adapter, job):
                seen.add(job)
                jobs.append(job)
    return jobs


def _recorded(adapter: pb.Adapter, job: Job) -> bool:
    revision = adapter.revisions[job.revision - 1]
    return any(
        e.platform
        and e.suite == job.suite
        and e.dataset_fingerprint == job.examples_sha256
        and e.metrics.get(THRESHOLD) == job.threshold
        and MEAN_LOGPROB in e.metrics
        for e in revision.evaluations
    )
