"""API keys with the real command line and a real server process."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.acceptance.harness import Cluster, run_keys

pytestmark = pytest.mark.acceptance


def test_keys_made_with_the_cli_guard_a_running_server(cluster: Cluster) -> None:
    created = run_keys(cluster, "create", "--tenant", "acme")
    other = json.loads(run_keys(cluster, "create", "--tenant", "bob", "--json").stdout)
    server = cluster.serve()
    acme = {"Authorization": f"Bearer {created.stdout.strip()}"}
    bob = {"Authorization": f"Bearer {other['key']}"}
    body = {"kind": "ledger_job", "input": {"steps": 1, "step_ms": 10}}

    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        anonymous = client.post("/v1/jobs", json=body)
        submitted = client.post("/v1/jobs", json=body, headers=acme)
        job_url = f"/v1/jobs/{submitted.json()['id']}"
        own = client.get(job_url, headers=acme)
        foreign = client.get(job_url, headers=bob)
        listing = json.loads(run_keys(cluster, "ls", "--json").stdout)
        acme_id = next(row["id"] for row in listing if row["tenant"] == "acme")
        revoked = run_keys(cluster, "revoke", acme_id)
        after = client.get(job_url, headers=acme)

    assert created.returncode == 0
    assert created.stdout.startswith("lj_")
    assert created.stdout.count("\n") == 1  # the key alone, for `KEY=$(longjobs keys create ...)`
    assert set(other) == {"id", "tenant", "key"}
    assert other["tenant"] == "bob"
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert submitted.status_code == 202
    assert own.status_code == 200
    assert foreign.status_code == 404
    assert {row["tenant"] for row in listing} == {"acme", "bob"}
    assert all("key" not in row for row in listing)
    assert revoked.returncode == 0
    assert after.status_code == 401


def test_revoking_an_unknown_key_is_one_line_and_non_zero(cluster: Cluster) -> None:
    done = run_keys(cluster, "revoke", "key_0000")

    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["longjobs: no active key 'key_0000'"]
