"""``AsyncClient``: the Python client of a longjobs server, on httpx.

Every call that is safe to repeat is retried on connection errors, 429 and 503 with capped
exponential backoff, full jitter and the server's ``Retry-After``; ``submit`` is made safe to
repeat by an ``Idempotency-Key`` generated per call when none is given. ``events`` reconnects
with ``Last-Event-ID`` after a dropped connection or a server restart, so the caller sees every
event exactly once, in order.
"""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

import httpx
from httpx_sse import EventSource
from pydantic import ValidationError

from longjobs.client._wire import parse, resource_path
from longjobs.client.errors import ConnectionFailed, NotFound, WaitTimeout, error_for
from longjobs.client.webhooks import WebhookMethods
from longjobs.models import JSON, Status
from longjobs.schemas import (
    EventResource,
    JobList,
    JobResource,
    KindList,
    KindResource,
    Problem,
)

DEFAULT_SERVER = "http://127.0.0.1:8000"
RETRIED_STATUSES = frozenset({429, 502, 503, 504})
REFUSED_STATUSES = frozenset({429, 503})
"""The retried statuses that say the server did nothing (a proxy's 502/504 do not)."""
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
"""The transport errors raised before the request left (those after it are ambiguous)."""
LONG_POLL_SECONDS = 30.0
"""The longest single ``GET ?wait=`` of ``wait()``; the server may cap it lower."""
STREAM_READ_SECONDS = 60.0
"""Silence after which an event stream counts as dead (the server sends a keep-alive every 15 s)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between retries: full jitter over ``base * 2**n``, capped at ``cap`` seconds; a
    server's ``Retry-After`` is honoured as the least delay (up to ``max_retry_after``)."""

    base: float = 0.2
    cap: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**retry))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay


class AsyncClient(WebhookMethods):
    """A longjobs server's jobs (and their webhooks: ``WebhookMethods``), from Python.

    ``server`` defaults to ``LONGJOBS_SERVER`` or http://127.0.0.1:8000, ``api_key`` to
    ``LONGJOBS_API_KEY`` (none: open mode). ``timeout`` bounds each request's connect, write
    and read (long polls add their wait to it); ``retries`` is how many times a failed call is
    repeated before its error is raised; ``reconnect_for`` is how long ``events`` keeps trying
    to reconnect once a stream broke (a quiet job may stay silent far longer)::

        async with AsyncClient("http://jobs.internal:8000", api_key=key) as client:
            job = await client.submit("summarize", {"url": "https://example.com/a.pdf"})
            async for event in client.events(job.id):
                print(event.type, event.get("progress"))
            summary = await client.result(job.id)

    Errors: ``NotFound`` (404), ``InvalidRequest`` (400/413/422, ``problem.errors`` lists the
    fields), ``Unauthorized`` (401), ``RateLimited``/``Unavailable`` after the retries,
    ``ConnectionFailed`` when the server cannot be reached; ``result`` adds ``NotFinished``,
    ``JobFailed``, ``JobCancelled`` and ``ResultExpired``; all are ``APIError`` but the last.
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        reconnect_for: float = 60.0,
        backoff: Backoff = Backoff(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = (server or os.environ.get("LONGJOBS_SERVER") or DEFAULT_SERVER).rstrip("/")
        api_key = api_key or os.environ.get("LONGJOBS_API_KEY") or None
        headers = {"Accept": "application/json", "User-Agent": "longjobs-python"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout
        self._retries = retries
        self._reconnect_for = reconnect_for
        self._backoff = backoff
        self._http = httpx.AsyncClient(
            base_url=self.server, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # -- jobs -------------------------------------------------------------------------------
    async def submit(
        self,
        kind: str,
        input: JSON = None,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        timeout_seconds: float | None = None,
        max_attempts: int | None = None,
        result_ttl_seconds: float | None = None,
        delay_seconds: float | None = None,
        metadata: Mapping[str, JSON] | None = None,
        webhook_url: str | None = None,
    ) -> JobResource:
        """Submit a job of ``kind``; the new job (``pending``), or with ``wait`` the finished job
        if it ended within ``wait`` seconds (capped by the server). A retried call never makes a
        second job: the same ``idempotency_key`` (one is generated when none is given) returns
        the first. ``webhook_url`` receives the job's terminal event, signed with the secret of
        ``default_webhook_secret()``. Raises ``NotFound`` for an unknown kind, ``InvalidRequest``
        for bad input (a ``webhook_url`` the server may not call among it)."""
        options = {
            "priority": priority,
            "timeout_seconds": timeout_seconds,
            "max_attempts": max_attempts,
            "result_ttl_seconds": result_ttl_seconds,
            "delay_seconds": delay_seconds,
            "metadata": dict(metadata) if metadata is not None else None,
            "webhook": {"url": webhook_url} if webhook_url is not None else None,
        }
        body = {"kind": kind, "input": input}
        body.update({name: value for name, value in options.items() if value is not None})
        headers = {"Idempotency-Key": idempotency_key or f"lj-{uuid.uuid4().hex}"}
        if wait is not None:
            headers["Prefer"] = f"wait={_seconds(wait)}"
        response = await self._send(
            "POST", "/v1/jobs", json=body, headers=headers, waits=wait or 0.0
        )
        return _job(response)

    async def get(self, job_id: str, *, wait: float | None = None) -> JobResource:
        """The job now; with ``wait``, once it is terminal or its status changed, or after
        ``wait`` seconds (capped by the server). Raises ``NotFound``."""
        params = {"wait": _seconds(wait)} if wait else None
        response = await self._send("GET", _path(job_id), params=params, waits=wait or 0.0)
        return _job(response)

    async def list(
        self, *, status: Status | str | None = None, kind: str | None = None, page_size: int = 100
    ) -> AsyncIterator[JobResource]:
        """Every job of the caller's tenant (filtered by ``status`` and ``kind``), newest first,
        fetched a page at a time as the iteration goes."""
        params: dict[str, str] = {"limit": str(page_size)}
        if status is not None:
            params["status"] = str(status)
        if kind is not None:
            params["kind"] = kind
        while True:
            response = await self._send("GET", "/v1/jobs", params=params)
            page = parse(JobList, response)
            for job in page.data:
                yield job
            if page.next_cursor is None:
                return
            params["cursor"] = page.next_cursor

    async def cancel(self, job_id: str) -> JobResource:
        """Ask the job to stop: a pending job is ``cancelled`` at once, a running one gets
        ``cancel_requested`` until its handler stops; a finished job is returned as it is."""
        return _job(await self._send("POST", _path(job_id, "cancel")))

    async def delete(self, job_id: str) -> None:
        """Forget the job, its events and its result (cancelling it first if it runs). Raises
        ``NotFound`` unless a retry of this call met the job already deleted."""
        await self._send("DELETE", _path(job_id), gone_ok_on_retry=True)

    async def result(self, job_id: str) -> Any:
        """The job's result: parsed JSON, or ``bytes`` for another content type. Raises
        ``NotFinished`` (with ``retry_after``), ``JobFailed`` (``problem.error`` says why),
        ``JobCancelled``, ``ResultExpired`` or ``NotFound``."""
        response = await self._send("GET", _path(job_id, "result"))
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    async def wait(self, job_id: str, *, timeout: float | None = None) -> JobResource:
        """The job once it is terminal (``completed``, ``failed`` or ``cancelled``): long polls
        of ``GET ?wait=``, backing off with jitter (and ``Retry-After``) whenever the server
        answers without holding the request. Raises ``WaitTimeout`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_status: Status | None = None
        idle_polls = 0
        while True:
            remaining = LONG_POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0 and last_status is not None:  # it was looked at once at least
                raise WaitTimeout(f"{job_id} is still {last_status} after {timeout:g} s")
            chunk = max(0.0, min(remaining, LONG_POLL_SECONDS))
            started = time.monotonic()
            params = {"wait": _seconds(chunk)} if chunk > 0 else None
            response = await self._send("GET", _path(job_id), params=params, waits=chunk)
            job = _job(response)
            if job.is_terminal:
                return job
            held = time.monotonic() - started
            if job.status == last_status and held < min(1.0, chunk / 2):
                pause = self._backoff.delay(idle_polls, _retry_after(response))
                idle_polls += 1
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                await asyncio.sleep(pause)
            else:
                idle_polls = 0
            last_status = job.status

    async def events(
        self, job_id: str, *, after: int | None = None
    ) -> AsyncIterator[EventResource]:
        """The job's events in order, each once, ending after its terminal ``status`` event:
        the stored log from the start (or after sequence number ``after``), then live ones.
        A dropped connection or a restarted server is reconnected with ``Last-Event-ID``;
        ``ConnectionFailed`` once reconnecting has failed for ``reconnect_for`` seconds."""
        last = after
        broken_since: float | None = None  # when the current run of failed connections began
        failures = 0
        while True:
            connected: builtins.list[bool] = []
            try:
                async for event in self._stream(job_id, last, connected):
                    last, failures, broken_since = event.sequence_number, 0, None
                    yield event
                    if event.is_terminal:
                        return
                return  # 204: finished, nothing after the cursor
            except _StreamBroken as exc:
                now = time.monotonic()
                if connected or broken_since is None:  # a quiet stream that broke: a new run
                    broken_since, failures = now, 0
                if now - broken_since >= self._reconnect_for:
                    raise ConnectionFailed(
                        f"the event stream of {job_id} broke and could not be resumed: {exc}"
                    ) from None
                await asyncio.sleep(self._backoff.delay(failures, exc.retry_after))
                failures += 1

    async def _stream(
        self, job_id: str, last: int | None, connected: builtins.list[bool]
    ) -> AsyncIterator[EventResource]:
        headers = {"Accept": "text/event-stream"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        timeout = httpx.Timeout(self._timeout, read=max(self._timeout, STREAM_READ_SECONDS))
        try:
            async with self._http.stream(
                "GET", _path(job_id, "events"), headers=headers, timeout=timeout
            ) as response:
                if response.status_code == 204:
                    return
                if response.status_code in RETRIED_STATUSES:
                    await response.aread()
                    raise _StreamBroken(f"HTTP {response.status_code}", _retry_after(response))
                if response.is_error:
                    await response.aread()
                    raise _error(response)
                connected.append(True)
                async for sse in EventSource(response).aiter_sse():
                    if not sse.data:
                        continue
                    try:
                        event = EventResource.model_validate_json(sse.data)
                    except ValidationError:
                        raise ConnectionFailed(
                            f"the event stream of {job_id} sent something that is not an event"
                        ) from None
                    if last is None or event.sequence_number > last:
                        yield event
        except httpx.TransportError as exc:
            raise _StreamBroken(str(exc) or exc.__class__.__name__, None) from exc
        # The server closed the stream before the terminal event (it is shutting down).
        raise _StreamBroken("the server ended the stream", None)

    async def kinds(self) -> builtins.list[KindResource]:
        """The job kinds the server runs, with their input JSON Schemas and defaults."""
        response = await self._send("GET", "/v1/kinds")
        return parse(KindList, response).data

    # -- transport ----------------------------------------------------------------------------
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
    ) -> httpx.Response:
        """``repeatable=False``: a call that must not be made twice is retried only when the
        server cannot have acted on it (the connection was never made, or 429/503)."""
        timeout = httpx.Timeout(self._timeout, read=self._timeout + waits)
        retry = 0
        while True:
            try:
                response = await self._http.request(
                    method, path, json=json, params=params, headers=headers, timeout=timeout
                )
            except httpx.TransportError as exc:
                if retry >= self._retries or not (repeatable or isinstance(exc, NOT_SENT)):
                    maybe = "" if repeatable else " (not retried: it may have been done)"
                    raise ConnectionFailed(
                        f"cannot reach {self.server}: {exc or exc.__class__.__name__}{maybe}"
                    ) from None
                await asyncio.sleep(self._backoff.delay(retry))
                retry += 1
                continue
            retried = RETRIED_STATUSES if repeatable else REFUSED_STATUSES
            if response.status_code in retried and retry < self._retries:
                await asyncio.sleep(self._backoff.delay(retry, _retry_after(response)))
                retry += 1
                continue
            if response.is_error:
                error = _error(response)
                if not (gone_ok_on_retry and retry and isinstance(error, NotFound)):
                    raise error
            return response


class _StreamBroken(Exception):
    def __init__(self, reason: str, retry_after: float | None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _path(job_id: str, *rest: str) -> str:
    return resource_path("/v1/jobs", job_id, *rest)


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}".rstrip("0").rstrip(".") or "0"


def _job(response: httpx.Response) -> JobResource:
    return parse(JobResource, response)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:  # the other form RFC 9110 allows: an HTTP date
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error(response: httpx.Response) -> Exception:
    try:
        problem = Problem.model_validate_json(response.content)
    except ValidationError:
        problem = Problem(
            type="about:blank",
            title=response.reason_phrase or "Error",
            status=response.status_code,
            detail=response.text[:500] or response.reason_phrase,
        )
    return error_for(problem, _retry_after(response))
