"""GET /v1/jobs: stable cursor pagination, newest first, status and kind filters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.http_harness import Harness, open_harness, problem


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path) as harness:
        yield harness


# -- list -----------------------------------------------------------------------------------------
async def test_cursor_pagination_visits_every_job_once_newest_first(h: Harness) -> None:
    submitted = {(await h.submit(input={"text": str(i)}))["id"] for i in range(45)}

    seen: list[dict[str, object]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 10}
        if cursor is not None:
            params["cursor"] = cursor
        response = await h.client.get("/v1/jobs", params=params)
        assert response.status_code == 200
        page = response.json()
        assert page["object"] == "list"
        assert len(page["data"]) <= 10
        seen += page["data"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    ids = [job["id"] for job in seen]
    assert pages == 5
    assert len(ids) == len(set(ids)) == 45
    assert set(ids) == submitted
    created = [str(job["created_at"]) for job in seen]
    assert created == sorted(created, reverse=True)


async def test_default_limit_is_20(h: Harness) -> None:
    for i in range(21):
        await h.submit(input={"text": str(i)})

    page = (await h.client.get("/v1/jobs")).json()

    assert len(page["data"]) == 20
    assert page["next_cursor"] is not None


async def test_status_and_kind_filters_take_repeats_and_commas(h: Harness) -> None:
    echo_done = await h.submit()
    await h.run(echo_done["id"], {"text": "hi"})
    echo_pending = await h.submit()
    tick = await h.submit(kind="tick", input={})
    cancelled = await h.submit()
    await h.client.post(f"/v1/jobs/{cancelled['id']}/cancel")

    async def ids(query: str) -> set[str]:
        response = await h.client.get(f"/v1/jobs?{query}")
        assert response.status_code == 200, response.text
        return {job["id"] for job in response.json()["data"]}

    assert await ids("status=pending") == {echo_pending["id"], tick["id"]}
    assert await ids("status=completed,cancelled") == {echo_done["id"], cancelled["id"]}
    assert await ids("status=completed&status=cancelled") == {echo_done["id"], cancelled["id"]}
    assert await ids("kind=tick") == {tick["id"]}
    assert await ids("kind=tick,echo&status=pending") == {echo_pending["id"], tick["id"]}
    assert await ids("kind=nothing") == set()


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("status=bogus", ["query", "status"]),
        ("status=pending,bogus", ["query", "status"]),
        ("limit=0", ["query", "limit"]),
        ("limit=101", ["query", "limit"]),
        ("limit=ten", ["query", "limit"]),
        ("cursor=not-a-cursor", ["query", "cursor"]),
    ],
)
async def test_bad_list_parameters_are_422_problems(h: Harness, query: str, loc: list[str]) -> None:
    response = await h.client.get(f"/v1/jobs?{query}")

    body = problem(response, 422, "invalid-input")
    assert [error["loc"] for error in body["errors"]] == [loc]
