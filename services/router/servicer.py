"""The router's application (`Router`) and its `Inference` servicer: check and resolve a
request, find (or wait for) a node holding all its adapters, and forward it there with
exact revisions, as the caller (the router's service token or client certificate, naming
the caller it acts for). The servicer and the OpenAI-compatible HTTP layer (`openai_api`)
both call `Router` with the caller they authenticated.

A request whose adapters are resident nowhere is a miss: the router reports it to the
controller at once and waits for a node to report them loaded, within the request's
deadline (or `cold_start_s`). A node that fails with UNAVAILABLE (killed, or the adapter
was just evicted) is set aside for a moment and the request goes elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from transformers import PreTrainedTokenizerFast

from mint import logs
from mint.domain.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)
from mint.registry import Principal
from mint.rpc.auth import on_behalf_of
from mint.rpc.interceptor import current_principal, domain_error
from mint.rpc.observe import observed
from mint.serving import wire
from mint.serving.catalog import Catalog
from mint.serving.fleet import NodeState
from mint.serving.placement import FILL, NodeCapacity, has_room
from mint.serving.requests import RevisionRef
from mint.tokenizer import tokenizer_fingerprint
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc

from .fleet_watch import DemandReporter, FleetWatch
from .metrics import RouterMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")
SUSPECT_S = 2.0  # how long a node that just failed is passed over
RETRYABLE = {grpc.StatusCode.UNAVAILABLE}
Request = pb.GenerateRequest | pb.ScoreRequest
Call = Callable[[Any, Request, dict[str, Any]], T]  # (stub, request, call options)


@dataclass(frozen=True)
class Caller:
    """Who a request is for, and the seconds it allows (None: it set no deadline, and
    gets `cold_start_s`)."""

    principal: Principal
    remaining_s: float | None = None


class Router:
    def __init__(
        self,
        catalog: Catalog,
        watch: FleetWatch,
        demand: DemandReporter,
        metrics: RouterMetrics,
        tokenizer: PreTrainedTokenizerFast,
        service_token: str | None,
        cold_start_s: float = 30.0,
        dial: Callable[[str], grpc.Channel] = grpc.insecure_channel,
    ) -> None:
        """`service_token` (None: none) and the channels `dial` opens (mutual TLS, or
        plaintext) are the router's credentials toward nodes."""
        self.catalog, self.watch, self.demand, self.metrics = catalog, watch, demand, metrics
        self.tokenizer, self.cold_start_s = tokenizer, cold_start_s
        self.tokenizer_fingerprint = tokenizer_fingerprint(tokenizer)
        self.service_token, self.dial = service_token, dial
        self._channels: dict[str, grpc.Channel] = {}
        self._suspects: dict[str, float] = {}
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    def generate(self, request: pb.GenerateRequest, caller: Caller) -> pb.GenerateResponse:
        wire.sampling(request.sampling)  # checked here: nothing is placed for a bad request
        with self._observed("Generate"):
            response: pb.GenerateResponse = self._forward(
                request, caller, lambda stub, req, kw: stub.Generate(req, **kw)
            )
            return response

    def score(self, request: pb.ScoreRequest, caller: Caller) -> pb.ScoreResponse:
        if not request.continuation:
            raise InvalidArgument("the continuation is empty")
        with self._observed("Score"):
            response: pb.ScoreResponse = self._forward(
                request, caller, lambda stub, req, kw: stub.Score(req, **kw)
            )
            return response

    def generate_stream(
        self, request: pb.GenerateRequest, caller: Caller
    ) -> Iterator[pb.GenerateChunk]:
        """Retried on another node only until the first token has been sent. A reader
        that stops early (closes the iterator) cancels the node's generation."""
        wire.sampling(request.sampling)
        with self._observed("GenerateStream"):
            first: list[pb.GenerateChunk] = []

            def start(stub: Any, req: Request, options: dict[str, Any]) -> Any:
                stream = stub.GenerateStream(req, **options)  # an iterator and a grpc.Call
                first.append(next(stream))  # errors before the first token are retryable
                return stream

            stream = self._forward(request, caller, start)
            try:
                yield first[0]
                yield from stream
            except grpc.RpcError as exc:
                raise _from_node(exc) from exc
            finally:
                stream.cancel()  # a call that ended is left as it is

    # ---------------------------------------------------------------------------------

    def _forward(self, request: Request, caller: Caller, call: Call[T]) -> T:
        deadline = self._deadline(caller)
        refs, exact = self._resolve(request, caller.principal, deadline)
        self.demand.note(refs)
        missed, first = False, True
        while True:
            nodes = self._candidates(refs)
            if not nodes:
                if not missed:
                    missed = True
                    self.metrics.misses.inc()
                    self.demand.missing(refs)
                    started = time.monotonic()
                nodes = self._wait(refs, deadline, started)
            elif first:
                self.metrics.hits.inc()
            first = False
            node = min(nodes, key=lambda n: self._in_flight[n.name])
            try:
                return self._call(node, exact, caller.principal, deadline, call)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or time.monotonic() >= deadline:
                    raise _from_node(exc) from exc
                self.metrics.retries.inc()
                with self._lock:
                    self._suspects[node.name] = time.monotonic() + SUSPECT_S

    def _resolve(
        self, request: Request, principal: Principal, deadline: float
    ) -> tuple[list[RevisionRef], Request]:
        """Checks in the order that costs nothing first; nothing is placed for a request
        that fails any of them."""
        selectors = wire.selectors(request.adapters)
        for s in selectors:
            principal.require_tenant(s.adapter.tenant)
        if not request.prompt:
            raise InvalidArgument("the prompt is empty")
        # No node reporting: wait a little (they may be restarting) before giving up.
        live = self.watch.wait_live(min(deadline, time.monotonic() + self.watch.view.silence_s))
        self.metrics.live_nodes.set(len(live))
        if not live:
            raise Unavailable("no inference node is reporting; check the nodes and retry")
        parts = [(self.catalog.resolve(s), s.weight) for s in selectors]
        refs = [r for r, _ in parts]
        self._check_prompt(request, _able_to_serve(refs, live))
        exact = type(request).FromString(request.SerializeToString())
        del exact.adapters[:]
        exact.adapters.extend(wire.exact(parts))
        return refs, exact

    def _check_prompt(self, request: Request, nodes: list[NodeState]) -> None:
        """Counted here only if every node that may serve it counts with the router's own
        tokenizer; otherwise the node that serves it counts (and refuses) it."""
        if any(n.tokenizer != self.tokenizer_fingerprint for n in nodes):
            return
        text = request.prompt + (
            request.continuation if isinstance(request, pb.ScoreRequest) else ""
        )
        count = len(self.tokenizer(text)["input_ids"])
        limit = min(n.max_prompt_tokens for n in nodes)
        if count > limit:
            raise InvalidArgument(
                f"the prompt has {count} tokens; the nodes accept at most {limit}"
            )

    def _candidates(self, refs: list[RevisionRef]) -> list[NodeState]:
        now = time.monotonic()
        with self._lock:
            return [n for n in self.watch.holding(refs) if self._suspects.get(n.name, 0) < now]

    def _wait(self, refs: list[RevisionRef], deadline: float, started: float) -> list[NodeState]:
        # Keep part of the deadline for the request itself once the adapters are in.
        until = deadline - min(1.0, 0.2 * (deadline - started))
        while True:
            self.watch.wait_for(refs, until)
            nodes = self._candidates(refs)  # holders that did not just fail a call
            if nodes or time.monotonic() >= until or self.watch.failure(refs):
                break
            time.sleep(0.05)  # every holder failed a moment ago: let the fleet view catch up
        self.metrics.cold_start.observe(time.monotonic() - started)
        if nodes:
            return nodes
        failure = self.watch.failure(refs)
        if failure:
            raise FailedPrecondition(f"a node could not load the adapters: {failure}")
        labels = ", ".join(r.label for r in refs)
        raise DeadlineExceeded(
            f"cold start: {labels} did not become resident on any node within the deadline "
            f"({time.monotonic() - started:.1f} s); placement was requested, so retry shortly "
            "or allow a longer deadline"
        )

    def _call(
        self,
        node: NodeState,
        request: Request,
        principal: Principal,
        deadline: float,
        call: Call[T],
    ) -> T:
        with self._lock:
            channel = self._channels.get(node.address)
            if channel is None:
                self._forget_gone_nodes()
                channel = self._channels[node.address] = self.dial(node.address)
            self._in_flight[node.name] += 1
        try:
            stub = inference_pb2_grpc.InferenceStub(channel)
            options = {
                "timeout": max(0.1, deadline - time.monotonic()),
                "metadata": [
                    *on_behalf_of(self.service_token, principal),
                    *logs.outgoing_metadata(),  # the node's lines carry the caller's id
                ],
            }
            return call(stub, request, options)
        finally:
            with self._lock:
                self._in_flight[node.name] -= 1
                if not self._in_flight[node.name]:
                    del self._in_flight[node.name]

    def _forget_gone_nodes(self) -> None:
        """Drop the channels to addresses no live node has (nodes restart on new
        addresses) and the suspicions that have passed, so neither grows with every node
        ever seen. A dropped channel is not closed: a call still on it (a node draining
        as it stops) keeps it until the call ends. Under the lock."""
        live = {n.address for n in self.watch.live()}
        for address in self._channels.keys() - live:
            del self._channels[address]
        now = time.monotonic()
        for name in [n for n, until in self._suspects.items() if until < now]:
            del self._suspects[name]

    def _deadline(self, caller: Caller) -> float:
        remaining = caller.remaining_s
        budget = self.cold_start_s if remaining is None else min(remaining, 600.0)
        return time.monotonic() + budget

    def _observed(self, method: str) -> AbstractContextManager[None]:
        return observed(self.metrics.latency, self.metrics.requests, method)


class RouterServicer(inference_pb2_grpc.InferenceServicer):
    """`mint.v1.Inference` over gRPC: the interceptor authenticated the caller."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> pb.GenerateResponse:
        return self.router.generate(request, _caller(context))

    def Score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreResponse:
        return self.router.score(request, _caller(context))

    def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateChunk]:
        return self.router.generate_stream(request, _caller(context))


def _caller(context: grpc.ServicerContext) -> Caller:
    return Caller(current_principal(), context.time_remaining())


def _able_to_serve(refs: list[RevisionRef], live: list[NodeState]) -> list[NodeState]:
    """The live nodes where the controller could place `refs` together: of their one
    base, with room for them all. None is a FailedPrecondition, said at once."""
    if not refs:
        return live
    labels = ", ".join(r.label for r in refs)
    bases = {r.base_fingerprint for r in refs}
    if len(bases) > 1:
        raise FailedPrecondition(
            f"{labels} were trained on different bases, so no node can serve them together; "
            "stack only adapters of one base"
        )
    (base,) = bases
    serving = [n for n in live if n.base_fingerprint == base]
    if not serving:
        served = ", ".join(sorted({n.base_fingerprint[:12] + "…" for n in live}))
        raise FailedPrecondition(
            f"{labels} {'was' if len(refs) == 1 else 'were'} trained on base {base[:12]}…, "
            f"which no node here serves (they serve {served})"
        )
    roomy = [n for n in serving if has_room(refs, NodeCapacity(n.name, n.budget_bytes, base))]
    if not roomy:
        size = sum(r.weights_size for r in set(refs))
        largest = max(n.budget_bytes for n in serving)
        raise FailedPrecondition(
            f"{labels} ({size} bytes together) fit on no node serving their base: the "
            f"largest adapter budget there is {largest} bytes, of which placement uses "
            f"{FILL:.0%}; stack fewer adapters, or add a node with a larger budget"
        )
    return roomy


def _from_node(exc: grpc.RpcError) -> DomainError:
    """A node's refusal as the router's own error. The router checked the caller itself,
    so a node that refuses the router's credentials is misconfigured: the caller hears
    UNAVAILABLE, not that its own token is bad, and the operator finds it in the log."""
    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
        log.error("a node refused the router's credentials: %s", exc.details())
        return Unavailable("a serving node refused the router's credentials; retry later")
    return domain_error(exc.code(), str(exc.details()))
