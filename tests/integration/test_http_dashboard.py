"""``GET /`` and its assets (the dashboard's files, with a strict Content-Security-Policy), and
``GET /v1/stats``, the numbers behind the dashboard's queue overview."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

from longjobs import JobError
from tests.integration.http_harness import open_harness, problem


async def test_the_page_and_its_files_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as h:
        _record, secret = await h.app.create_api_key("ops")  # the page needs no key
        page = await h.client.get("/")
        script = await h.client.get("/dashboard/app.js")
        again = await h.client.get(
            "/dashboard/app.js", headers={"If-None-Match": f'"x", W/{script.headers["etag"]}'}
        )
        style = await h.client.get("/dashboard/style.css")
        head = await h.client.head("/")
        missing = [
            await h.client.get(path)
            for path in ("/dashboard/nope.js", "/dashboard/..%2Fapp.py", "/dashboard/index.html")
        ]
        stats = await h.client.get("/v1/stats")
        keyed_stats = await h.client.get("/v1/stats", headers={"Authorization": f"Bearer {secret}"})

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    # Every file the page names is served from here: nothing from a CDN, no inline script.
    names = re.findall(r'(?:src|href)="(dashboard/[^"]+)"', page.text)
    assert {"dashboard/app.js", "dashboard/style.css"} <= set(names)
    assert "<script>" not in page.text
    assert "http" not in "".join(names)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert again.status_code == 304
    assert style.headers["content-type"].startswith("text/css")
    assert head.status_code == 200
    assert [response.status_code for response in missing] == [404, 404, 404]
    problem(missing[0], 404, "not-found")
    problem(stats, 401, "unauthorized")  # the page needs no key; the API does
    assert keyed_stats.status_code == 200


async def test_stats_count_the_callers_jobs_by_status_and_kind_per_minute(
    tmp_path: Path,
) -> None:
    async with open_harness(tmp_path) as h:
        _record, key_a = await h.app.create_api_key("default")
        _record, key_b = await h.app.create_api_key("b")
        h.client.headers["Authorization"] = f"Bearer {key_a}"
        first = await h.submit()
        await h.run(first["id"], {"text": "done"})
        second = await h.submit()
        await h.fail(await h.claim(second["id"]), JobError(type="boom", message="it broke"))
        assert (await h.client.post("/v1/jobs", json={"kind": "tick"})).status_code == 202
        waiting = await h.submit(delay_seconds=600)
        await h.client.post(f"/v1/jobs/{waiting['id']}/cancel")
        mine = await h.client.get("/v1/stats", params={"minutes": 5})
        other = await h.client.get("/v1/stats", headers={"Authorization": f"Bearer {key_b}"})
        bad = [
            await h.client.get("/v1/stats", params={"minutes": value}) for value in ("0", "61", "x")
        ]

    assert mine.status_code == 200
    body = mine.json()
    assert body["object"] == "queue_stats"
    assert body["counts"] == {
        "pending": 1,
        "running": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
    }
    assert body["by_kind"] == {
        "echo": {"completed": 1, "failed": 1, "cancelled": 1},
        "tick": {"pending": 1},
    }
    assert body["workers"] == 0  # no worker runs in this harness
    minutes = body["minutes"]
    assert len(minutes) == 5
    starts = [datetime.fromisoformat(minute["start"]) for minute in minutes]
    assert starts == sorted(starts)
    assert all(start.second == 0 for start in starts)
    now = datetime.fromisoformat(body["now"])
    assert starts[-1] <= now.astimezone(UTC)
    assert (now - starts[-1]).total_seconds() < 60
    assert sum(minute["completed"] for minute in minutes) == 1
    assert sum(minute["failed"] for minute in minutes) == 1
    assert sum(minute["cancelled"] for minute in minutes) == 1
    assert sum(minute["started"] for minute in minutes) == 2
    waits = [m for m in minutes if m["started"]]
    assert all(m["wait_max_seconds"] >= m["wait_avg_seconds"] >= 0 for m in waits)

    assert other.status_code == 200  # another tenant sees none of it
    assert set(other.json()["counts"].values()) == {0}
    assert other.json()["by_kind"] == {}
    for response in bad:
        assert problem(response, 422, "invalid-input")["errors"][0]["loc"] == ["query", "minutes"]


async def test_stats_count_the_workers_alive(tmp_path: Path) -> None:
    async with open_harness(tmp_path, with_worker=True) as h:
        for _ in range(100):  # the worker registers as it starts, soon after the API
            body = (await h.client.get("/v1/stats")).json()
            if body["workers"]:
                break
            await asyncio.sleep(0.05)
    assert body["workers"] == 1


async def test_stats_are_read_once_per_moment_however_many_ask(tmp_path: Path) -> None:
    now = [0.0]
    async with open_harness(tmp_path) as h:
        reused = h.api.state.longjobs.recent_stats
        reused.clock = lambda: now[0]
        together = await asyncio.gather(*(h.client.get("/v1/stats") for _ in range(5)))
        await h.submit()
        now[0] += reused.fresh - 0.1
        soon = await h.client.get("/v1/stats")
        now[0] += 0.2
        later = await h.client.get("/v1/stats")

    readings = {response.json()["now"] for response in together}
    assert len(readings) == 1  # one reading answered all five
    assert soon.json()["now"] in readings
    assert soon.json()["counts"]["pending"] == 0
    assert later.json()["now"] not in readings
    assert later.json()["counts"]["pending"] == 1
