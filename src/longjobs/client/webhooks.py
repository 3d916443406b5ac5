"""The webhook calls of ``AsyncClient`` (a mixin): the tenant's endpoints, the secret of single
jobs' webhook URLs, and each job's deliveries.

Creating an endpoint and rotating a secret are not repeated after a connection broke mid-call
(a second endpoint would get every event twice; a second rotation would end the first secret's
overlap at once): ``ConnectionFailed`` says it may have been done, ``list_webhooks`` tells.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from longjobs.client._wire import parse, resource_path
from longjobs.schemas import (
    DeliveryList,
    DeliveryResource,
    WebhookList,
    WebhookResource,
    WebhookSecret,
)

WEBHOOKS = "/v1/webhooks"


class WebhookMethods:
    """Webhook endpoints, secrets and deliveries, as ``AsyncClient`` methods::

        endpoint = await client.create_webhook("https://example.com/hooks")
        keep(endpoint.secret)  # shown only now (and by rotate_webhook_secret)
        job = await client.submit("summarize", data, webhook_url="https://example.com/one-job")
        for delivery in await client.deliveries(job.id):
            print(delivery.status, [a.status_code for a in delivery.attempts])

    Errors as the other calls: ``NotFound`` for an unknown endpoint, job or delivery,
    ``InvalidRequest`` for a URL the server may not call (``problem.errors[0].loc`` is
    ``["body", "url"]``), ``APIError`` (409) past the server's number of endpoints.
    """

    if TYPE_CHECKING:

        async def _send(
            self,
            method: str,
            path: str,
            *,
            json: Any = None,
            params: Mapping[str, str] | None = None,
            headers: Mapping[str, str] | None = None,
            waits: float = 0.0,
            gone_ok_on_retry: bool = False,
            repeatable: bool = True,
        ) -> httpx.Response: ...

    async def create_webhook(
        self,
        url: str,
        *,
        event_types: Iterable[str] | None = None,
        description: str | None = None,
    ) -> WebhookResource:
        """Register ``url`` for the tenant's job events (``event_types``, such as
        ``"job.failed"``; none: every type). The answer holds the ``secret`` that signs them,
        the only time it is shown."""
        body: dict[str, Any] = {"url": url}
        if event_types is not None:
            body["event_types"] = list(event_types)
        if description is not None:
            body["description"] = description
        response = await self._send("POST", WEBHOOKS, json=body, repeatable=False)
        return parse(WebhookResource, response)

    async def list_webhooks(self) -> list[WebhookResource]:
        """The tenant's endpoints, oldest first, without their secrets."""
        return parse(WebhookList, await self._send("GET", WEBHOOKS)).data

    async def get_webhook(self, webhook_id: str) -> WebhookResource:
        """One endpoint, without its secret. Raises ``NotFound``."""
        return parse(WebhookResource, await self._send("GET", _webhook(webhook_id)))

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookResource:
        """Change what is given (None: unchanged; ``event_types=[]``: every type). ``enabled``
        ``False`` stops deliveries to the endpoint, ``True`` starts them again (also after the
        server disabled it, when it answered 410 Gone)."""
        changes = {
            "url": url,
            "event_types": None if event_types is None else list(event_types),
            "description": description,
            "enabled": enabled,
        }
        body = {name: value for name, value in changes.items() if value is not None}
        response = await self._send("PATCH", _webhook(webhook_id), json=body)
        return parse(WebhookResource, response)

    async def delete_webhook(self, webhook_id: str) -> None:
        """Remove an endpoint (its deliveries not yet made fail). Raises ``NotFound`` unless a
        retry of this call met it already removed."""
        await self._send("DELETE", _webhook(webhook_id), gone_ok_on_retry=True)

    async def rotate_webhook_secret(self, webhook_id: str) -> WebhookResource:
        """A new secret for the endpoint, in the answer; the old one still signs (a second
        signature) for the server's overlap, 24 h by default."""
        path = _webhook(webhook_id, "rotate-secret")
        return parse(WebhookResource, await self._send("POST", path, repeatable=False))

    async def default_webhook_secret(self) -> str:
        """The secret that signs the webhooks of jobs submitted with a ``webhook_url``."""
        response = await self._send("GET", f"{WEBHOOKS}/default/secret")
        return parse(WebhookSecret, response).secret

    async def rotate_default_webhook_secret(self) -> str:
        """A new secret for jobs' ``webhook_url``; the old one still signs for the overlap."""
        path = f"{WEBHOOKS}/default/secret/rotate"
        return parse(WebhookSecret, await self._send("POST", path, repeatable=False)).secret

    async def deliveries(self, job_id: str) -> list[DeliveryResource]:
        """The webhook deliveries of the job's events, each with its attempts. Raises
        ``NotFound`` for an unknown job."""
        response = await self._send("GET", resource_path("/v1/jobs", job_id, "deliveries"))
        return parse(DeliveryList, response).data

    async def replay_delivery(self, job_id: str, delivery_id: str) -> DeliveryResource:
        """Send a delivery again, from the start of the retry schedule (``pending`` in the
        answer; the same ``webhook-id``). Raises ``NotFound`` for an unknown job or delivery."""
        delivery = quote(delivery_id, safe="")
        path = resource_path("/v1/jobs", job_id, "deliveries", delivery, "replay")
        return parse(DeliveryResource, await self._send("POST", path))


def _webhook(webhook_id: str, *rest: str) -> str:
    return resource_path(WEBHOOKS, webhook_id, *rest)
