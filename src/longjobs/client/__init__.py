"""The Python client of a longjobs server: ``Client`` (blocking) and ``AsyncClient``.

It speaks the HTTP API of API.md with httpx and imports nothing of the server side.
"""

from longjobs.client.aio import AsyncClient, Backoff
from longjobs.client.errors import (
    APIError,
    ConnectionFailed,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    NotFinished,
    NotFound,
    RateLimited,
    ResultExpired,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from longjobs.client.sync import Client
from longjobs.schemas import (
    DeliveryAttemptResource,
    DeliveryResource,
    EventResource,
    JobResource,
    KindResource,
    WebhookResource,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "Backoff",
    "Client",
    "ConnectionFailed",
    "DeliveryAttemptResource",
    "DeliveryResource",
    "EventResource",
    "InvalidRequest",
    "JobCancelled",
    "JobFailed",
    "JobResource",
    "KindResource",
    "NotFinished",
    "NotFound",
    "RateLimited",
    "ResultExpired",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "WebhookResource",
]
