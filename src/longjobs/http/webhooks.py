"""The webhook routes: the tenant's endpoints (``/v1/webhooks``), the secret of single jobs'
webhook URLs, and each job's deliveries (``/v1/jobs/{id}/deliveries``) with their replay.

Every URL is checked against the SSRF rules when it is registered, here, and again at each
delivery against the address dialled (``longjobs.webhooks.delivery``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from starlette.responses import Response

from longjobs.app import App
from longjobs.backends.outbox import (
    DEFAULT_ENDPOINT,
    Delivery,
    WebhookChange,
    WebhookEndpoint,
    blocked_reason,
    default_endpoint,
)
from longjobs.errors import JobNotFound
from longjobs.http.dependencies import AppDep, SettingsDep, TenantDep
from longjobs.http.openapi import WEBHOOK_LINKS
from longjobs.http.problems import (
    AUTHENTICATED,
    ProblemError,
    documented,
    invalid_input_detail,
)
from longjobs.http.state import APIState, state_of
from longjobs.schemas import (
    DeliveryAttemptResource,
    DeliveryList,
    DeliveryResource,
    WebhookCreate,
    WebhookList,
    WebhookResource,
    WebhookSecret,
    WebhookUpdate,
)
from longjobs.settings import Settings
from longjobs.webhooks.delivery import check_destination
from longjobs.webhooks.signing import new_secret
from longjobs.webhooks.ssrf import Policy, UnsafeDestination

router = APIRouter(responses=AUTHENTICATED, tags=["webhooks"])

MAX_ENDPOINTS = 20
"""Endpoints one tenant may register."""


async def check_webhook_url(state: APIState, url: str, loc: Sequence[str]) -> None:
    """422 naming ``loc`` unless ``url`` may receive webhooks (its form, and every address its
    host resolves to now)."""
    policy = Policy.allowing(state.settings.webhook_allow_networks)
    try:
        await check_destination(url, policy, state.app.webhook_resolver)
    except UnsafeDestination as exc:
        message = f"this URL cannot receive webhooks: {exc}"
        errors = [{"loc": list(loc), "msg": message, "type": "unsafe_destination"}]
        raise ProblemError("invalid-input", invalid_input_detail(errors), errors=errors) from None


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _resource(endpoint: WebhookEndpoint, *, secret: bool = False) -> WebhookResource:
    return WebhookResource(
        id=endpoint.id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        description=endpoint.description,
        status="enabled" if endpoint.disabled_at is None else "disabled",
        disabled_reason=endpoint.disabled_reason,
        created_at=datetime.fromtimestamp(endpoint.created_at, UTC),
        disabled_at=_ts(endpoint.disabled_at),
        secret=endpoint.secret if secret else None,
    )


def _delivery(delivery: Delivery) -> DeliveryResource:
    return DeliveryResource(
        id=delivery.id,
        event_id=delivery.event_id,
        type=delivery.type,
        endpoint_id=delivery.endpoint_id,
        url=delivery.url,
        status=delivery.status,
        created_at=datetime.fromtimestamp(delivery.created_at, UTC),
        next_attempt_at=_ts(delivery.next_attempt_at),
        attempts=[
            DeliveryAttemptResource(
                at=datetime.fromtimestamp(a.at, UTC),
                duration_ms=a.duration_ms,
                status_code=a.status_code,
                error=a.error,
            )
            for a in delivery.attempts
        ],
    )


def _not_found(webhook_id: str) -> ProblemError:
    return ProblemError("webhook-not-found", f"webhook endpoint {webhook_id!r} not found")


async def _endpoint(request: Request, tenant: str, webhook_id: str) -> WebhookEndpoint:
    backend = await _state(request).app.open()
    found = None
    if webhook_id != DEFAULT_ENDPOINT:
        found = await backend.get_webhook(tenant, webhook_id)
    if found is None:
        raise _not_found(webhook_id)
    return found


def _state(request: Request) -> APIState:
    return state_of(request)


@router.post(
    "/v1/webhooks",
    operation_id="createWebhook",
    status_code=201,
    response_model=WebhookResource,
    responses={201: {"links": WEBHOOK_LINKS}, **documented(400, 409, 422, 503)},
)
async def create_webhook(
    body: WebhookCreate, request: Request, app: AppDep, tenant: TenantDep, response: Response
) -> WebhookResource:
    """Register an endpoint; the answer shows its ``secret``, the only time it is shown."""
    await check_webhook_url(_state(request), body.url, ("body", "url"))
    backend = await app.open()
    if len(await backend.list_webhooks(tenant)) >= MAX_ENDPOINTS:
        raise ProblemError("too-many-webhooks", f"a tenant may have {MAX_ENDPOINTS} endpoints")
    endpoint = WebhookEndpoint(
        id="we_" + secrets.token_hex(16),
        tenant=tenant,
        url=body.url,
        secret=new_secret(),
        created_at=time.time(),
        event_types=tuple(dict.fromkeys(body.event_types)),
        description=body.description,
    )
    stored = await backend.create_webhook(endpoint)
    response.headers["Location"] = f"/v1/webhooks/{stored.id}"
    return _resource(stored, secret=True)


@router.get(
    "/v1/webhooks",
    operation_id="listWebhooks",
    response_model=WebhookList,
    responses=documented(503),
)
async def list_webhooks(app: AppDep, tenant: TenantDep) -> WebhookList:
    """The tenant's endpoints, oldest first (without their secrets)."""
    backend = await app.open()
    return WebhookList(data=[_resource(e) for e in await backend.list_webhooks(tenant)])


@router.get(
    "/v1/webhooks/default/secret",
    operation_id="getDefaultWebhookSecret",
    response_model=WebhookSecret,
    responses=documented(503),
)
async def get_default_secret(app: AppDep, tenant: TenantDep) -> WebhookSecret:
    """The secret that signs the webhooks of jobs submitted with their own ``webhook.url``
    (made on first use)."""
    backend = await app.open()
    signer = default_endpoint(tenant, new_secret(), time.time())
    return WebhookSecret(secret=(await backend.create_webhook(signer)).secret)


@router.post(
    "/v1/webhooks/default/secret/rotate",
    operation_id="rotateDefaultWebhookSecret",
    response_model=WebhookSecret,
    responses=documented(503),
)
async def rotate_default_secret(
    app: AppDep, settings: SettingsDep, tenant: TenantDep
) -> WebhookSecret:
    """A new secret for single jobs' webhooks; the old one signs too for
    ``webhook_rotation_overlap`` seconds (default 24 h)."""
    backend = await app.open()
    await backend.create_webhook(default_endpoint(tenant, new_secret(), time.time()))
    rotated = await backend.update_webhook(tenant, DEFAULT_ENDPOINT, _rotation(settings))
    if rotated is None:  # not seen since it was made: cannot happen
        raise _not_found(DEFAULT_ENDPOINT)
    return WebhookSecret(secret=rotated.secret)


def _rotation(settings: Settings) -> WebhookChange:
    until = time.time() + settings.webhook_rotation_overlap
    return WebhookChange(new_secret=new_secret(), previous_secret_until=until)


@router.get(
    "/v1/webhooks/{webhook_id}",
    operation_id="getWebhook",
    response_model=WebhookResource,
    responses=documented(404, 503),
)
async def get_webhook(webhook_id: str, request: Request, tenant: TenantDep) -> WebhookResource:
    """One endpoint, without its secret."""
    return _resource(await _endpoint(request, tenant, webhook_id))


@router.patch(
    "/v1/webhooks/{webhook_id}",
    operation_id="updateWebhook",
    response_model=WebhookResource,
    responses=documented(400, 404, 422, 503),
)
async def update_webhook(
    webhook_id: str, body: WebhookUpdate, request: Request, app: AppDep, tenant: TenantDep
) -> WebhookResource:
    """Change an endpoint's URL, event types or description; ``enabled: true`` enables it
    again after it was disabled, ``false`` disables it."""
    await _endpoint(request, tenant, webhook_id)  # a 404 before a 422 about the URL
    if body.url is not None:
        await check_webhook_url(_state(request), body.url, ("body", "url"))
    change = WebhookChange(
        url=body.url,
        event_types=None if body.event_types is None else tuple(dict.fromkeys(body.event_types)),
        description=body.description,
        set_description="description" in body.model_fields_set,
        enabled=body.enabled,
    )
    return _resource(await _updated(app, tenant, webhook_id, change))


async def _updated(
    app: App, tenant: str, webhook_id: str, change: WebhookChange
) -> WebhookEndpoint:
    backend = await app.open()
    updated = None
    if webhook_id != DEFAULT_ENDPOINT:
        updated = await backend.update_webhook(tenant, webhook_id, change)
    if updated is None:
        raise _not_found(webhook_id)
    return updated


@router.post(
    "/v1/webhooks/{webhook_id}/rotate-secret",
    operation_id="rotateWebhookSecret",
    response_model=WebhookResource,
    responses=documented(404, 503),
)
async def rotate_secret(
    webhook_id: str, app: AppDep, settings: SettingsDep, tenant: TenantDep
) -> WebhookResource:
    """A new secret, shown in the answer; the old one signs too for ``webhook_rotation_overlap``
    seconds (default 24 h), so receivers can switch without losing a delivery."""
    return _resource(await _updated(app, tenant, webhook_id, _rotation(settings)), secret=True)


@router.delete(
    "/v1/webhooks/{webhook_id}",
    operation_id="deleteWebhook",
    status_code=204,
    response_class=Response,
    responses=documented(404, 503),
)
async def delete_webhook(webhook_id: str, app: AppDep, tenant: TenantDep) -> Response:
    """Remove an endpoint; its deliveries not yet made fail."""
    backend = await app.open()
    if webhook_id == DEFAULT_ENDPOINT or not await backend.delete_webhook(tenant, webhook_id):
        raise _not_found(webhook_id)
    return Response(status_code=204)


@router.get(
    "/v1/jobs/{job_id}/deliveries",
    operation_id="listDeliveries",
    response_model=DeliveryList,
    responses=documented(404, 503),
)
async def list_deliveries(job_id: str, app: AppDep, tenant: TenantDep) -> DeliveryList:
    """The webhook deliveries of the job's events, each with its attempts."""
    backend = await app.open()
    found = await backend.list_deliveries(tenant, job_id)
    if found is None:
        raise JobNotFound(job_id)
    return DeliveryList(data=[_delivery(d) for d in found])


@router.post(
    "/v1/jobs/{job_id}/deliveries/{delivery_id}/replay",
    operation_id="replayDelivery",
    status_code=202,
    response_model=DeliveryResource,
    responses=documented(404, 409, 503),
)
async def replay_delivery(
    job_id: str, delivery_id: str, app: AppDep, tenant: TenantDep
) -> DeliveryResource:
    """Send a delivery again now, from the first step of the retry schedule (the same
    ``webhook-id``: receivers that dedupe see it once); 409 while its endpoint is disabled or
    after it was deleted."""
    backend = await app.open()
    found = await backend.list_deliveries(tenant, job_id)
    if found is None:
        raise JobNotFound(job_id)
    delivery = next((d for d in found if d.id == delivery_id), None)
    if delivery is not None and delivery.endpoint_id != DEFAULT_ENDPOINT:
        blocked = blocked_reason(await backend.get_webhook(tenant, delivery.endpoint_id))
        if blocked is not None:
            raise ProblemError("delivery-blocked", f"cannot send it again: {blocked}")
    replayed = await backend.replay_delivery(tenant, job_id, delivery_id)
    if replayed is None:
        raise ProblemError("delivery-not-found", f"delivery {delivery_id!r} not found")
    return _delivery(replayed)
