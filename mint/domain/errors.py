"""Domain errors. The gRPC layer maps each class to one status code, in one place."""


class DomainError(Exception):
    """Base class; the message says what is wrong and, where useful, what to do."""


class InvalidArgument(DomainError):
    """The request itself is malformed (names, shapes, dtypes, sizes, ...)."""


class ResourceExhausted(InvalidArgument):
    """Over a limit: a size never accepted, or capacity in use right now, when
    `retry_after_s` says how long to wait before the same request may be taken."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


class Unauthenticated(DomainError):
    pass


class PermissionDenied(DomainError):
    pass


class FailedPrecondition(DomainError):
    """The state does not allow it (an archived adapter, an evaluation gate not passed)."""


class Erased(FailedPrecondition):
    """The adapter was erased: its weights are gone for good (its data key destroyed)."""


class VersionConflict(DomainError):
    """`expected_version` is stale: re-read the adapter and retry the command."""


class Unavailable(DomainError):
    """Retryable: this replica does not own the adapter's partition right now, or a
    server behind it (Kafka, S3) is unreachable. `owner`: where to retry, if known (the
    address of the replica that owns the partition)."""

    def __init__(self, message: str, owner: str = "") -> None:
        super().__init__(message)
        self.owner = owner


class DataLoss(DomainError):
    """Stored bytes no longer match their recorded sha256 (corruption or tampering)."""


class DeadlineExceeded(DomainError):
    """The work could not finish within the caller's deadline (the message says what)."""


class Cancelled(DomainError):
    """The caller went away (or asked to stop) before the work finished."""
