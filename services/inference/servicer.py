"""The node's `Inference` servicer: protobuf in, InferenceNode call, protobuf out.
Errors are raised as domain errors; the interceptor turns them into statuses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import grpc

from mint.rpc.observe import observed
from mint.serving import wire
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
                wire.selectors(request.adapters), request.prompt, wire.sampling(request.sampling)
            )
            self.metrics.batch_size.observe(done.batch_size)
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
                wire.selectors(request.adapters), request.prompt, wire.sampling(request.sampling)
            )
            first = True
            for chunk in tokens:
                yield pb.GenerateChunk(
                    tokens=chunk,
                    text=self.node.decode(chunk),
                    adapters=wire.resolved(parts) if first else [],
                    node=self.node.name if first else "",
                )
                first = False

    def Score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreResponse:
        with self._observed("Score"):
            parts, logprobs = self.node.score(
                wire.selectors(request.adapters), request.prompt, request.continuation
            )
            return pb.ScoreResponse(
                token_logprobs=logprobs,
                total_logprob=sum(logprobs),
                adapters=wire.resolved(parts),
                node=self.node.name,
            )

    def _observed(self, method: str) -> AbstractContextManager[None]:
        return observed(self.metrics.latency, self.metrics.requests, method)
