"""The wire shapes of the HTTP API (see API.md): what clients send and what the server answers.

This module is shared by the server (``longjobs.http``) and the Python client, so it imports
nothing from the server side: only pydantic and the plain values of ``longjobs.models``.

>>> request = SubmitRequest(kind="count_words", input={"text": "a b c"}, priority=5)
>>> request.model_dump(exclude_unset=True)
{'kind': 'count_words', 'input': {'text': 'a b c'}, 'priority': 5}
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from longjobs.models import JSON, Status

MAX_SECONDS = 10 * 365 * 86400.0
"""The longest duration a submission may ask for (delay, timeout or result TTL): ten years."""

MAX_PRIORITY = 2**31 - 1


def rfc3339(value: datetime) -> str:
    """``value`` as an RFC 3339 UTC string ending in ``Z`` (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


Timestamp = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json")]
"""A datetime that goes on the wire as RFC 3339 UTC with a ``Z``."""

Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


WHOLE = BeforeValidator(_whole)
"""Lets an ``int`` field take ``3.0``: JSON does not tell ``3`` from ``3.0``, and neither does
JSON Schema's ``integer``. Other floats and strings are still refused. It goes after the
field's bounds in ``Annotated``, or the bounds drop out of the JSON Schema."""


class WebhookTarget(BaseModel):
    """Where to POST the job's terminal event (signed with the tenant's ``default`` secret)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str = Field(min_length=1, max_length=2048)


class SubmitRequest(BaseModel):
    """The body of ``POST /v1/jobs``. Unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    kind: str = Field(min_length=1, max_length=200)
    input: JSON = None
    priority: Annotated[int, Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY), WHOLE] = 0
    timeout_seconds: Seconds | None = None
    max_attempts: Annotated[int, Field(ge=1, le=1000), WHOLE] | None = None
    result_ttl_seconds: Seconds | None = None
    delay_seconds: float = Field(0.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    metadata: dict[str, JSON] | None = None
    webhook: WebhookTarget | None = None


class JobErrorResource(BaseModel):
    """Why a job failed: a stable ``type``, a human ``message``, whether a retry may help."""

    type: str
    message: str
    retryable: bool = False


class UsageResource(BaseModel):
    """Model tokens spent by a job so far."""

    input_tokens: int = 0
    output_tokens: int = 0


class JobLinks(BaseModel):
    """Where to read, stream, fetch the result of and cancel a job (paths relative to the API)."""

    self: str
    events: str
    result: str
    cancel: str


class JobResource(BaseModel):
    """The job resource of API.md, as ``GET /v1/jobs/{id}`` answers it."""

    id: str
    object: Literal["job"] = "job"
    kind: str
    status: Status
    progress: float = 0.0
    stage: str | None = None
    message: str | None = None
    eta_seconds: float | None = None
    input: JSON = None
    result: JSON = None
    error: JobErrorResource | None = None
    cancel_requested: bool = False
    attempt: int = 0
    max_attempts: int = 1
    priority: int = 0
    metadata: dict[str, JSON] = Field(default_factory=dict)
    webhook: WebhookTarget | None = None
    usage: UsageResource = Field(default_factory=UsageResource)
    created_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    links: JobLinks

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


class JobList(BaseModel):
    """One page of ``GET /v1/jobs``, newest first; pass ``next_cursor`` back for the next page."""

    object: Literal["list"] = "list"
    data: list[JobResource]
    next_cursor: str | None = None


class EventResource(BaseModel):
    """One event of a job's log as the API sends it (SSE ``data``, WebSocket frames, JSON list).

    The common members are typed; each type's own members (``status``/``attempt``/``detail``;
    ``progress``/``stage``/``message``/``eta_seconds``; ``level``/``message``; ``delta`` or
    ``data``; token counts) are kept as extra members: ``event.model_extra`` or ``get()``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    sequence_number: int
    job_id: str
    at: Timestamp

    def get(self, name: str, default: Any = None) -> Any:
        """A member of the event's type, such as ``event.get("progress")``."""
        return (self.model_extra or {}).get(name, default)

    @property
    def is_terminal(self) -> bool:
        """Whether this is the ``status`` event that ends the job's log."""
        status = self.get("status")
        return self.type == "status" and status in {s.value for s in Status if s.is_terminal}


class EventList(BaseModel):
    """A job's stored events: ``GET /v1/jobs/{id}/events`` with ``Accept: application/json``."""

    object: Literal["list"] = "list"
    data: list[dict[str, JSON]]


class KindDefaults(BaseModel):
    """What a submission of a kind gets when it does not say otherwise."""

    timeout_seconds: float | None
    max_attempts: int
    result_ttl_seconds: float


class KindResource(BaseModel):
    """A registered job kind with its input and output JSON Schemas."""

    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    defaults: KindDefaults


class KindList(BaseModel):
    """The answer of ``GET /v1/kinds``, sorted by name."""

    object: Literal["list"] = "list"
    data: list[KindResource]


class FieldError(BaseModel):
    """One field at fault in a request: where (``loc``), what (``msg``) and a stable ``type``."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 ``application/problem+json`` body: every non-2xx answer of the API.

    ``type`` is a stable relative URI such as ``/problems/job-not-found``; the optional members
    are set where they help: ``errors`` for validation, ``job_id``, ``retry_after`` (seconds),
    ``error`` (the job's error, for failed jobs).
    """

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    job_id: str | None = None
    retry_after: float | None = None
    error: JobErrorResource | None = None


# -- webhooks --------------------------------------------------------------------------------------
EventType = Literal[
    "job.completed",
    "job.failed",
    "job.cancelled",
    "response.completed",
    "response.failed",
    "response.cancelled",
    "response.incomplete",
]


class WebhookCreate(BaseModel):
    """The body of ``POST /v1/webhooks``. ``event_types`` empty or left out: every event."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str = Field(min_length=1, max_length=2048)
    event_types: list[EventType] = Field(default_factory=list, max_length=20)
    description: str | None = Field(None, max_length=500)


class WebhookUpdate(BaseModel):
    """The body of ``PATCH /v1/webhooks/{id}``: what is sent changes; ``enabled: true``
    enables an endpoint that was disabled (after a 410)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str | None = Field(None, min_length=1, max_length=2048)
    event_types: list[EventType] | None = Field(None, max_length=20)
    description: str | None = Field(None, max_length=500)
    enabled: bool | None = None


class WebhookResource(BaseModel):
    """A webhook endpoint. ``secret`` is shown once: when it is created or rotated."""

    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    event_types: list[str]
    description: str | None = None
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None = None
    created_at: Timestamp
    disabled_at: Timestamp | None = None
    secret: str | None = Field(None, repr=False)


class WebhookList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookResource]


class WebhookSecret(BaseModel):
    """The secret that signs the webhooks of single jobs (their ``webhook.url``)."""

    object: Literal["webhook_secret"] = "webhook_secret"
    secret: str = Field(repr=False)


class DeliveryAttemptResource(BaseModel):
    """One try: the receiver's status code, or what went wrong (its answer is not shown)."""

    at: Timestamp
    duration_ms: float
    status_code: int | None = None
    error: str | None = None


class DeliveryResource(BaseModel):
    """One event on its way to one endpoint; ``endpoint_id`` ``default``: the job's own URL."""

    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    event_id: str
    type: str
    endpoint_id: str
    url: str
    status: Literal["pending", "succeeded", "failed"]
    created_at: Timestamp
    next_attempt_at: Timestamp | None = None
    attempts: list[DeliveryAttemptResource]


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeliveryResource]
