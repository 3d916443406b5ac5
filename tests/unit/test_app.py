"""App: registering job kinds, validating input, and preparing submissions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from longjobs import App, Context, RetryPolicy, Settings
from longjobs.app import request_hash
from longjobs.backends.base import Completed, Failed
from longjobs.errors import ConfigurationError, InvalidInput, JobNotFound, UnknownKind
from longjobs.models import Event, Job, Status


class Document(BaseModel):
    text: str
    language: str = "en"
    max_words: int = Field(100, ge=1)


class Summary(BaseModel):
    summary: str


def make_app(**settings: float) -> App:
    return App("memory://", settings=Settings(**settings))  # type: ignore[arg-type]  # numbers only


@pytest.fixture
def app() -> App:
    app = make_app()

    @app.job(timeout=600, max_attempts=5, result_ttl=3600, description="Summarize a text")
    async def summarize(ctx: Context, doc: Document) -> Summary:
        return Summary(summary=doc.text[: doc.max_words])

    @app.job
    def count_words(ctx: Context, text: str) -> int:
        """Count the words of a text.

        A sync handler: it runs in a thread.
        """
        return len(text.split())

    @app.job(name="ping")
    async def no_input(ctx: Context) -> None:
        return None

    return app


# -- registration ----------------------------------------------------------------------------


def test_a_kind_is_named_after_its_function(app: App) -> None:
    assert set(app.kinds) == {"summarize", "count_words", "ping", "response"}  # + the built-in
    assert app.kind("summarize").name == "summarize"


def test_the_decorator_returns_the_function_unchanged() -> None:
    app = make_app()

    async def handler(ctx: Context) -> None:
        return None

    assert app.job(handler) is handler
    assert app.kind("handler").handler is handler


def test_a_name_given_at_registration_wins(app: App) -> None:
    assert app.kind("ping").handler.__name__ == "no_input"


def test_registering_a_name_twice_is_a_configuration_error(app: App) -> None:
    async def summarize(ctx: Context) -> None:
        return None

    with pytest.raises(ConfigurationError, match="summarize"):
        app.job(summarize)


@pytest.mark.parametrize("arity", [0, 3])
def test_a_handler_takes_ctx_and_at_most_one_input(arity: int) -> None:
    app = make_app()

    def no_args() -> None:
        return None

    def three_args(ctx: Context, a: int, b: int) -> None:
        return None

    with pytest.raises(ConfigurationError, match="ctx"):
        app.job(no_args if arity == 0 else three_args)


def test_max_attempts_must_be_at_least_one() -> None:
    app = make_app()

    with pytest.raises(ConfigurationError, match="max_attempts"):

        @app.job(max_attempts=0)
        async def never(ctx: Context) -> None:
            return None


def test_the_input_schema_comes_from_the_annotation(app: App) -> None:
    schema = app.kind("summarize").input_schema()

    assert set(schema["properties"]) == {"text", "language", "max_words"}
    assert schema["required"] == ["text"]
    assert app.kind("count_words").input_schema() == {"type": "string"}
    assert app.kind("ping").input_schema() == {}


def test_the_output_schema_comes_from_the_return_annotation(app: App) -> None:
    assert set(app.kind("summarize").output_schema()["properties"]) == {"summary"}
    assert app.kind("ping").output_schema() == {}


def test_sync_and_async_handlers_are_told_apart(app: App) -> None:
    assert app.kind("summarize").is_async
    assert not app.kind("count_words").is_async


def test_the_description_defaults_to_the_docstrings_first_line(app: App) -> None:
    assert app.kind("count_words").description == "Count the words of a text."
    assert app.kind("summarize").description == "Summarize a text"
    assert app.kind("ping").description is None


def test_registration_keeps_timeout_attempts_ttl_and_retry() -> None:
    app = make_app()
    policy = RetryPolicy(base_delay=5.0)

    @app.job(timeout=30, max_attempts=2, result_ttl=60, retry=policy)
    async def careful(ctx: Context) -> None:
        return None

    kind = app.kind("careful")
    assert (kind.timeout_seconds, kind.max_attempts, kind.result_ttl_seconds) == (30, 2, 60)
    assert kind.retry is policy


def test_an_unknown_kind_is_reported_by_name(app: App) -> None:
    with pytest.raises(UnknownKind, match="translate"):
        app.kind("translate")


# -- input -----------------------------------------------------------------------------------


def test_valid_input_comes_back_as_json_with_defaults(app: App) -> None:
    value = app.kind("summarize").validate_input({"text": "hello"})

    assert value == {"text": "hello", "language": "en", "max_words": 100}


def test_invalid_input_lists_each_field_at_fault(app: App) -> None:
    with pytest.raises(InvalidInput) as caught:
        app.kind("summarize").validate_input({"language": 7, "max_words": 0})

    error = caught.value
    assert error.kind == "summarize"
    by_field = {tuple(e["loc"]): e for e in error.errors}
    assert set(by_field) == {("text",), ("language",), ("max_words",)}
    assert by_field[("text",)]["type"] == "missing"
    assert by_field[("language",)]["type"] == "string_type"
    assert by_field[("max_words",)]["type"] == "greater_than_equal"
    assert all(set(e) == {"loc", "msg", "type"} for e in error.errors)
    assert all(isinstance(e["msg"], str) and e["msg"] for e in error.errors)


def test_a_kind_without_input_refuses_one(app: App) -> None:
    assert app.kind("ping").validate_input(None) is None
    assert app.kind("ping").validate_input({}) is None
    with pytest.raises(InvalidInput) as raised:
        app.kind("ping").validate_input({"anything": [1, 2]})
    assert raised.value.errors == [
        {"loc": [], "msg": "this kind takes no input", "type": "no_input"}
    ]


def test_the_handler_receives_a_model_instance(app: App) -> None:
    loaded = app.kind("summarize").load_input({"text": "hi"})

    assert loaded == Document(text="hi")


def test_results_are_stored_as_compact_json(app: App) -> None:
    assert app.kind("summarize").complete(Summary(summary="s")) == Completed(b'{"summary":"s"}')
    assert app.kind("ping").complete({"a": [1, 2]}) == Completed(b'{"a":[1,2]}')


def test_a_result_that_does_not_fit_the_return_type_fails_the_job(app: App) -> None:
    outcome = app.kind("summarize").complete("not a summary")

    assert isinstance(outcome, Failed)
    assert outcome.error.type == "invalid_result"
    assert outcome.retry_in is None


# -- prepare ---------------------------------------------------------------------------------


def test_prepare_fills_defaults_from_the_kind(app: App) -> None:
    new = app.prepare("summarize", {"text": "hello"}, tenant="acme")

    assert re.fullmatch(r"job_[0-9a-f]{32}", new.id)
    assert (new.tenant, new.kind) == ("acme", "summarize")
    assert new.input == {"text": "hello", "language": "en", "max_words": 100}
    assert (new.max_attempts, new.timeout_seconds, new.result_ttl_seconds) == (5, 600, 3600)
    assert (new.priority, new.delay_seconds, new.metadata) == (0, 0.0, {})
    assert (new.idempotency_key, new.request_hash) == (None, None)


def test_prepare_falls_back_to_the_settings_result_ttl() -> None:
    app = make_app(result_ttl_seconds=42.0)

    @app.job
    async def quick(ctx: Context) -> None:
        return None

    new = app.prepare("quick")
    assert (new.result_ttl_seconds, new.max_attempts, new.timeout_seconds) == (42.0, 3, None)


def test_prepare_lets_the_submission_override_the_kind(app: App) -> None:
    new = app.prepare(
        "summarize",
        {"text": "hello"},
        priority=7,
        max_attempts=1,
        timeout_seconds=5,
        result_ttl_seconds=10,
        delay_seconds=2.5,
        metadata={"team": "search"},
    )

    assert (new.priority, new.max_attempts, new.timeout_seconds) == (7, 1, 5)
    assert (new.result_ttl_seconds, new.delay_seconds, new.metadata) == (
        10,
        2.5,
        {"team": "search"},
    )


def test_prepare_hashes_the_validated_request_for_an_idempotency_key(app: App) -> None:
    short = app.prepare("summarize", {"text": "hi"}, idempotency_key="k")
    explicit = app.prepare(
        "summarize", {"text": "hi", "language": "en", "max_words": 100}, idempotency_key="k"
    )
    given = app.prepare("summarize", {"text": "hi"}, idempotency_key="k", body_hash="abc")

    assert short.request_hash is not None
    assert short.request_hash == explicit.request_hash
    assert given.request_hash == "abc"


def test_prepare_rejects_bad_input_and_unknown_kinds(app: App) -> None:
    with pytest.raises(InvalidInput):
        app.prepare("summarize", {"txt": "typo"})
    with pytest.raises(UnknownKind):
        app.prepare("translate", {})


def test_request_hash_is_stable_under_key_order() -> None:
    one = request_hash("summarize", {"a": 1, "b": {"x": 1, "y": 2}})
    other = request_hash("summarize", {"b": {"y": 2, "x": 1}, "a": 1})

    assert one == other
    assert re.fullmatch(r"[0-9a-f]{64}", one)
    assert request_hash("translate", {"a": 1, "b": {"x": 1, "y": 2}}) != one
    assert request_hash("summarize", {"a": 2, "b": {"x": 1, "y": 2}}) != one


# -- operations on the memory backend --------------------------------------------------------


@pytest.fixture
async def opened(app: App) -> AsyncIterator[App]:
    async with app:
        yield app


async def test_submit_then_get_returns_the_pending_job(opened: App) -> None:
    job = await opened.submit("summarize", {"text": "hello"}, tenant="acme")

    stored = await opened.get(job.id, tenant="acme")

    assert (stored.id, stored.status, stored.input["language"]) == (job.id, Status.PENDING, "en")


async def test_another_tenants_job_is_not_found(opened: App) -> None:
    job = await opened.submit("summarize", {"text": "hello"}, tenant="acme")

    with pytest.raises(JobNotFound):
        await opened.get(job.id, tenant="globex")
    with pytest.raises(JobNotFound):
        await opened.cancel(job.id, tenant="globex")


async def test_an_idempotent_resubmission_returns_the_first_job(opened: App) -> None:
    first, created = await opened.submit_idempotent("summarize", {"text": "a"}, idempotency_key="k")
    again, created_again = await opened.submit_idempotent(
        "summarize", {"text": "a"}, idempotency_key="k"
    )

    assert (created, created_again) == (True, False)
    assert again.id == first.id


async def test_cancelling_a_pending_job_through_the_app(opened: App) -> None:
    job = await opened.submit("ping")

    cancelled = await opened.cancel(job.id)

    assert cancelled.status is Status.CANCELLED
    assert (await opened.wait(job.id, timeout=1.0)).status is Status.CANCELLED


async def test_a_followed_stream_ends_with_the_terminal_event_that_lands_between_its_reads(
    opened: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await opened.submit("ping")
    backend = opened.backend
    read_job = backend.get_job

    async def finished_just_before(tenant: str, job_id: str, *, with_result: bool = True) -> Job:
        # The job ends after the stream found no new event and before it reads the job's status.
        monkeypatch.setattr(backend, "get_job", read_job)
        await opened.cancel(job_id, tenant=tenant)
        found = await read_job(tenant, job_id, with_result=with_result)
        assert found is not None
        return found

    stream = opened.events(job.id, follow=True)
    first = await anext(stream)
    monkeypatch.setattr(backend, "get_job", finished_just_before)
    rest = [event async for event in stream]

    assert (first.sequence_number, first.data["status"]) == (0, "pending")
    assert [(e.sequence_number, e.type, e.data["status"]) for e in rest] == [
        (1, "status", "cancelled")
    ]


async def test_a_followed_log_ends_with_a_terminal_event_committed_between_two_reads(
    opened: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await opened.submit("ping")
    backend = await opened.open()
    list_events = backend.list_events

    async def read_then_cancel(*args: Any, **kwargs: Any) -> list[Event] | None:
        events = await list_events(*args, **kwargs)
        if events == []:  # the job ends after this read found nothing new
            await opened.cancel(job.id)
        return events

    monkeypatch.setattr(backend, "list_events", read_then_cancel)

    seen = [(e.type, e.data.get("status")) async for e in opened.events(job.id)]

    assert seen == [("status", "pending"), ("status", "cancelled")]
