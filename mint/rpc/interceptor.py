"""The one place where callers are authenticated and domain errors become gRPC statuses,
where the caller's deadline is handed to whatever waits on its behalf, and where the
call's request id is set for every line logged while serving it (`mint.logs`)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from mint import logs, tracing
from mint.client.retry import OWNER_METADATA, PUSHBACK_METADATA  # the clients read them
from mint.deadlines import caller_deadline
from mint.domain import errors
from mint.registry import Principal

from .tls import peer_names

log = logging.getLogger(__name__)

STATUS = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.VersionConflict: grpc.StatusCode.ABORTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
}

# (call metadata, names in the caller's verified client certificate) -> the caller
Authenticate = Callable[[Sequence[tuple[str, str | bytes]], frozenset[str]], Principal]
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    return _principal.get()


def _status(exc: errors.DomainError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


# Told of every call but health and reflection as it ends: method, status code, seconds.
ObserveCall = Callable[[str, str, float], None]


class DomainInterceptor(grpc.ServerInterceptor):
    """Authenticates every call but health and reflection (when given an `authenticate`)
    and turns exceptions into statuses; servicers just raise domain errors. `observe`
    hears how each call ended (metrics)."""

    def __init__(
        self, authenticate: Authenticate | None = None, observe: ObserveCall | None = None
    ) -> None:
        self.authenticate = authenticate
        self.observe = observe

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES):
            return handler
        method = details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(  # the only kind left: none goes unchecked
            self._streaming(handler.stream_stream, method),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _observed(self, method: str, code: grpc.StatusCode, started: float) -> None:
        if self.observe is not None:  # "/mint.v1.Registry/GetAdapter": "GetAdapter"
            self.observe(method.rsplit("/", 1)[-1], code.name, time.perf_counter() - started)

    def _authenticate(self, context: grpc.ServicerContext) -> None:
        if self.authenticate is not None:
            metadata = context.invocation_metadata()
            _principal.set(self.authenticate(metadata, peer_names(context)))

    def _unary(
        self, behaviour: Callable[[Any, Any], Any], method: str
    ) -> Callable[[Any, Any], Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            started, code = time.perf_counter(), grpc.StatusCode.OK
            with _call_scope(method, context, request):
                try:
                    self._authenticate(context)
                    with caller_deadline(context.time_remaining()):
                        return behaviour(request, context)
                except Exception as exc:
                    code = _code_of(exc)
                    _abort(context, exc)
                finally:
                    _note_if_late(context)
                    self._observed(method, code, started)

        return wrapped

    def _streaming(
        self, behaviour: Callable[[Any, Any], Iterator[Any]], method: str
    ) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, code = time.perf_counter(), grpc.StatusCode.OK
            with _call_scope(method, context, request):
                try:
                    self._authenticate(context)
                    with caller_deadline(context.time_remaining()):
                        yield from behaviour(request, context)
                except GeneratorExit:  # the caller stopped reading: cancelled or gone
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:
                    code = _code_of(exc)
                    _abort(context, exc)
                finally:
                    self._observed(method, code, started)

        return wrapped


def _code_of(exc: Exception) -> grpc.StatusCode:
    """The status `_abort` answers `exc` with."""
    return _status(exc) if isinstance(exc, errors.DomainError) else grpc.StatusCode.INTERNAL


@contextlib.contextmanager
def _call_scope(method: str, context: grpc.ServicerContext, request: Any) -> Iterator[None]:
    """The call's span (with --otel) and its request id, for all it does and logs: the
    caller's `x-request-id`, else the trace id, else the command's own request id (what
    its events and retries carry), else a new one."""
    metadata = context.invocation_metadata() or ()
    with tracing.rpc_span(method, metadata):
        sent = [v for k, v in metadata if k == logs.REQUEST_ID_METADATA]
        candidates = (*sent, tracing.current_trace_id(), getattr(request, "request_id", None))
        with logs.request_scope(logs.request_id_of(*candidates)):
            yield


def _note_if_late(context: grpc.ServicerContext) -> None:
    """Every wait is bounded by the caller's deadline, so an answer after it is a bug."""
    remaining = context.time_remaining()
    if remaining is not None and remaining < 0:
        log.warning("answered %.2f s after the caller's deadline", -remaining)


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    """Domain errors keep their status and message (back ends report their own outages as
    `Unavailable`). Anything else is a bug on our side: logged in full, and the caller
    gets a status without internals to report."""
    if isinstance(exc, errors.Unavailable) and exc.owner:
        context.set_trailing_metadata(((OWNER_METADATA, exc.owner),))
    if isinstance(exc, errors.ResourceExhausted) and exc.retry_after_s is not None:
        pushback_ms = str(round(exc.retry_after_s * 1000))
        context.set_trailing_metadata(((PUSHBACK_METADATA, pushback_ms),))
    if isinstance(exc, errors.DomainError):
        context.abort(_status(exc), str(exc))
    log.exception("unexpected error")
    context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


def domain_error(code: grpc.StatusCode, details: str) -> errors.DomainError:
    """A status received from another MinT server, as the domain error that maps back to
    it (so a proxy passes statuses through its own interceptor unchanged)."""
    for cls, status in STATUS.items():
        if status == code:
            error: errors.DomainError = cls(details)
            return error
    return errors.Unavailable(f"upstream failed ({code.name}): {details}")
