"""Replaying a served response from its record: the same prompt and sampling (the seed
that was used), on the same exact revisions with the same weights, through the serving
fleet (a router or a node), and comparing the outputs.

The replay names revisions, never channels, so it runs on the weights the original ran
on however far the channels have moved since (a node loads them by their sha256). What
else decides the numbers, the base, the engine and the node, is compared and reported:
an engine or device of another kind may compute other floats, so a different output is
then explained rather than a surprise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mint.domain.errors import FailedPrecondition
from mint.domain.events import RevisionPublished
from mint.eventlog.port import Recorded
from mint.v1 import inference_pb2 as pb
from mint.v1 import responses_pb2 as rpb

# Scores replayed on the same engine are computed alone, as the original was; this only
# absorbs printing-level noise, not another device's floats.
LOGPROB_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Outcome:
    response_id: str
    method: str
    same: bool
    original: list[Any]  # tokens, or log-probabilities for Score
    replayed: list[Any]
    replay_id: str  # the replay's own response id
    differences: list[str] = field(default_factory=list)  # of provenance, not output
    # Recorded revisions whose named log position does not hold their RevisionPublished.
    log_problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "response_id": self.response_id,
            "method": self.method,
            "same": self.same,
            "original": self.original,
            "replayed": self.replayed,
            "replay_id": self.replay_id,
            "differences": self.differences,
            "log_problems": self.log_problems,
        }

    def to_text(self) -> str:
        what = "log-probabilities" if self.method == "Score" else "tokens"
        verdict = "REPRODUCED" if self.same else "DIFFERENT"
        lines = [
            f"{verdict}: {self.response_id} ({self.method}) replayed as {self.replay_id}",
            f"  original {what}: {self.original}",
            f"  replayed {what}: {self.replayed}",
        ]
        lines += [f"  note: {d}" for d in self.differences]
        lines += [f"  PROBLEM {p}" for p in self.log_problems]
        return "\n".join(lines)


def exact_selectors(adapters: Sequence[pb.ResolvedAdapter]) -> list[pb.AdapterSelector]:
    """Each recorded adapter by its exact revision and weight."""
    return [
        pb.AdapterSelector(adapter=a.adapter, revision=a.revision, weight=a.weight)
        for a in adapters
    ]


def replay_request(record: rpb.ResponseRecord) -> pb.GenerateRequest | pb.ScoreRequest:
    adapters = exact_selectors(record.provenance.adapters)
    if record.method == "Score":
        return pb.ScoreRequest(
            adapters=adapters, prompt=record.prompt, continuation=record.continuation
        )
    if not record.sampling.HasField("seed"):
        raise FailedPrecondition("the record names no seed, so its sampling cannot be replayed")
    return pb.GenerateRequest(adapters=adapters, prompt=record.prompt, sampling=record.sampling)


def reproduce(record: rpb.ResponseRecord, stub: Any) -> Outcome:
    """Replay `record` through `stub` (an Inference stub whose calls carry the caller's
    credentials) and compare."""
    request = replay_request(record)
    if isinstance(request, pb.ScoreRequest):
        scored = stub.Score(request)
        original, replayed = list(record.token_logprobs), list(scored.token_logprobs)
        same = len(original) == len(replayed) and all(
            math.isclose(a, b, abs_tol=LOGPROB_TOLERANCE)
            for a, b in zip(original, replayed, strict=True)
        )
        provenance = scored.provenance
    else:
        generated = stub.Generate(request)
        original, replayed = list(record.output_tokens), list(generated.tokens)
        same, provenance = original == replayed, generated.provenance
    return Outcome(
        record.provenance.response_id,
        record.method,
        same,
        original,
        replayed,
        provenance.response_id,
        differences(record.provenance, provenance),
    )


def differences(original: pb.OutputProvenance, replay: pb.OutputProvenance) -> list[str]:
    """What differed between the two runs besides the output."""
    out = []
    if original.base_fingerprint != replay.base_fingerprint:
        out.append(
            f"base {replay.base_fingerprint[:12]}… served the replay, "
            f"{original.base_fingerprint[:12]}… the original"
        )
    before = [(a.adapter, a.revision, a.weights_sha256) for a in original.adapters]
    after = [(a.adapter, a.revision, a.weights_sha256) for a in replay.adapters]
    if before != after:
        out.append(f"adapters {after} served the replay, {before} the original")
    if original.engine_version != replay.engine_version:
        out.append(
            f"engine {replay.engine_version!r} served the replay, "
            f"{original.engine_version!r} the original"
        )
    if original.node != replay.node:  # expected on a fleet; said, not a problem
        out.append(f"node {replay.node} served the replay, {original.node} the original")
    return out


# (partition, offset) -> the event stored there, or None if there is none.
ReadAt = Callable[[int, int], Recorded | None]


def log_problems(adapters: Sequence[pb.ResolvedAdapter], read_at: ReadAt) -> list[str]:
    """Each adapter whose named log position does not hold the event that published its
    revision with those weights (a provenance that the log does not bear out)."""
    problems = []
    for a in adapters:
        label = f"{a.adapter}@{a.revision}"
        if not a.HasField("log_offset"):
            problems.append(f"{label}: the reply named no log position (an old projection)")
            continue
        where = f"partition {a.log_partition} offset {a.log_offset}"
        found = read_at(a.log_partition, a.log_offset)
        event = found.event if found is not None else None
        if (
            found is None
            or found.envelope.stream_id != a.adapter
            or not isinstance(event, RevisionPublished)
            or event.revision != a.revision
        ):
            problems.append(f"{label}: the log holds no RevisionPublished for it at {where}")
        elif event.weights_sha256 != a.weights_sha256:
            problems.append(
                f"{label}: the event at {where} published weights {event.weights_sha256[:12]}…, "
                f"the reply named {a.weights_sha256[:12]}…"
            )
    return problems
