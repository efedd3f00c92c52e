"""Domain errors as OpenAI's error responses: the HTTP status OpenAI's clients act on, and
the body `{"error": {"message", "type", "param", "code"}}`. Retryable ones (429, 503)
carry `Retry-After`, which OpenAI's clients honour."""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import JSONResponse

from mint.domain import errors

log = logging.getLogger(__name__)
RETRY_AFTER_S = 1

# By the error's class, the most specific first found along its MRO.
HTTP: dict[type[errors.DomainError], tuple[int, str]] = {
    errors.Unauthenticated: (401, "authentication_error"),
    errors.PermissionDenied: (403, "permission_error"),
    errors.NotFound: (404, "not_found_error"),
    errors.ResourceExhausted: (429, "rate_limit_error"),  # a node's queue is full
    errors.InvalidArgument: (400, "invalid_request_error"),
    errors.FailedPrecondition: (400, "invalid_request_error"),  # e.g. a base no node serves
    errors.AlreadyExists: (409, "invalid_request_error"),
    errors.VersionConflict: (409, "invalid_request_error"),
    errors.Unavailable: (503, "service_unavailable"),
    errors.DeadlineExceeded: (503, "service_unavailable"),  # a cold start: placed, retry
    errors.Cancelled: (503, "service_unavailable"),
    errors.DataLoss: (500, "server_error"),
}
INTERNAL = (500, "server_error")


def status_of(exc: Exception) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in HTTP:
            return HTTP[cls]
    return INTERNAL


def error_body(exc: Exception) -> dict[str, Any]:
    """The body for `exc`; an unexpected one is logged in full and described only as
    internal (a bug on our side)."""
    _, kind = status_of(exc)
    if isinstance(exc, errors.DomainError):
        message, code = str(exc), _code(type(exc))
    else:
        log.error("unexpected error", exc_info=exc)
        message, code = "internal error; the server log has the details", "internal"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_response(exc: Exception) -> JSONResponse:
    status, _ = status_of(exc)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(exc), status_code=status, headers=headers)


def _code(cls: type[errors.DomainError]) -> str:
    """`NotFound` → `not_found`: the status name MinT's gRPC API gives."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in cls.__name__).lstrip("_")
