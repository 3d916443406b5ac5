"""longjobs: durable background jobs for long AI operations."""

from longjobs.app import App, JobKind
from longjobs.client import (
    APIError,
    AsyncClient,
    Client,
    JobCancelled,
    JobFailed,
    NotFinished,
    ResultExpired,
)
from longjobs.context import Context, current
from longjobs.errors import (
    ConfigurationError,
    IdempotencyConflict,
    InvalidInput,
    JobNotFound,
    LongjobsError,
    PermanentError,
    RetryableError,
    StorageUnavailable,
    UnknownKind,
)
from longjobs.models import Event, Job, JobError, Page, Status
from longjobs.retry import RetryPolicy
from longjobs.settings import Settings

__all__ = [
    "APIError",
    "App",
    "AsyncClient",
    "Client",
    "ConfigurationError",
    "Context",
    "Event",
    "IdempotencyConflict",
    "InvalidInput",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobKind",
    "JobNotFound",
    "LongjobsError",
    "NotFinished",
    "Page",
    "PermanentError",
    "ResultExpired",
    "RetryPolicy",
    "RetryableError",
    "Settings",
    "Status",
    "StorageUnavailable",
    "UnknownKind",
    "current",
]
