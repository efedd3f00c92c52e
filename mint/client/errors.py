"""What the clients raise: one exception class per gRPC status a MinT server answers with,
all under `MintError`, each keeping the server's message (what is wrong, and what to do).

    try:
        client.get_adapter("acme/tone")
    except mint.NotFound as exc:
        print(exc)            # the server's words: "adapter acme/tone does not exist"
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc


class MintError(Exception):
    """A MinT server refused or failed a call.

    `code` is the gRPC status, `message` the server's message. A command's error carries
    its `request_id`: sending the command again with that id is safe (the registry applies
    it at most once, and a retry answers with the first attempt's outcome)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    retryable = False  # the same call may succeed later (with the same request id)

    def __init__(
        self, message: str, code: grpc.StatusCode | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.request_id = request_id


class NotFound(MintError):
    """No such adapter, revision, channel or base model."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MintError):
    """The adapter's name is taken (names are never reused)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(MintError):
    """`expected_version` is stale: another command changed the adapter first. Read it
    again, decide again, and send the command with a new request id."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(MintError):
    """The adapter's state does not allow it (archived, a gate not passed, a base no node
    serves)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(MintError):
    """The token is valid but not for this tenant, or not an admin's."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(MintError):
    """No token, or one the server does not know (revoked, mistyped)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class InvalidArgument(MintError):
    """The request itself is malformed: a name, a shape, a file, a sampling setting."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ResourceExhausted(MintError):
    """Over a limit: an upload too large, the registry's transfer budgets or watches, a
    node's queue full for now (the message says which, and whether to retry later). The
    registry clients wait out a refusal for now themselves, for `retry_for_s`, before
    raising it."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(MintError):
    """The server could not do it now (a partition changing owner, Kafka or S3 lost, no
    node reporting). The clients retry these themselves for `retry_for_s`."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(MintError):
    """No answer within the call's timeout: a command may or may not have been applied,
    so send it again with the same request id to learn which."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class Cancelled(MintError):
    code = grpc.StatusCode.CANCELLED


class DataLoss(MintError):
    """Stored bytes no longer match their recorded sha256."""

    code = grpc.StatusCode.DATA_LOSS


_BY_CODE: dict[grpc.StatusCode, type[MintError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        Conflict,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        InvalidArgument,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        DataLoss,
    )
}


def from_rpc_error(exc: grpc.RpcError, request_id: str | None = None) -> MintError:
    """The `MintError` subclass for `exc`'s status (`MintError` itself for any other, such
    as INTERNAL), with the server's message."""
    code = exc.code()
    return _BY_CODE.get(code, MintError)(exc.details() or code.name, code, request_id)


@contextmanager
def raising_mint_errors(request_id: str | None = None) -> Iterator[None]:
    """Turns a gRPC error raised inside into its `MintError` (the original as its cause)."""
    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(exc, request_id) from exc
