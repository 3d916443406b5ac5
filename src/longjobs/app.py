"""``App``: the registry of job kinds and the handle on the backend — the one object users create.

>>> from pydantic import BaseModel
>>> from longjobs import App, Context
>>> app = App("memory://")
>>> class Doc(BaseModel):
...     text: str
>>> @app.job(timeout=600, max_attempts=3)
... async def count_words(ctx: Context, doc: Doc) -> int:
...     await ctx.progress(1.0, stage="counting")
...     return len(doc.text.split())
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar, Unpack, get_type_hints, overload

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from longjobs import metrics, responses
from longjobs.backends import open_backend
from longjobs.backends.base import (
    ApiKey,
    Backend,
    Completed,
    Failed,
    NewJob,
    ResultStream,
    StoredResult,
)
from longjobs.errors import ConfigurationError, InvalidInput, JobNotFound, UnknownKind
from longjobs.follow import follow_events, read_events
from longjobs.keys import key_hash, new_api_key
from longjobs.models import JSON, Event, Job, JobError, Page, Status, new_job_id
from longjobs.retry import RetryPolicy
from longjobs.settings import Settings
from longjobs.webhooks.ssrf import Policy, Resolver, check_url, system_resolver

DEFAULT_TENANT = "default"

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)


@dataclass(frozen=True, slots=True)
class JobKind:
    """A registered job definition: its handler, schemas and defaults."""

    name: str
    handler: Handler
    input_adapter: TypeAdapter[Any] | None
    output_adapter: TypeAdapter[Any] | None
    is_async: bool
    timeout_seconds: float | None
    max_attempts: int
    result_ttl_seconds: float | None
    retry: RetryPolicy
    description: str | None

    def validate_input(self, raw: JSON) -> JSON:
        """The input as JSON once validated against the kind's schema; raises InvalidInput."""
        if self.input_adapter is None:  # takes no input: null or {} only, stored as null
            if raw is not None and raw != {}:
                error = {"loc": [], "msg": "this kind takes no input", "type": "no_input"}
                raise InvalidInput(self.name, [error])
            return None
        try:
            value = self.input_adapter.validate_python(raw)
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            raise InvalidInput(self.name, errors) from None
        return self.input_adapter.dump_python(value, mode="json")

    def load_input(self, raw: JSON) -> Any:
        """The Python value the handler receives (a model instance for a model schema)."""
        return raw if self.input_adapter is None else self.input_adapter.validate_python(raw)

    def complete(self, value: Any) -> Completed | Failed:
        """The outcome of a handler that returned ``value``: its result as JSON, or a failure
        ``invalid_result`` (not retried) when it does not fit the declared return type."""
        try:
            if self.output_adapter is not None:
                value = self.output_adapter.validate_python(value)
                return Completed(self.output_adapter.dump_json(value))
            return Completed(_ANY.dump_json(value))
        except (ValidationError, PydanticSerializationError) as exc:
            message = f"the handler's result does not fit its return type: {exc}"
            return Failed(JobError(type="invalid_result", message=message[:2000]))

    def input_schema(self) -> dict[str, JSON]:
        return self.input_adapter.json_schema() if self.input_adapter is not None else {}

    def output_schema(self) -> dict[str, JSON]:
        return self.output_adapter.json_schema() if self.output_adapter is not None else {}


_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def _kind_from_function(
    fn: Handler,
    *,
    name: str | None,
    timeout: float | None,
    max_attempts: int,
    result_ttl: float | None,
    retry: RetryPolicy | None,
    description: str | None,
) -> JobKind:
    params = list(inspect.signature(fn).parameters.values())
    if not 1 <= len(params) <= 2:
        raise ConfigurationError(f"{fn.__qualname__}: a handler takes (ctx) or (ctx, input)")
    hints = get_type_hints(fn)
    input_adapter: TypeAdapter[Any] | None = None
    if len(params) == 2:
        input_adapter = TypeAdapter(hints.get(params[1].name, Any))
    returns = hints.get("return")
    output_adapter = TypeAdapter(returns) if returns not in (None, type(None), Any) else None
    if max_attempts < 1:
        raise ConfigurationError(f"{fn.__qualname__}: max_attempts must be at least 1")
    doc = inspect.getdoc(fn)
    return JobKind(
        name=name or fn.__name__,
        handler=fn,
        input_adapter=input_adapter,
        output_adapter=output_adapter,
        is_async=inspect.iscoroutinefunction(fn),
        timeout_seconds=timeout,
        max_attempts=max_attempts,
        result_ttl_seconds=result_ttl,
        retry=retry or RetryPolicy(),
        description=description or (doc.splitlines()[0] if doc else None),
    )


def request_hash(kind: str, body: JSON) -> str:
    """A digest of a submission, to tell a replay from a different request under one key."""
    text = json.dumps([kind, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class SubmitOptions(TypedDict, total=False):
    """What a submission may set besides its kind and input."""

    tenant: str
    priority: int
    timeout_seconds: float | None
    max_attempts: int | None
    result_ttl_seconds: float | None
    delay_seconds: float
    metadata: dict[str, JSON] | None
    idempotency_key: str | None
    webhook_url: str | None
    """Where to POST the job's terminal event (the API checks it against the SSRF rules
    first; every delivery is checked again)."""


class App:
    """Job kinds plus the backend they are stored in.

    ``App()`` reads ``LONGJOBS_DATABASE_URL`` (default ``sqlite:///longjobs.db``); pass a URL or
    a ``Settings`` to choose. The backend opens on first use or with ``async with app``.
    Every App has the built-in kind ``response`` (``/v1/responses``, calling the upstream of
    ``LONGJOBS_UPSTREAM_BASE_URL``) unless made with ``responses_api=False``.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        responses_api: bool = True,
    ):
        self.settings = settings or Settings()
        self.database_url = database_url or self.settings.database_url
        self.webhook_resolver: Resolver = system_resolver
        """How webhook hosts are resolved, at registration and at each delivery (tests and
        deployments with their own name service may replace it)."""
        self.kinds: dict[str, JobKind] = {}
        self._backend: Backend | None = None
        self._opening: asyncio.Lock | None = None
        self._keys_exist = False
        self._no_keys_until = 0.0  # monotonic time until which "no key" needs no new read
        if responses_api:  # the built-in kind behind /v1/responses
            responses.install(self)

    # -- registration --------------------------------------------------------------------
    @overload
    def job(self, fn: F) -> F: ...

    @overload
    def job(
        self,
        *,
        name: str | None = None,
        timeout: float | None = None,
        max_attempts: int = 3,
        result_ttl: float | None = None,
        retry: RetryPolicy | None = None,
        description: str | None = None,
    ) -> Callable[[F], F]: ...

    def job(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        timeout: float | None = None,
        max_attempts: int = 3,
        result_ttl: float | None = None,
        retry: RetryPolicy | None = None,
        description: str | None = None,
    ) -> F | Callable[[F], F]:
        """Register ``fn(ctx, input) -> output`` as a job kind (named after the function).

        ``timeout`` is a hard per-attempt deadline in seconds; ``max_attempts`` counts the first
        run; ``result_ttl`` is how long the result is kept. Works with and without parentheses;
        the function itself is returned unchanged.
        """

        def register(f: F) -> F:
            kind = _kind_from_function(
                f,
                name=name,
                timeout=timeout,
                max_attempts=max_attempts,
                result_ttl=result_ttl,
                retry=retry,
                description=description,
            )
            if kind.name in self.kinds:
                raise ConfigurationError(f"job kind {kind.name!r} is registered twice")
            self.kinds[kind.name] = kind
            return f

        return register(fn) if fn is not None else register

    def kind(self, name: str) -> JobKind:
        try:
            return self.kinds[name]
        except KeyError:
            raise UnknownKind(name) from None

    # -- backend lifecycle ---------------------------------------------------------------
    async def open(self) -> Backend:
        """Open the backend (once) and return it."""
        if self._backend is not None:
            return self._backend
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._backend is None:
                backend = open_backend(self.database_url, self.settings)
                await backend.open()
                self._backend = backend
        return self._backend

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("the app is not open: use `async with app` or `await app.open()`")
        return self._backend

    async def close(self) -> None:
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await backend.close()

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- operations ----------------------------------------------------------------------
    async def submit(
        self,
        kind: str,
        input: JSON = None,
        **options: Unpack[SubmitOptions],
    ) -> Job:
        """Validate and durably enqueue one job; returns it as stored.

        Raises UnknownKind, InvalidInput, IdempotencyConflict, StorageUnavailable, or
        UnsafeDestination for a ``webhook_url`` that may not receive webhooks.
        """
        job, _created = await self.submit_idempotent(kind, input, **options)
        return job

    async def submit_idempotent(
        self,
        kind: str,
        input: JSON = None,
        *,
        body_hash: str | None = None,
        **options: Unpack[SubmitOptions],
    ) -> tuple[Job, bool]:
        """Like ``submit``; also says whether the job was created (False: an idempotent replay).
        ``body_hash`` identifies the request an idempotency key was first used with."""
        new = self.prepare(kind, input, body_hash=body_hash, **options)
        backend = await self.open()
        job, created = await backend.create_job(new)
        if created:
            metrics.SUBMITTED.labels(kind).inc()
        return job, created

    def prepare(
        self,
        kind: str,
        input: JSON = None,
        *,
        body_hash: str | None = None,
        **options: Unpack[SubmitOptions],
    ) -> NewJob:
        """Validate a submission into the record ``create_job`` stores; options left out take
        the kind's defaults, then the settings'."""
        definition = self.kind(kind)
        value = definition.validate_input(input)
        webhook_url = options.get("webhook_url")
        if webhook_url is not None:  # its form; the address is checked at each delivery
            check_url(webhook_url, Policy.allowing(self.settings.webhook_allow_networks))
        idempotency_key = options.get("idempotency_key")
        if idempotency_key is not None and body_hash is None:
            body_hash = request_hash(kind, value)
        return NewJob(
            id=new_job_id(),
            tenant=options.get("tenant", DEFAULT_TENANT),
            kind=kind,
            input=value,
            priority=options.get("priority", 0),
            max_attempts=options.get("max_attempts") or definition.max_attempts,
            timeout_seconds=options.get("timeout_seconds") or definition.timeout_seconds,
            result_ttl_seconds=(
                options.get("result_ttl_seconds")
                or definition.result_ttl_seconds
                or self.settings.result_ttl_seconds
            ),
            delay_seconds=options.get("delay_seconds", 0.0),
            metadata=options.get("metadata") or {},
            idempotency_key=idempotency_key,
            request_hash=body_hash,
            webhook_url=webhook_url,
        )

    async def submit_many(
        self, kind: str, inputs: Sequence[JSON], *, tenant: str = DEFAULT_TENANT
    ) -> list[Job]:
        """Validate and enqueue many jobs of one kind in a single transaction."""
        new = [self.prepare(kind, value, tenant=tenant) for value in inputs]
        backend = await self.open()
        jobs = await backend.create_jobs(new)
        metrics.SUBMITTED.labels(kind).inc(len(jobs))
        return jobs

    async def get(self, job_id: str, *, tenant: str = DEFAULT_TENANT) -> Job:
        """The job; raises JobNotFound for a missing id or another tenant's job."""
        backend = await self.open()
        job = await backend.get_job(tenant, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def list(
        self,
        *,
        tenant: str = DEFAULT_TENANT,
        status: Sequence[Status] = (),
        kind: Sequence[str] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        backend = await self.open()
        return await backend.list_jobs(tenant, status=status, kind=kind, limit=limit, cursor=cursor)

    async def cancel(self, job_id: str, *, tenant: str = DEFAULT_TENANT) -> Job:
        """Cancel: pending jobs at once, running ones through their handler's cleanup."""
        backend = await self.open()
        job = await backend.request_cancel(tenant, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def delete(self, job_id: str, *, tenant: str = DEFAULT_TENANT) -> None:
        """Forget a job, its events and result; a running job is asked to cancel first."""
        backend = await self.open()
        job = await backend.request_cancel(tenant, job_id)
        if job is None or not await backend.delete_job(tenant, job_id):
            raise JobNotFound(job_id)

    async def result(self, job_id: str, *, tenant: str = DEFAULT_TENANT) -> StoredResult | None:
        """The stored result body, or None (not finished, failed, or expired: see ``get``)."""
        backend = await self.open()
        return await backend.get_result(tenant, job_id)

    async def stream_result(
        self, job_id: str, *, tenant: str = DEFAULT_TENANT, chunk_size: int = 256 * 1024
    ) -> ResultStream | None:
        """The stored result read part by part (see ``Backend.stream_result``), or None."""
        backend = await self.open()
        return await backend.stream_result(tenant, job_id, chunk_size=chunk_size)

    # -- API keys ------------------------------------------------------------------------
    async def create_api_key(self, tenant: str, *, name: str | None = None) -> tuple[ApiKey, str]:
        """Create a key for ``tenant``: its record and the secret, which is stored nowhere."""
        record, secret = new_api_key(tenant, name)
        backend = await self.open()
        await backend.create_api_key(record, key_hash(secret))
        self._keys_exist = True
        return record, secret

    async def keys_required(self) -> bool:
        """True once any API key exists. Keys are revoked, never deleted, so once true it stays
        true and is not read again. While false, the store is asked at most once a second: a
        first key made by this App counts at once, one made by ``longjobs keys create`` within
        a second (as a revocation does)."""
        if not self._keys_exist and time.monotonic() >= self._no_keys_until:
            backend = await self.open()
            self._keys_exist = await backend.has_api_keys()
            self._no_keys_until = time.monotonic() + _KEY_RECHECK_SECONDS
        return self._keys_exist

    async def authenticate(self, secret: str) -> str | None:
        """The tenant of an active key, or None."""
        backend = await self.open()
        return await backend.authenticate(key_hash(secret))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float,
        tenant: str = DEFAULT_TENANT,
        until_change_from: Status | None = None,
    ) -> Job:
        """The job once terminal (or once its status differs from ``until_change_from``), or as
        it is when ``timeout`` seconds have passed."""
        backend = await self.open()
        deadline = time.monotonic() + timeout
        while True:
            with backend.watch_job(job_id) as watch:
                job = await self.get(job_id, tenant=tenant)
                changed = until_change_from is not None and job.status != until_change_from
                remaining = deadline - time.monotonic()
                if job.is_terminal or changed or remaining <= 0:
                    return job
                await watch.wait(remaining)

    async def events(
        self, job_id: str, *, after: int = -1, tenant: str = DEFAULT_TENANT, follow: bool = True
    ) -> AsyncIterator[Event]:
        """The job's events after ``after``, in order; with ``follow``, live until the terminal
        status event. Raises JobNotFound."""
        backend = await self.open()
        if not follow:
            async for event in read_events(backend, tenant, job_id, after=after):
                yield event
            return
        async for batch in follow_events(backend, tenant, job_id, after=after):
            for event in batch:
                yield event


_KEY_RECHECK_SECONDS = 1.0
