"""The exceptions longjobs raises, in one tree.

LongjobsError
├── ConfigurationError        bad settings, an APP path that does not import, a bad database URL
├── StorageError              the backend could not do what was asked
│   ├── StorageUnavailable    the store is down or locked for too long: try again later (HTTP 503)
│   └── SchemaVersionError    the database was written by a newer longjobs
├── JobNotFound               no such job for this tenant
├── UnknownKind               no job kind of that name is registered
├── InvalidInput              the input does not fit the kind's schema; carries the field errors
├── IdempotencyConflict       an idempotency key was reused with a different request
├── InvalidTransition         a status change that the lifecycle forbids
└── HandlerError              raised *by handlers* to control retries
    ├── PermanentError        fail the job now, whatever attempts are left
    └── RetryableError        retry, optionally after ``retry_after`` seconds
"""

from __future__ import annotations

from typing import Any


class LongjobsError(Exception):
    """The root of every exception longjobs raises on purpose."""


class ConfigurationError(LongjobsError):
    """Settings, an application path or a database URL that cannot work."""


class StorageError(LongjobsError):
    """The backend failed to carry out an operation."""


class StorageUnavailable(StorageError):
    """The store cannot be reached or stayed locked too long; the caller may retry later."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SchemaVersionError(StorageError):
    """The database schema is newer than this process understands."""


class JobNotFound(LongjobsError):
    """No job with this id exists for the tenant (another tenant's job is reported the same way)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class UnknownKind(LongjobsError):
    """No job kind of this name is registered with the app."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown job kind {kind!r}")
        self.kind = kind


class InvalidInput(LongjobsError):
    """The input does not validate against the kind's input schema.

    ``errors`` lists one ``{"loc": [...], "msg": ..., "type": ...}`` entry per field at fault.
    """

    def __init__(self, kind: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"input for {kind!r} is invalid: {len(errors)} error(s)")
        self.kind = kind
        self.errors = errors


class IdempotencyConflict(LongjobsError):
    """The idempotency key was already used for a request with a different body."""


class InvalidTransition(LongjobsError):
    """A status change that the job lifecycle does not allow."""


class HandlerError(Exception):
    """Base of the exceptions a handler raises to steer retries; ``type`` names the error."""

    retryable: bool = True

    def __init__(self, message: str, *, type: str | None = None) -> None:
        super().__init__(message)
        self.type = type or "handler_error"


class PermanentError(HandlerError):
    """Fail the job at once; no further attempt can succeed."""

    retryable = False


class RetryableError(HandlerError):
    """Retry the job, after ``retry_after`` seconds when given (else the retry policy decides)."""

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, type=type)
        self.retry_after = retry_after
