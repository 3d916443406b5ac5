"""``/v1/responses`` with the official ``openai`` SDK as the client, against a real ``longjobs
serve`` whose upstream is a local test double (``tests.fake_upstream``): background mode polled
and streamed, resumed streams, replays, cancellation reaching the upstream, inline mode, errors,
tenants, usage, and a worker killed in the middle of a generation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from tests.acceptance.harness import Cluster, create_key, wait_until
from tests.acceptance.receiver import RECEIVER_ENV, Receiver
from tests.fake_upstream import FakeUpstream, answer, running_upstream

pytestmark = pytest.mark.acceptance

TOKENS = 24
FULL_TEXT = "".join(answer(TOKENS))


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream(FakeUpstream(tokens=TOKENS, rate=40.0)) as double:
        yield double


@pytest.fixture(autouse=True)
def default_behaviour(upstream: FakeUpstream) -> None:
    """Each test starts from the double's defaults, with nothing recorded."""
    upstream.tokens, upstream.rate, upstream.fail_with = TOKENS, 40.0, []
    upstream.records.clear()
    upstream.background.clear()
    upstream.requests.clear()


def upstream_env(upstream: FakeUpstream) -> dict[str, str]:
    return {
        "LONGJOBS_UPSTREAM_BASE_URL": upstream.base_url,
        "LONGJOBS_UPSTREAM_MAX_RETRIES": "3",
        "LONGJOBS_WEBHOOK_POLL_INTERVAL": "0.1",
        **RECEIVER_ENV,
    }


@pytest.fixture(scope="module")
def deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    store: str,
    upstream: FakeUpstream,
) -> Iterator[Cluster]:
    from tests.acceptance.conftest import database_url

    cluster = Cluster(tmp_path_factory.mktemp("responses"), database_url(request, store))
    try:
        cluster.serve(concurrency=16, env=upstream_env(upstream))
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def client(deployment: Cluster) -> Iterator[openai.OpenAI]:
    base_url = deployment.processes[0].base_url
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused-in-open-mode") as sdk:
        yield sdk


def poll(client: openai.OpenAI, response_id: str, *, timeout: float = 30.0) -> list[Response]:
    """Every state seen while polling until the response is final."""
    seen = [client.responses.retrieve(response_id)]
    deadline = time.monotonic() + timeout
    while seen[-1].status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"{response_id} still {seen[-1].status}"
        time.sleep(0.05)
        seen.append(client.responses.retrieve(response_id))
    return seen


def event_dicts(events: Any) -> list[dict[str, Any]]:
    return [event.model_dump(exclude_none=True, warnings=False) for event in events]


def deltas_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


# -- background mode ------------------------------------------------------------------------------
def test_a_background_response_is_queued_then_polled_to_completion(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    created = client.responses.create(
        model="double-1", input="poll me", background=True, metadata={"case": "poll"}
    )

    assert created.status == "queued"
    assert created.id.startswith("resp_")
    assert created.background is True
    seen = poll(client, created.id)
    final = seen[-1]
    assert "in_progress" in [r.status for r in seen]
    assert final.status == "completed"
    assert final.output_text == FULL_TEXT  # the SDK's own property over output[].content[]
    assert final.output[0].type == "message"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, TOKENS)
    assert final.model == "double-1"
    assert final.metadata == {"case": "poll"}
    assert [record.finished for record in upstream.streams_for("poll me")] == [True]


def test_a_background_stream_resumes_exactly_after_n_and_replays_from_zero(
    client: openai.OpenAI,
) -> None:
    stream = client.responses.create(
        model="double-1", input="stream me", background=True, stream=True
    )
    first: list[dict[str, Any]] = []
    for event in stream:
        first.append(event.model_dump(exclude_none=True, warnings=False))
        if event.type == "response.output_text.delta" and len(first) >= 8:
            break
    stream.close()  # the client drops; the work goes on
    response_id = first[0]["response"]["id"]
    n = first[-1]["sequence_number"]

    rest = event_dicts(client.responses.retrieve(response_id, stream=True, starting_after=n))
    replay = event_dicts(client.responses.retrieve(response_id, stream=True))

    assert [e["sequence_number"] for e in first + rest] == list(range(len(first) + len(rest)))
    assert replay == first + rest  # the same events, numbered the same, whenever read
    types = [e["type"] for e in replay]
    assert types[:5] == [
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert all("error" not in e for e in replay)
    assert deltas_of(replay) == FULL_TEXT
    assert replay[-1]["response"]["output"][0]["content"][0]["text"] == FULL_TEXT
    with client.responses.stream(response_id=response_id) as again:
        assert again.get_final_response().output_text == FULL_TEXT


def test_a_stream_that_starts_after_the_end_is_empty_and_ends(client: openai.OpenAI) -> None:
    created = client.responses.create(model="double-1", input="short", background=True)
    last = len(event_dicts(client.responses.retrieve(created.id, stream=True))) - 1

    after_end = event_dicts(client.responses.retrieve(created.id, stream=True, starting_after=last))

    assert after_end == []


def test_cancel_closes_the_upstream_stream_and_keeps_the_text_so_far(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.tokens, upstream.rate = 400, 20.0  # 20 s of generation unless stopped
    created = client.responses.create(model="double-1", input="cancel me", background=True)
    wait_until(
        lambda: len(client.responses.retrieve(created.id).output_text) > 10,
        timeout=20,
        what="some text to stream",
    )

    asked = time.monotonic()
    cancelled = client.responses.cancel(created.id)

    assert cancelled.status == "cancelled"
    [record] = upstream.streams_for("cancel me")
    wait_until(lambda: record.closed_by_client, timeout=5, what="the upstream to see the close")
    assert record.closed_by_client_at is not None
    assert record.closed_by_client_at - asked < 1.0
    assert not record.finished
    kept = cancelled.output_text
    assert kept.startswith("tok0 tok1 ")
    assert "".join(answer(400)).startswith(kept)
    assert cancelled.usage is not None
    assert cancelled.usage.output_tokens >= kept.count("tok")
    time.sleep(0.5)
    again = client.responses.cancel(created.id)  # idempotent
    later = client.responses.retrieve(created.id)
    assert again.status == later.status == "cancelled"  # sticky
    assert later.output_text == kept
    replay = event_dicts(client.responses.retrieve(created.id, stream=True))
    assert deltas_of(replay) == kept
    assert replay[-1]["type"] == "response.cancelled"
    assert replay[-1]["response"]["status"] == "cancelled"


def test_cancel_of_a_queued_response_is_immediate(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.tokens = 2
    created = client.responses.create(model="double-1", input="early cancel", background=True)
    cancelled = client.responses.cancel(created.id)

    assert cancelled.status in ("cancelled", "completed")  # it may have finished first
    assert client.responses.retrieve(created.id).status == cancelled.status


# -- inline mode -------------------------------------------------------------------------------
def test_without_background_create_answers_when_done(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="double-1", input=[{"role": "user", "content": "inline"}], instructions="be brief"
    )

    assert response.status == "completed"
    assert response.background is False
    assert response.output_text == FULL_TEXT
    assert client.responses.retrieve(response.id).output_text == FULL_TEXT


def test_without_background_a_stream_runs_through_the_same_path(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    with client.responses.stream(model="double-1", input="inline stream") as stream:
        events = event_dicts(stream)
        final = stream.get_final_response()

    assert final.output_text == FULL_TEXT
    assert deltas_of(events) == FULL_TEXT
    assert [record.finished for record in upstream.streams_for("inline stream")] == [True]


def test_max_output_tokens_ends_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model="double-1", input="cut", max_output_tokens=5)

    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "".join(answer(5))


# -- webhooks ------------------------------------------------------------------------------------
def test_endpoints_receive_openai_shaped_response_webhooks(
    client: openai.OpenAI, deployment: Cluster, upstream: FakeUpstream, receiver: Receiver
) -> None:
    base_url = deployment.processes[0].base_url
    made = httpx.post(f"{base_url}/v1/webhooks", json={"url": receiver.url()}, timeout=10)
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    try:
        completed = client.responses.create(model="double-1", input="hook", background=True)
        incomplete = client.responses.create(model="double-1", input="cut", max_output_tokens=3)
        upstream.tokens, upstream.rate = 400, 20.0
        long = client.responses.create(model="double-1", input="cancel me", background=True)
        client.responses.cancel(long.id)
        ids = {completed.id, incomplete.id, long.id}

        def ours() -> dict[str, Any]:
            events = [
                client.webhooks.unwrap(r.body, r.headers, secret=secret) for r in receiver.received
            ]
            return {
                getattr(e.data, "id", ""): e for e in events if getattr(e.data, "id", "") in ids
            }

        events = wait_until(
            lambda: ours() if len(ours()) == 3 else {}, timeout=30, what="3 webhooks"
        )
    finally:
        httpx.delete(f"{base_url}/v1/webhooks/{made.json()['id']}", timeout=10)

    assert events[completed.id].type == "response.completed"
    assert events[incomplete.id].type == "response.incomplete"
    assert events[long.id].type == "response.cancelled"
    assert all(e.object == "event" and e.id.startswith("evt_") for e in events.values())


# -- upstream failures ----------------------------------------------------------------------------
def test_upstream_429_and_503_are_retried(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.fail_with = [429, 503]
    before = len(upstream.requests)

    response = client.responses.create(model="double-1", input="flaky")

    assert response.status == "completed"
    assert response.output_text == FULL_TEXT
    assert len(upstream.requests) - before == 3


def test_an_upstream_refusal_fails_the_response(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.fail_with = [400]
    created = client.responses.create(model="double-1", input="refused", background=True)
    final = poll(client, created.id)[-1]

    assert final.status == "failed"
    assert final.error is not None
    assert "400" in final.error.message
    events = event_dicts(client.responses.retrieve(created.id, stream=True))
    assert events[-1]["type"] == "response.failed"
    assert all("error" not in e for e in events)  # the error sits inside the response


# -- errors in OpenAI's shape --------------------------------------------------------------------
def test_unknown_ids_are_404_in_openai_shape(client: openai.OpenAI, deployment: Cluster) -> None:
    for response_id in ("resp_0000", "nope", "job_0000"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.responses.retrieve(response_id)
        body = caught.value.body
        assert isinstance(body, dict)
        assert body["type"] == "invalid_request_error"
        assert response_id in body["message"]
        with pytest.raises(openai.NotFoundError):
            client.responses.cancel(response_id)
    base_url = deployment.processes[0].base_url
    job = httpx.post(f"{base_url}/v1/jobs", json={"kind": "crash"})
    other_kind = "resp_" + job.json()["id"].removeprefix("job_")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(other_kind)
    raw = httpx.get(f"{base_url}/v1/responses/resp_1")
    assert raw.status_code == 404
    assert set(raw.json()) == {"error"}
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": "x", "temperature": 9}, "temperature"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
    ],
)
def test_bad_requests_are_400_naming_the_parameter(
    client: openai.OpenAI, deployment: Cluster, body: dict[str, Any], param: str
) -> None:
    base_url = deployment.processes[0].base_url
    raw = httpx.post(f"{base_url}/v1/responses", json=body)

    assert raw.status_code == 400
    assert raw.json()["error"]["param"] == param
    assert raw.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(**body)


def test_delete_forgets_the_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model="double-1", input="delete me")

    client.responses.delete(response.id)

    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)


def test_usage_is_summed_per_tenant(client: openai.OpenAI, deployment: Cluster) -> None:
    base_url = deployment.processes[0].base_url
    before = httpx.get(f"{base_url}/v1/usage").json()
    client.responses.create(model="double-1", input="count me")

    after = httpx.get(f"{base_url}/v1/usage").json()

    assert after["output_tokens"] - before["output_tokens"] == TOKENS
    assert after["input_tokens"] - before["input_tokens"] == 10
    assert (
        after["by_kind"]["response"]["jobs"]
        == before["by_kind"].get("response", {}).get("jobs", 0) + 1
    )
    assert after["total_tokens"] == after["input_tokens"] + after["output_tokens"]
    metrics = httpx.get(f"{base_url}/metrics").text
    assert 'longjobs_model_tokens_total{kind="response",type="output"}' in metrics


# -- tenants and crashes: deployments of their own ---------------------------------------------
@pytest.mark.sqlite_only
def test_tenants_see_only_their_own_responses(
    tmp_path: Path, upstream: FakeUpstream, store: str
) -> None:
    cluster = Cluster(tmp_path)
    try:
        server = cluster.serve(env=upstream_env(upstream))
        _, acme = create_key(cluster, "acme")
        _, globex = create_key(cluster, "globex")
        url = f"{server.base_url}/v1"
        with (
            openai.OpenAI(base_url=url, api_key=acme) as a,
            openai.OpenAI(base_url=url, api_key=globex) as b,
            openai.OpenAI(base_url=url, api_key="lj_wrong") as nobody,
        ):
            mine = a.responses.create(model="double-1", input="acme's", background=True)
            with pytest.raises(openai.NotFoundError):
                b.responses.retrieve(mine.id)
            with pytest.raises(openai.NotFoundError):
                b.responses.cancel(mine.id)
            with pytest.raises(openai.NotFoundError):
                b.responses.delete(mine.id)
            with pytest.raises(openai.NotFoundError):
                list(b.responses.retrieve(mine.id, stream=True))
            with pytest.raises(openai.AuthenticationError):
                nobody.responses.retrieve(mine.id)
            assert poll(a, mine.id)[-1].output_text == FULL_TEXT
            usage = httpx.get(f"{url}/usage", headers={"Authorization": f"Bearer {globex}"})
            assert usage.json()["total_tokens"] == 0
    finally:
        cluster.stop_all()


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_worker_killed_mid_generation_resumes_without_repeating_text(
    tmp_path: Path, upstream: FakeUpstream, request: pytest.FixtureRequest, store: str, api: str
) -> None:
    """Chat upstream: the next attempt continues the stored text (a prefill). Responses
    upstream in background mode: it re-attaches to the same upstream response."""
    from tests.acceptance.conftest import database_url

    upstream.tokens, upstream.rate = 60, 20.0  # 3 s of generation
    env = {**upstream_env(upstream), "LONGJOBS_UPSTREAM_API": api}
    cluster = Cluster(tmp_path, database_url(request, store))
    try:
        server = cluster.serve(worker=False, env=env)
        first = cluster.worker(env=env)
        with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x") as client:
            created = client.responses.create(model="double-1", input="crash me", background=True)
            wait_until(
                lambda: client.responses.retrieve(created.id).output_text.count("tok") >= 10,
                timeout=20,
                what="a third of the text",
            )
            first.kill()
            seen_before_rescue = client.responses.retrieve(created.id).output_text
            cluster.worker(env=env)
            final = poll(client, created.id, timeout=60)[-1]
            replay = event_dicts(client.responses.retrieve(created.id, stream=True))
    finally:
        cluster.stop_all()

    full = "".join(answer(60))
    assert final.status == "completed"
    assert final.output_text == full
    assert deltas_of(replay) == full  # what stream clients saw: nothing twice, nothing missing
    assert final.output_text.startswith(seen_before_rescue)
    if api == "responses":
        [generation] = upstream.responses_for("crash me")  # paid for once
        assert generation.attaches == 2
        assert generation.finished
        assert generation.cancelled_at is None
        assert upstream.streams_for("crash me") == []
        return
    records = upstream.streams_for("crash me")
    assert len(records) == 2
    assert records[0].closed_by_client  # the killed worker's connection went away
    assert records[1].first_token == seen_before_rescue.count("tok")  # continued, not redone
    assert records[1].finished
