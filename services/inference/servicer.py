"""The node's `Inference` servicer: protobuf in, InferenceNode call, protobuf out.
Errors are raised as domain errors; the interceptor turns them into statuses. A stream's
chunks carry the text their tokens complete, so their texts add up to `Generate`'s text.

Callers are checked as the router checks them: the interceptor authenticates the call (a
caller's own token, or the router's service token acting for the caller it names) and
each adapter's tenant must be one of the caller's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager

import grpc

from mint.rpc.interceptor import current_principal
from mint.rpc.observe import observed
from mint.serving import wire
from mint.serving.requests import Selector
from mint.serving.text_stream import TextStream
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc

from .metrics import NodeMetrics
from .node import InferenceNode
from .provenance import Provenances


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, node: InferenceNode, metrics: NodeMetrics, provenances: Provenances) -> None:
        self.node, self.metrics, self.provenances = node, metrics, provenances

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> pb.GenerateResponse:
        with self._observed("Generate"):
            sampling = wire.sampling(request.sampling)
            done = self.node.generate(
                _permitted(request.adapters),
                request.prompt,
                sampling,
                context.add_callback,  # a cancelled call leaves the batch at the next step
            )
            provenance = self.provenances.generated(
                "Generate", done.parts, request.prompt, done.prompt_tokens, sampling, done.tokens
            )
            return pb.GenerateResponse(
                text=done.text,
                tokens=done.tokens,
                adapters=wire.resolved(done.parts),
                node=self.node.name,
                batch_size=done.batch_size,
                provenance=provenance,
            )

    def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateChunk]:
        with self._observed("GenerateStream"):
            sampling = wire.sampling(request.sampling)
            streaming = self.node.stream(
                _permitted(request.adapters), request.prompt, sampling, context.add_callback
            )
            first, output, text = True, [], TextStream(self.node.decode)
            for chunk in streaming.tokens:
                yield pb.GenerateChunk(
                    tokens=chunk,
                    text=text.add(chunk),  # held back while a character is incomplete
                    adapters=wire.resolved(streaming.parts) if first else [],
                    node=self.node.name if first else "",
                )
                first = False
                output += chunk
            provenance = self.provenances.generated(
                "GenerateStream",
                streaming.parts,
                request.prompt,
                streaming.prompt_tokens,
                sampling,
                output,
            )
            # The output is complete: its provenance, and the end of a character the
            # generation stopped inside, if it did.
            yield pb.GenerateChunk(text=text.finish(), provenance=provenance)

    def Score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreResponse:
        with self._observed("Score"):
            scored = self.node.score(
                _permitted(request.adapters), request.prompt, request.continuation
            )
            provenance = self.provenances.scored(
                scored.parts,
                request.prompt,
                scored.prompt_tokens,
                request.continuation,
                scored.continuation_tokens,
                scored.logprobs,
            )
            return pb.ScoreResponse(
                token_logprobs=scored.logprobs,
                total_logprob=sum(scored.logprobs),
                adapters=wire.resolved(scored.parts),
                node=self.node.name,
                provenance=provenance,
            )

    def _observed(self, method: str) -> AbstractContextManager[None]:
        return observed(self.metrics.latency, self.metrics.requests, method)


def _permitted(adapters: Sequence[pb.AdapterSelector]) -> list[Selector]:
    """The request's adapters, if the caller may use each of them."""
    selectors = wire.selectors(adapters)
    principal = current_principal()
    for s in selectors:
        principal.require_tenant(s.adapter.tenant)
    return selectors
