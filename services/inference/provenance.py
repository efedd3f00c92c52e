"""Each reply's provenance, and the record of the request under its response id.

A reply names the base, the exact revisions (with their revision events' log
positions), the node, the engine and the seed used, under a fresh response id; the
record adds what a replay needs (prompt and its tokens, sampling, the output) and goes to
the responses topic off the reply's path (`ResponseRecorder`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from mint.rpc.interceptor import current_principal
from mint.serving import wire
from mint.serving.provenance import new_response_id
from mint.serving.requests import RevisionRef, Sampling
from mint.v1 import inference_pb2 as pb
from mint.v1 import responses_pb2 as rpb

Parts = list[tuple[RevisionRef, float]]


class Recorder(Protocol):
    def record(self, response_id: str, value: bytes) -> None:
        """Send the record of `response_id` later; never blocks the caller."""


@dataclass(frozen=True)
class Stamp:
    """What every reply of this node names besides its output."""

    node: str
    engine_version: str
    base_fingerprint: str
    tokenizer_fingerprint: str


class Provenances:
    def __init__(self, stamp: Stamp, recorder: Recorder | None) -> None:
        """`recorder` None: replies name their provenance, and nothing is recorded."""
        self.stamp, self.recorder = stamp, recorder

    def generated(
        self,
        method: str,
        parts: Parts,
        prompt: str,
        prompt_tokens: list[int],
        sampling: Sampling,
        output: list[int],
    ) -> pb.OutputProvenance:
        provenance = self._new(parts, sampling.seed)
        record = self._record(provenance, method, prompt, prompt_tokens)
        record.sampling.CopyFrom(wire.sampling_message(sampling))
        record.output_tokens.extend(output)
        self._send(record)
        return provenance

    def scored(
        self,
        parts: Parts,
        prompt: str,
        prompt_tokens: list[int],
        continuation: str,
        continuation_tokens: list[int],
        logprobs: list[float],
    ) -> pb.OutputProvenance:
        provenance = self._new(parts, 0)
        record = self._record(provenance, "Score", prompt, prompt_tokens)
        record.continuation = continuation
        record.continuation_tokens.extend(continuation_tokens)
        record.token_logprobs.extend(logprobs)
        self._send(record)
        return provenance

    def _new(self, parts: Parts, seed: int) -> pb.OutputProvenance:
        s = self.stamp
        return pb.OutputProvenance(
            response_id=new_response_id(),
            node=s.node,
            engine_version=s.engine_version,
            base_fingerprint=s.base_fingerprint,
            adapters=wire.resolved(parts),
            seed=seed,
        )

    def _record(
        self, provenance: pb.OutputProvenance, method: str, prompt: str, prompt_tokens: list[int]
    ) -> rpb.ResponseRecord:
        record = rpb.ResponseRecord(
            provenance=provenance,
            method=method,
            principal=current_principal().name,
            tokenizer_fingerprint=self.stamp.tokenizer_fingerprint,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
        )
        record.served_at.CopyFrom(_now())
        return record

    def _send(self, record: rpb.ResponseRecord) -> None:
        if self.recorder is not None:
            self.recorder.record(record.provenance.response_id, record.SerializeToString())


def _now() -> Timestamp:
    now = Timestamp()
    now.GetCurrentTime()
    return now
