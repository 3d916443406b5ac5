"""API keys and tenants over HTTP: 401s, isolation, revocation, open mode."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.http_harness import Harness, open_harness, problem

ROUTES = [
    ("GET", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs/{id}/cancel"),
    ("DELETE", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/result"),
    ("GET", "/v1/jobs/{id}/events"),
    ("GET", "/v1/kinds"),
    ("POST", "/v1/jobs"),
]


def _read_store(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.glob("t.db*")))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def keyed(h: Harness, tenant: str) -> str:
    _record, secret = await h.app.create_api_key(tenant)
    return secret


async def submit_as(h: Harness, key: str) -> str:
    body = {"kind": "echo", "input": {"text": "hi"}}
    response = await h.client.post("/v1/jobs", json=body, headers=bearer(key))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_open_mode_serves_the_default_tenant_without_a_key(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as h:
        job = await h.submit()
        response = await h.client.get(f"/v1/jobs/{job['id']}")

    assert response.status_code == 200


async def test_open_mode_ignores_an_invalid_key_but_honours_a_valid_one(tmp_path: Path) -> None:
    """SDKs always send a key; in open mode an unknown one is not an error. A key made by another
    process (here: straight in the store, so this App has not seen it) names its tenant even
    before this server notices that keys exist."""
    from longjobs.keys import key_hash, new_api_key

    async with open_harness(tmp_path) as h:
        job = await h.submit()
        with_dummy = await h.client.get(f"/v1/jobs/{job['id']}", headers=bearer("sk-anything"))
        record, secret = new_api_key("acme", None)
        await h.app.backend.create_api_key(record, key_hash(secret))
        as_acme = await h.client.get(f"/v1/jobs/{job['id']}", headers=bearer(secret))

    assert with_dummy.status_code == 200
    problem(as_acme, 404, "job-not-found")  # acme's view: the default tenant's job is not there


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_once_a_key_exists_every_route_needs_one(
    tmp_path: Path, method: str, path: str
) -> None:
    async with open_harness(tmp_path) as h:
        key = await keyed(h, "acme")
        job_id = await submit_as(h, key)
        url = path.format(id=job_id)
        body = {"kind": "echo", "input": {"text": "x"}} if method == "POST" else None
        missing = await h.client.request(method, url, json=body)
        wrong = await h.client.request(method, url, json=body, headers=bearer("lj_nope"))
        malformed = await h.client.request(
            method, url, json=body, headers={"Authorization": "Basic abc"}
        )

    for response in (missing, wrong, malformed):
        problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith('Bearer realm="longjobs"')
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]


async def test_probes_need_no_key(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as h:
        await keyed(h, "acme")
        health = await h.client.get("/healthz")
        ready = await h.client.get("/readyz")

    assert health.status_code == 200
    assert ready.status_code == 200


async def test_another_tenants_job_is_a_404_like_a_missing_one(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as h:
        acme, bob = await keyed(h, "acme"), await keyed(h, "bob")
        job_id = await submit_as(h, acme)
        answers = {
            (method, path): await h.client.request(
                method, path.format(id=job_id), headers=bearer(bob)
            )
            for method, path in ROUTES
            if "{id}" in path
        }
        missing = await h.client.get("/v1/jobs/job_0123456789abcdef", headers=bearer(bob))
        listed = await h.client.get("/v1/jobs", headers=bearer(bob))
        still_there = await h.client.get(f"/v1/jobs/{job_id}", headers=bearer(acme))

    for response in answers.values():
        body = problem(response, 404, "job-not-found")
        assert set(body) == set(problem(missing, 404, "job-not-found"))
    assert listed.json()["data"] == []
    assert still_there.json()["status"] in {"pending", "running"}


async def test_a_revoked_key_is_refused_on_the_next_request(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as h:
        record, secret = await h.app.create_api_key("acme", name="ci")
        before = await h.client.get("/v1/jobs", headers=bearer(secret))
        assert await h.app.backend.revoke_api_key(record.id)
        after = await h.client.get("/v1/jobs", headers=bearer(secret))
        no_key = await h.client.get("/v1/jobs")

    assert before.status_code == 200
    problem(after, 401, "unauthorized")
    # Revoking the last key does not reopen the server.
    problem(no_key, 401, "unauthorized")


async def test_keys_are_stored_only_as_hashes(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as h:
        _record, secret = await h.app.create_api_key("acme")
        await submit_as(h, secret)

    stored = await asyncio.to_thread(_read_store, tmp_path)
    assert secret.encode() not in stored
    assert secret.removeprefix("lj_").encode() not in stored


async def test_each_key_is_rate_limited_on_its_own(tmp_path: Path) -> None:
    async with open_harness(tmp_path, rate_limit_per_second=0.1, rate_limit_burst=3) as h:
        acme, bob = await keyed(h, "acme"), await keyed(h, "bob")
        answers = [(await h.client.get("/v1/jobs", headers=bearer(acme))) for _ in range(4)]
        other = await h.client.get("/v1/jobs", headers=bearer(bob))

    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    body = problem(answers[3], 429, "too-many-requests")
    assert int(answers[3].headers["retry-after"]) >= 1
    assert body["retry_after"] >= 1
    assert other.status_code == 200


async def test_open_mode_is_not_rate_limited(tmp_path: Path) -> None:
    async with open_harness(tmp_path, rate_limit_per_second=0.1, rate_limit_burst=1) as h:
        answers = [(await h.client.get("/v1/jobs")).status_code for _ in range(5)]

    assert answers == [200] * 5


async def test_a_tenant_at_its_pending_limit_gets_429_and_others_do_not(tmp_path: Path) -> None:
    async with open_harness(tmp_path, max_pending_jobs=3) as h:
        acme, bob = await keyed(h, "acme"), await keyed(h, "bob")
        for _ in range(3):
            await submit_as(h, acme)
        body = {"kind": "echo", "input": {"text": "one too many"}}
        refused = await h.client.post("/v1/jobs", json=body, headers=bearer(acme))
        other = await h.client.post("/v1/jobs", json=body, headers=bearer(bob))
        listed = await h.client.get("/v1/jobs", headers=bearer(acme))

    problem(refused, 429, "too-many-requests")
    assert refused.headers["retry-after"] == "5"
    assert other.status_code == 202
    assert len(listed.json()["data"]) == 3  # nothing was created by the refused submission
