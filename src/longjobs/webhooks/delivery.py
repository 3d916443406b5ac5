"""The dispatcher: sends the deliveries of the webhook outbox, signed, through the SSRF guard.

Every worker process runs one (``LONGJOBS_WEBHOOK_DELIVERY=false`` turns it off, e.g. to keep
webhook traffic on chosen machines). It leases due deliveries from the store, POSTs each one
with the Standard Webhooks headers and records the outcome, fenced by its lease; a process that
dies mid-send leaves the lease to run out, and another sends it again with the same
``webhook-id`` (at-least-once).

Per attempt: ``2xx`` is success; ``410`` fails the delivery and disables its endpoint; anything
else (``3xx`` included: redirects are never followed, a timeout, a refused connection, an
address the guard refuses) is retried after the next step of ``webhook_retry_schedule`` with
±20 % jitter, and no sooner than a ``429``/``503``'s ``Retry-After``; once the schedule is
used up the delivery fails. The whole attempt is bounded by ``webhook_timeout`` (≤ 30 s) and at
most 1 KiB of the answer is read and kept; it is never shown to the tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from datetime import UTC

import httpx

from longjobs import metrics
from longjobs.backends.base import Backend
from longjobs.backends.outbox import (
    DEFAULT_ENDPOINT,
    MAX_RESPONSE_BYTES,
    Delivery,
    DeliveryAttempt,
    DeliveryOutcome,
    payload,
)
from longjobs.batching import Batcher
from longjobs.errors import StorageError
from longjobs.settings import Settings
from longjobs.webhooks.signing import sign
from longjobs.webhooks.ssrf import (
    GuardedTransport,
    Policy,
    Resolver,
    UnsafeDestination,
    check_url,
    resolve,
    system_resolver,
)

log = logging.getLogger("longjobs.webhooks")

JITTER = 0.2
MAX_RETRY_AFTER = 86400.0
LEASE_MARGIN = 30.0
"""A delivery's lease outlasts its attempt's timeout by this much."""
USER_AGENT = "longjobs-webhooks/1"
_RESULT = {"succeeded": "succeeded", "pending": "retried", "failed": "failed"}


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def decide(
    delivery: Delivery,
    attempt: DeliveryAttempt,
    schedule: list[float],
    *,
    wait_at_least: float | None = None,
) -> DeliveryOutcome:
    """What one attempt means for its delivery (the rules of the module docstring)."""
    code = attempt.status_code
    if code is not None and 200 <= code < 300:
        return DeliveryOutcome(delivery.id, attempt, "succeeded")
    if code == 410:
        reason = "the receiver answered 410 Gone"
        disable = reason if delivery.endpoint_id != DEFAULT_ENDPOINT else None
        return DeliveryOutcome(delivery.id, attempt, "failed", disable_endpoint=disable)
    step = delivery.tries  # attempts before this one
    if step >= len(schedule):
        return DeliveryOutcome(delivery.id, attempt, "failed")
    delay = schedule[step] * random.uniform(1 - JITTER, 1 + JITTER)
    if wait_at_least is not None:
        delay = max(delay, wait_at_least)
    return DeliveryOutcome(delivery.id, attempt, "pending", retry_in=delay)


async def _start_of(response: httpx.Response) -> str:
    """At most MAX_RESPONSE_BYTES of the answer (the rest is never read)."""
    kept = b""
    async for chunk in response.aiter_raw():
        kept += chunk
        if len(kept) >= MAX_RESPONSE_BYTES:
            break
    return kept[:MAX_RESPONSE_BYTES].decode("utf-8", "replace")


class Dispatcher:
    """Sends due deliveries until cancelled. ``poke()`` makes it look at once (this process
    just ended a job); otherwise it looks every ``webhook_poll_interval`` seconds."""

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        *,
        owner: str,
        resolver: Resolver | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.owner = owner
        self.policy = Policy.allowing(settings.webhook_allow_networks)
        self.resolver = resolver or system_resolver
        self.client = self._new_client()
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._records: Batcher[DeliveryOutcome, None] = Batcher(self._record)

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=GuardedTransport(self.policy, resolver=self.resolver),
            follow_redirects=False,
            timeout=self.settings.webhook_timeout,
            headers={"user-agent": USER_AGENT},
        )

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        if self.client.is_closed:  # run again after a failure
            self.client = self._new_client()
        try:
            while True:
                free = self.settings.webhook_concurrency - len(self._sending)
                taken = await self._claim(free) if free > 0 else []
                for delivery in taken:
                    task = asyncio.create_task(self._deliver(delivery))
                    self._sending.add(task)
                    task.add_done_callback(self._sent)
                if len(taken) < free or free <= 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.settings.webhook_poll_interval):
                            await self._wake.wait()
                    self._wake.clear()
        finally:
            for task in self._sending:
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)
            await self.client.aclose()

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake.set()  # a slot is free

    async def _claim(self, limit: int) -> list[Delivery]:
        lease = self.settings.webhook_timeout + LEASE_MARGIN
        try:
            return await self.backend.claim_deliveries(self.owner, limit, lease)
        except StorageError as exc:
            log.warning("claiming webhook deliveries failed: %s", exc)
        except Exception:  # the loop must go on, and in-flight sends with it
            log.exception("claiming webhook deliveries failed")
        return []

    async def _deliver(self, delivery: Delivery) -> None:
        outcome = await self.attempt(delivery)
        metrics.WEBHOOK_ATTEMPTS.labels(_RESULT[outcome.status]).inc()
        try:
            await self._records.submit(outcome)
        except StorageError as exc:  # the lease runs out and the delivery is sent again
            log.warning("recording webhook delivery %s failed: %s", delivery.id, exc)

    async def _record(self, outcomes: list[DeliveryOutcome]) -> list[None]:
        """The outcomes that came in meanwhile, in one write."""
        await self.backend.record_deliveries(self.owner, outcomes)
        return [None] * len(outcomes)

    async def attempt(self, delivery: Delivery) -> DeliveryOutcome:
        """Send ``delivery`` once and decide what comes next."""
        schedule = list(self.settings.webhook_retry_schedule)
        now = time.time()
        if delivery.blocked is not None:
            attempt = DeliveryAttempt(at=now, duration_ms=0.0, error=delivery.blocked)
            return DeliveryOutcome(delivery.id, attempt, "failed")
        body = payload(delivery)
        headers = sign(delivery.secrets, delivery.event_id, body, timestamp=int(now))
        headers["content-type"] = "application/json"
        headers["accept-encoding"] = "identity"  # the kept start of the answer stays readable
        started = time.monotonic()
        code: int | None = None
        error = kept = None
        wait: float | None = None
        try:
            async with asyncio.timeout(self.settings.webhook_timeout):
                request = self.client.build_request(
                    "POST", delivery.url, content=body, headers=headers
                )
                response = await self.client.send(request, stream=True)
                try:
                    code = response.status_code
                    kept = await _start_of(response)
                finally:
                    await response.aclose()
            if code in (429, 503):
                wait = retry_after(response.headers.get("retry-after"), time.time())
        except UnsafeDestination as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"no answer within {self.settings.webhook_timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # anything else is a failed attempt too, never a lost one
            log.warning("webhook %s: unexpected %s", delivery.event_id, type(exc).__name__)
            error = type(exc).__name__
        duration = (time.monotonic() - started) * 1000
        attempt = DeliveryAttempt(
            at=now, duration_ms=round(duration, 1), status_code=code, error=error, response=kept
        )
        outcome = decide(delivery, attempt, schedule, wait_at_least=wait)
        log.log(
            logging.DEBUG if outcome.status == "succeeded" else logging.INFO,
            "webhook %s %s to %s: %s → %s",
            delivery.event_id,
            delivery.type,
            delivery.endpoint_id,
            code if code is not None else error,
            outcome.status,
        )
        return outcome


REGISTRATION_DNS_SECONDS = 5.0


async def check_destination(url: str, policy: Policy, resolver: Resolver | None = None) -> None:
    """Refuse (UnsafeDestination) a URL that may not receive webhooks: its form, and every
    address its host resolves to now (it is checked again at each delivery)."""
    target = check_url(url, policy)
    try:
        async with asyncio.timeout(REGISTRATION_DNS_SECONDS):
            await resolve(target, policy, resolver or system_resolver)
    except TimeoutError:
        raise UnsafeDestination(f"{target.host} did not resolve in time") from None
