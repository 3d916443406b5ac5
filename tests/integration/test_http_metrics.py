"""``/metrics`` in Prometheus format."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.http_harness import open_harness, problem


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_jobs_by_status_and_kind_and_what_the_process_did(
    tmp_path: Path,
) -> None:
    async with open_harness(tmp_path, with_worker=True) as h:
        done = await h.submit()
        await h.app.wait(done["id"], timeout=5)
        await h.submit(delay_seconds=60)
        response = await h.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("longjobs_jobs", (("kind", "echo"), ("status", "completed")))] == 1
    assert found[("longjobs_jobs", (("kind", "echo"), ("status", "pending")))] == 1
    assert found[("longjobs_jobs_submitted_total", (("kind", "echo"),))] >= 2
    assert (
        found[("longjobs_attempts_finished_total", (("kind", "echo"), ("status", "completed")))]
        >= 1
    )
    assert found[("longjobs_attempt_duration_seconds_count", (("kind", "echo"),))] >= 1
    assert ("longjobs_streams_open", ()) in found


async def test_metrics_need_a_key_once_keys_exist(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as h:
        _record, secret = await h.app.create_api_key("ops")
        anonymous = await h.client.get("/metrics")
        keyed = await h.client.get("/metrics", headers={"Authorization": f"Bearer {secret}"})

    problem(anonymous, 401, "unauthorized")
    assert keyed.status_code == 200
