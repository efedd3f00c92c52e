"""The router's OpenAI-compatible HTTP API (Starlette): `/v1/completions`,
`/v1/chat/completions` (whole, or streamed as server-sent events) and `/v1/models`.

Callers authenticate with the router's bearer tokens (`Authorization: Bearer <token>`,
the tokens file the gRPC API reads). Requests become `GenerateRequest`s and go through
the same `Router` as gRPC calls (resolution, placement, cold starts, the nodes), on
worker threads: the router's calls block. A stream's chunks carry the text their tokens
complete (the node cuts it from the whole sequence's decode), so a streamed text equals
the unstreamed one. Errors before the first token are OpenAI error responses with their
HTTP status; one after it ends the stream with an error event, as OpenAI's API does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from transformers import PreTrainedTokenizerFast

from mint import logs
from mint.catalog.projection import ListedObjects
from mint.domain.errors import InvalidArgument
from mint.rpc.auth import TokenTable
from mint.v1 import inference_pb2 as pb

from ..metrics import RouterMetrics
from ..servicer import Caller, Router
from .chat import chat_prompt
from .errors import error_body, error_response
from .models import listed_models
from .replies import DONE, Reply, event, finish_reason
from .schema import ChatRequest, CompletionRequest, parse

T = TypeVar("T")
WORKERS = 64  # threads for the router's blocking calls: requests wait on cold starts
MAX_BODY_BYTES = 4 * 1024 * 1024


class OpenAIApi:
    def __init__(
        self,
        router: Router,
        tokens: TokenTable,
        projection: ListedObjects,
        tokenizer: PreTrainedTokenizerFast,
        metrics: RouterMetrics,
    ) -> None:
        self.router, self.tokens, self.tokenizer = router, tokens, tokenizer
        self.projection = projection  # what /v1/models lists
        self.metrics = metrics
        self._limiter: anyio.CapacityLimiter | None = None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/completions", self._counted(self.completions), methods=["POST"]),
                Route(
                    "/v1/chat/completions", self._counted(self.chat_completions), methods=["POST"]
                ),
                Route("/v1/models", self._counted(self.models), methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_error},
        )

    def _counted(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def counted(request: Request) -> Response:
            # The caller's x-request-id (else a new one) on this request's lines and the
            # node's, as the gRPC interceptor does for RPCs; worker threads copy the context.
            with logs.request_scope(logs.request_id_of(request.headers.get("x-request-id"))):
                response = await endpoint(request)
            self.metrics.http_requests.labels(request.url.path, response.status_code).inc()
            return response

        return counted

    async def completions(self, request: Request) -> Response:
        try:
            caller = self._caller(request)
            body = parse(CompletionRequest, await _body(request))
            reply = Reply("completion", body.model)
            return await self._answer(reply, body.generate_request(), caller, bool(body.stream))
        except Exception as exc:
            return error_response(exc)

    async def chat_completions(self, request: Request) -> Response:
        try:
            caller = self._caller(request)
            body = parse(ChatRequest, await _body(request))
            prompt = chat_prompt(body.messages, self.tokenizer)
            reply = Reply("chat", body.model)
            generate = body.generate_request(prompt)
            return await self._answer(reply, generate, caller, bool(body.stream))
        except Exception as exc:
            return error_response(exc)

    async def models(self, request: Request) -> Response:
        """The adapters of the caller's tenants."""
        try:
            principal = self._caller(request).principal
            listed = await self._blocking(
                listed_models, self.projection, principal, self.router.catalog.is_erased
            )
            return JSONResponse({"object": "list", "data": listed})
        except Exception as exc:
            return error_response(exc)

    # ---------------------------------------------------------------------------------

    def _caller(self, request: Request) -> Caller:
        header = request.headers.get("authorization")
        metadata = [] if header is None else [("authorization", header)]
        return Caller(self.tokens.authenticate(metadata))

    async def _answer(
        self, reply: Reply, request: pb.GenerateRequest, caller: Caller, stream: bool
    ) -> Response:
        if not stream:
            done = await self._blocking(self.router.generate, request, caller)
            finish = finish_reason(len(done.tokens), request.sampling)
            return JSONResponse(reply.whole(done.text, finish))
        chunks = self.router.generate_stream(request, caller)
        first = await self._blocking(next, chunks, None)  # errors up to here: a status
        events = self._events(reply, request.sampling, first, chunks)
        return StreamingResponse(events, media_type="text/event-stream")

    async def _events(
        self,
        reply: Reply,
        sampling: pb.Sampling,
        first: pb.GenerateChunk | None,
        chunks: Iterator[pb.GenerateChunk],
    ) -> AsyncIterator[str]:
        try:
            if (opening := reply.opening()) is not None:
                yield event(opening)
            tokens, chunk = 0, first
            while chunk is not None:
                tokens += len(chunk.tokens)
                if chunk.text:
                    yield event(reply.piece(chunk.text))
                chunk = await self._blocking(next, chunks, None)
            yield event(reply.closing(finish_reason(tokens, sampling)))
            yield DONE
        except Exception as exc:  # the status was sent with the first token
            yield event(error_body(exc))
        finally:  # ended, failed or the client went away: stop the node's generation
            with anyio.CancelScope(shield=True):
                await self._blocking(_close, chunks)

    async def _blocking(self, call: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:  # made in the server's event loop
            self._limiter = anyio.CapacityLimiter(WORKERS)
        return await anyio.to_thread.run_sync(call, *args, limiter=self._limiter)


def _close(chunks: Iterator[pb.GenerateChunk]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


async def _body(request: Request) -> bytes:
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise InvalidArgument(f"the request body is over {MAX_BODY_BYTES} bytes")
    return bytes(body)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods, in OpenAI's error shape too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    message = f"{request.method} {request.url.path}: {detail}"
    body = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return JSONResponse({"error": body}, status_code=status)
