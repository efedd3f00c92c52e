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


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, node: InferenceNode, metrics: NodeMetrics) -> None:
        self.node, self.metrics = node, metrics

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> pb.GenerateResponse:
        with self._observed("Generate"):
            done = self.node.generate(
                _permitted(request.adapters),
                request.prompt,
                wire.sampling(request.sampling),
                context.add_callback,  # a cancelled call leaves the batch at the next step
            )
            return pb.GenerateResponse(
                text=done.text,
                tokens=done.tokens,
                adapters=wire.resolved(done.parts),
                node=self.node.name,
                batch_size=done.batch_size,
            )

    def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateChunk]:
        with self._observed("GenerateStream"):
            parts, tokens = self.node.stream(
                _permitted(request.adapters),
                request.prompt,
                wire.sampling(request.sampling),
                context.add_callback,
            )
            first, text = True, TextStream(self.node.decode)
            for chunk in tokens:
                yield pb.GenerateChunk(
                    tokens=chunk,
                    text=text.add(chunk),  # held back while a character is incomplete
                    adapters=wire.resolved(parts) if first else [],
                    node=self.node.name if first else "",
                )
                first = False
            if rest := text.finish():  # the generation ended inside a character
                yield pb.GenerateChunk(text=rest)

    def Score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreResponse:
        with self._observed("Score"):
            parts, logprobs = self.node.score(
                _permitted(request.adapters), request.prompt, request.continuation
            )
            return pb.ScoreResponse(
                token_logprobs=logprobs,
                total_logprob=sum(logprobs),
                adapters=wire.resolved(parts),
                node=self.node.name,
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
