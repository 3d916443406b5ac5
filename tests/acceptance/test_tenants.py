"""Tenant isolation and API keys over real HTTP (RELIABILITY S1 and S3).

Three tenants, each with a key made by ``longjobs keys create``, share one ``longjobs serve``.
Every route that takes a job id is called by each tenant with its own jobs, the other tenants'
jobs (pending, running and completed), a random well-formed id and malformed ids. Another
tenant's job must be indistinguishable from a missing one (the same 404, the same body but for
the id echoed, the same headers) and must come out untouched; listings show each tenant only its
own jobs, whatever the filters and cursors. Every route, event stream upgrades included, refuses
a missing, malformed, unknown or revoked key with 401 and ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.acceptance.conftest import database_url, report_on_failure
from tests.acceptance.harness import (
    Cluster,
    LongjobsProcess,
    create_key,
    read_sse,
    run_keys,
    stored_bytes,
    wait_for_status,
    wait_terminal,
    wait_until,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

TENANTS = ("acme", "bravo", "cobalt")
PROBLEM_JSON = "application/problem+json"

SERVE_ENV = {
    "LONGJOBS_RATE_LIMIT_PER_SECOND": "100000",
    "LONGJOBS_RATE_LIMIT_BURST": "100000",
    "LONGJOBS_LEASE_SECONDS": "30",
}
"""The matrix sends a few hundred requests per key in seconds, which is not what this module
tests; and a running job must stay as it is, not be rescued when a busy machine delays a
heartbeat past the harness's short lease."""

MALFORMED_IDS = {
    "unicode": "job_✓é漢",
    "sql": "job_' OR 1=1--",
    "like-wildcard": "job_%",
    "nul": "job_\x00",
    "long": "job_" + "f" * 4000,
    "blank": " ",
}
"""Ids that are one path segment once percent-encoded: they reach the routes as ids."""

SLASHED_IDS = {"dot-dot-slash": "../", "slash": "job_a/b"}
"""Ids with a ``/``: percent-encoded, the decoded path has more segments than any route."""


@dataclass
class Tenant:
    name: str
    key_id: str
    key: str
    jobs: dict[str, str] = field(default_factory=dict)
    """A pending, a running and a completed job, kept so for the whole module."""
    submitted: set[str] = field(default_factory=set)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Deployment:
    cluster: Cluster
    server: LongjobsProcess
    client: httpx.Client
    tenants: dict[str, Tenant]
    snapshot: dict[str, Any] = field(default_factory=dict)

    def others(self, tenant: Tenant) -> list[Tenant]:
        return [other for other in self.tenants.values() if other is not tenant]

    def submit(self, tenant: Tenant, kind: str, job_input: Any, **options: Any) -> str:
        body = {"kind": kind, "input": job_input, **options}
        response = self.client.post("/v1/jobs", json=body, headers=tenant.headers)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        tenant.submitted.add(job_id)
        return job_id

    def ws_url(self, path: str) -> str:
        assert self.server.base_url is not None
        return self.server.base_url.replace("http://", "ws://", 1) + path


def _keep_one_job_per_state(deployment: Deployment) -> None:
    for tenant in deployment.tenants.values():
        tenant.jobs = {
            "pending": deployment.submit(tenant, "sleepy", {"seconds": 600}, delay_seconds=600),
            "running": deployment.submit(tenant, "sleepy", {"seconds": 600}),
            "completed": deployment.submit(tenant, "ledger_job", {"steps": 2, "step_ms": 10}),
        }
    for tenant in deployment.tenants.values():
        client = deployment.client
        with httpx.Client(base_url=client.base_url, headers=tenant.headers, timeout=30) as owner:
            wait_for_status(owner, tenant.jobs["running"], {"running"}, timeout=30)
            wait_terminal(owner, tenant.jobs["completed"])
    deployment.snapshot = _snapshot(deployment)


@pytest.fixture(scope="module")
def deployment_of_module(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, store: str
) -> Iterator[Deployment]:
    """One ``longjobs serve`` whose database has a key for each of TENANTS."""
    cluster = Cluster(tmp_path_factory.mktemp("tenants"), database_url(request, store))
    try:
        tenants = {name: Tenant(name, *create_key(cluster, name)) for name in TENANTS}
        server = cluster.serve(concurrency=8, env=SERVE_ENV)
        assert server.base_url is not None
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            deployment = Deployment(cluster, server, client, tenants)
            _keep_one_job_per_state(deployment)
            yield deployment
    finally:
        cluster.stop_all()


@pytest.fixture
def deployment(request: pytest.FixtureRequest, deployment_of_module: Deployment) -> Deployment:
    report_on_failure(request, deployment_of_module.cluster)
    return deployment_of_module


def _snapshot(deployment: Deployment) -> dict[str, Any]:
    """Every kept job as its owner reads it, with its whole event log."""
    views: dict[str, Any] = {}
    for tenant in deployment.tenants.values():
        for job_id in tenant.jobs.values():
            job = deployment.client.get(f"/v1/jobs/{job_id}", headers=tenant.headers)
            events = deployment.client.get(
                f"/v1/jobs/{job_id}/events",
                headers={**tenant.headers, "Accept": "application/json"},
            )
            assert job.status_code == events.status_code == 200, job.text
            views[job_id] = (job.json(), events.json())
    return views


# -- one call of a route, whatever its transport ----------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: Any  # JSON, the text of a non-JSON body, or the frames of a stream

    def comparable(self, job_id: str) -> tuple[int, Any, frozenset[str], str | None]:
        """What a 404 must share with any other 404: the status, the body with ``job_id``
        written as ``{id}``, the header names (values vary with the body's length and the
        clock) and the content type."""
        body = self.body
        if isinstance(body, dict):
            body = {name: _without_id(value, job_id) for name, value in body.items()}
        names = frozenset(self.headers) - {"date", "content-length"}
        return self.status, body, names, self.headers.get("content-type")


def _without_id(value: Any, job_id: str) -> Any:
    """``value`` with the id it echoes (alone, or quoted in a sentence) written as ``{id}``."""
    if value == job_id:
        return "{id}"
    return value.replace(repr(job_id), "{id}") if isinstance(value, str) else value


def _answer_of(response: httpx.Response, body: Any = None) -> Answer:
    headers = {name.lower(): value for name, value in response.headers.items()}
    if body is None:
        content_type = headers.get("content-type", "")
        body = response.json() if "json" in content_type else response.text
    return Answer(response.status_code, headers, body)


Call = Callable[[Deployment, Mapping[str, str], str], Answer]


def _path(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _request(method: str, suffix: str = "", **options: Any) -> Call:
    def call(deployment: Deployment, headers: Mapping[str, str], job_id: str) -> Answer:
        response = deployment.client.request(
            method, _path(job_id, suffix), headers=headers, **options
        )
        return _answer_of(response)

    return call


def _json_events(deployment: Deployment, headers: Mapping[str, str], job_id: str) -> Answer:
    accept = {**headers, "Accept": "application/json"}
    return _answer_of(deployment.client.get(_path(job_id, "/events"), headers=accept))


def _sse(deployment: Deployment, headers: Mapping[str, str], job_id: str) -> Answer:
    accept = {**headers, "Accept": "text/event-stream"}
    with deployment.client.stream("GET", _path(job_id, "/events"), headers=accept) as response:
        if response.status_code != 200:
            response.read()
            return _answer_of(response)
        frames = [json.loads(f.data) for f in read_sse(response.iter_lines()) if f.data]
    return _answer_of(response, frames)


def _websocket(deployment: Deployment, headers: Mapping[str, str], job_id: str) -> Answer:
    try:
        with connect(deployment.ws_url(_path(job_id, "/ws")), additional_headers=headers) as ws:
            frames = []
            try:
                while True:
                    frames.append(json.loads(ws.recv(timeout=30)))
            except ConnectionClosed:
                code = ws.close_code
    except InvalidStatus as refused:
        response = refused.response
        headers = {name.lower(): value for name, value in response.headers.raw_items()}
        body = bytes(response.body or b"")
        is_json = "json" in headers.get("content-type", "")
        return Answer(response.status_code, headers, json.loads(body) if is_json else body)
    return Answer(101, {"close-code": str(code)}, frames)


ID_ROUTES: dict[str, Call] = {
    "GET /v1/jobs/{id}": _request("GET"),
    "GET /v1/jobs/{id}?wait=1": _request("GET", params={"wait": 1}),
    "GET /v1/jobs/{id}/result": _request("GET", "/result"),
    "GET /v1/jobs/{id}/events (SSE)": _sse,
    "GET /v1/jobs/{id}/events (JSON)": _json_events,
    "GET /v1/jobs/{id}/ws": _websocket,
    "POST /v1/jobs/{id}/cancel": _request("POST", "/cancel"),
    "DELETE /v1/jobs/{id}": _request("DELETE"),
    "GET /v1/jobs/{id}/deliveries": _request("GET", "/deliveries"),
    "POST /v1/jobs/{id}/deliveries/{d}/replay": _request("POST", "/deliveries/dlv_x/replay"),
}


# -- own jobs: the proper success ---------------------------------------------------------------
def _own_success(deployment: Deployment, route: str, tenant: Tenant) -> None:
    call = ID_ROUTES[route]
    completed = tenant.jobs["completed"]
    if route == "POST /v1/jobs/{id}/cancel":
        job_id = deployment.submit(tenant, "sleepy", {"seconds": 1}, delay_seconds=600)
        answer = call(deployment, tenant.headers, job_id)
        assert answer.status == 200, answer.body
        assert (answer.body["id"], answer.body["status"]) == (job_id, "cancelled")
    elif route == "DELETE /v1/jobs/{id}":
        job_id = deployment.submit(tenant, "sleepy", {"seconds": 1}, delay_seconds=600)
        assert call(deployment, tenant.headers, job_id).status == 204
        gone = ID_ROUTES["GET /v1/jobs/{id}"](deployment, tenant.headers, job_id)
        random_id = _random_id()
        missing = ID_ROUTES["GET /v1/jobs/{id}"](deployment, tenant.headers, random_id)
        assert gone.comparable(job_id) == missing.comparable(random_id), "deleted ≡ missing"
    elif route in {"GET /v1/jobs/{id}", "GET /v1/jobs/{id}?wait=1"}:
        answer = call(deployment, tenant.headers, completed)
        assert answer.status == 200, answer.body
        assert (answer.body["id"], answer.body["status"]) == (completed, "completed")
    elif route == "GET /v1/jobs/{id}/deliveries":
        answer = call(deployment, tenant.headers, completed)
        assert answer.status == 200, answer.body
        assert answer.body["data"] == []  # no webhook asked for
    elif route == "POST /v1/jobs/{id}/deliveries/{d}/replay":
        answer = call(deployment, tenant.headers, completed)
        assert answer.status == 404, answer.body
        assert answer.body["type"] == "/problems/delivery-not-found"
    elif route == "GET /v1/jobs/{id}/result":
        answer = call(deployment, tenant.headers, completed)
        assert answer.status == 200, answer.body
        assert answer.body["job_id"] == completed
    else:  # the three ways to read the event log
        answer = call(deployment, tenant.headers, completed)
        assert answer.status in {101, 200}, answer.body
        events = answer.body["data"] if isinstance(answer.body, dict) else answer.body
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert {e["job_id"] for e in events} == {completed}
        assert (events[-1]["type"], events[-1]["status"]) == ("status", "completed")


def _random_id() -> str:
    return "job_" + secrets.token_hex(16)


def _assert_same_not_found(answer: Answer, job_id: str, missing: Answer, random_id: str) -> None:
    assert answer.status == 404, (job_id, answer.body)
    assert answer.headers.get("content-type", "").startswith(PROBLEM_JSON)
    assert answer.comparable(job_id) == missing.comparable(random_id), job_id


@pytest.mark.parametrize("route", ID_ROUTES)
def test_other_tenants_jobs_answer_exactly_like_missing_ones(
    deployment: Deployment, route: str
) -> None:
    call = ID_ROUTES[route]
    for tenant in deployment.tenants.values():
        _own_success(deployment, route, tenant)
        random_id = _random_id()
        missing = call(deployment, tenant.headers, random_id)
        assert missing.status == 404, missing.body
        assert missing.body["type"] == "/problems/job-not-found"
        for other in deployment.others(tenant):
            for state, job_id in other.jobs.items():
                answer = call(deployment, tenant.headers, job_id)
                assert answer.status == 404, f"{tenant.name} reached {other.name}'s {state} job"
                _assert_same_not_found(answer, job_id, missing, random_id)
        for job_id in MALFORMED_IDS.values():
            answer = call(deployment, tenant.headers, job_id)
            _assert_same_not_found(answer, job_id, missing, random_id)

    assert _snapshot(deployment) == deployment.snapshot, "another tenant's job changed"


@pytest.mark.parametrize("route", ID_ROUTES)
def test_an_id_with_a_slash_is_a_404_problem_that_says_nothing_of_any_job(
    deployment: Deployment, route: str
) -> None:
    """A percent-encoded ``/`` makes a path no route matches: 404 ``not-found`` (the route),
    the same whoever asks, never a job's answer."""
    call = ID_ROUTES[route]
    for name, job_id in SLASHED_IDS.items():
        answers = [call(deployment, t.headers, job_id) for t in deployment.tenants.values()]
        answers.append(call(deployment, {}, job_id))
        first = answers[0]
        assert first.status == 404, (name, first.body)
        assert first.headers["content-type"].startswith(PROBLEM_JSON)
        assert first.body["type"] == "/problems/not-found"
        assert all(answer.comparable(job_id) == first.comparable(job_id) for answer in answers)

    assert _snapshot(deployment) == deployment.snapshot


def test_a_refused_websocket_handshake_carries_the_problem_http_answers(
    deployment: Deployment,
) -> None:
    acme, bravo = deployment.tenants["acme"], deployment.tenants["bravo"]
    job_id = bravo.jobs["running"]

    over_http = ID_ROUTES["GET /v1/jobs/{id}"](deployment, acme.headers, job_id)
    over_ws = ID_ROUTES["GET /v1/jobs/{id}/ws"](deployment, acme.headers, job_id)

    assert over_ws.status == over_http.status == 404
    assert over_ws.headers["content-type"] == over_http.headers["content-type"]
    assert over_ws.body == over_http.body


def test_an_idempotency_key_is_the_tenants_own(deployment: Deployment) -> None:
    """Another tenant's use of the same key neither replays its job nor conflicts with it: a
    replay would hand over the job, a 422 would tell that the key was used."""
    key = {"Idempotency-Key": "order-42"}
    body = {"kind": "sleepy", "input": {"seconds": 1}, "delay_seconds": 600}
    answers = {
        tenant.name: [
            deployment.client.post("/v1/jobs", json=sent, headers={**tenant.headers, **key})
            for sent in (body, body, {**body, "priority": 1})
        ]
        for tenant in deployment.tenants.values()
    }

    ids = {name: first.json()["id"] for name, (first, _, _) in answers.items()}
    for tenant in deployment.tenants.values():
        first, replay, conflict = answers[tenant.name]
        tenant.submitted.add(ids[tenant.name])
        assert first.status_code == 202, first.text
        assert replay.status_code == 200
        assert replay.json()["id"] == ids[tenant.name]
        assert conflict.status_code == 422
    assert len(set(ids.values())) == len(TENANTS)


# -- listings -----------------------------------------------------------------------------------
def _all_pages(
    deployment: Deployment, tenant: Tenant, params: Mapping[str, Any], cursor: str | None = None
) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    while True:
        page = deployment.client.get(
            "/v1/jobs",
            params={**params, "limit": 2, **({"cursor": cursor} if cursor else {})},
            headers=tenant.headers,
        )
        assert page.status_code == 200, page.text
        jobs += page.json()["data"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return jobs


LISTING_FILTERS: dict[str, dict[str, str]] = {
    "all": {},
    "pending": {"status": "pending"},
    "running": {"status": "running"},
    "completed": {"status": "completed"},
    "unfinished": {"status": "pending,running"},
    "sleepy": {"kind": "sleepy"},
    "ledger_job, completed": {"kind": "ledger_job", "status": "completed"},
}


@pytest.mark.parametrize("query", LISTING_FILTERS)
def test_each_tenant_lists_only_its_own_jobs(deployment: Deployment, query: str) -> None:
    params = LISTING_FILTERS[query]
    for tenant in deployment.tenants.values():
        jobs = _all_pages(deployment, tenant, params)
        ids = [job["id"] for job in jobs]

        assert len(ids) == len(set(ids)), "a job was listed twice"
        assert set(ids) <= tenant.submitted, f"{tenant.name} listed jobs it never submitted"
        kept = {job_id for state, job_id in tenant.jobs.items() if _matches(params, state)}
        assert kept <= set(ids)
        for job in jobs:
            assert job["status"] in params.get("status", job["status"]).split(",")
            assert job["kind"] == params.get("kind", job["kind"])


def _matches(params: Mapping[str, str], state: str) -> bool:
    """Whether the kept job in ``state`` passes the listing's filters."""
    kind = "ledger_job" if state == "completed" else "sleepy"
    return state in params.get("status", state).split(",") and params.get("kind", kind) == kind


def test_a_cursor_of_one_tenant_shows_another_tenant_only_its_own_jobs(
    deployment: Deployment,
) -> None:
    acme, bravo = deployment.tenants["acme"], deployment.tenants["bravo"]
    first = deployment.client.get("/v1/jobs", params={"limit": 1}, headers=acme.headers)
    cursor = first.json()["next_cursor"]
    assert cursor is not None

    listed = _all_pages(deployment, bravo, {}, cursor=cursor)
    unfiltered = _all_pages(deployment, bravo, {})

    assert {job["id"] for job in listed} <= bravo.submitted
    assert not {job["id"] for job in listed} & acme.submitted
    assert [job["id"] for job in listed] == [
        job["id"] for job in unfiltered if job["id"] in {j["id"] for j in listed}
    ]


# -- authentication -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """How a request presents (or fails to present) a key; built from the tenant's real key."""

    header: Callable[[str, str], str | None]

    def headers(self, key: str, revoked: str) -> dict[str, str]:
        value = self.header(key, revoked)
        return {} if value is None else {"Authorization": value}


CREDENTIALS: dict[str, Credentials] = {
    "no key": Credentials(lambda key, revoked: None),
    "empty bearer": Credentials(lambda key, revoked: "Bearer"),
    "basic scheme": Credentials(lambda key, revoked: f"Basic {key}"),
    "key without scheme": Credentials(lambda key, revoked: key),
    "unknown key": Credentials(lambda key, revoked: f"Bearer lj_{secrets.token_urlsafe(32)}"),
    "key cut short": Credentials(lambda key, revoked: f"Bearer {key[:-1]}"),
    "key of another format": Credentials(lambda key, revoked: "Bearer sk-" + key[3:]),
    "revoked key": Credentials(lambda key, revoked: f"Bearer {revoked}"),
}


def _submit(deployment: Deployment, headers: Mapping[str, str], job_id: str) -> Answer:
    body = {"kind": "ledger_job", "input": {"steps": 1, "step_ms": 1}}
    return _answer_of(deployment.client.post("/v1/jobs", json=body, headers=headers))


def _get(path: str) -> Call:
    def call(deployment: Deployment, headers: Mapping[str, str], job_id: str) -> Answer:
        return _answer_of(deployment.client.get(path, headers=headers))

    return call


ALL_ROUTES: dict[str, Call] = {
    "POST /v1/jobs": _submit,
    "GET /v1/jobs": _get("/v1/jobs"),
    "GET /v1/kinds": _get("/v1/kinds"),
    "GET /metrics": _get("/metrics"),
    "GET /v1/events": _get("/v1/events"),
    **ID_ROUTES,
}


@pytest.fixture(scope="module")
def revoked_key(deployment_of_module: Deployment) -> str:
    """A key of acme that worked, then was revoked with ``longjobs keys revoke``."""
    deployment = deployment_of_module
    key_id, key = create_key(deployment.cluster, "acme")
    headers = {"Authorization": f"Bearer {key}"}
    assert deployment.client.get("/v1/jobs", headers=headers).status_code == 200
    assert run_keys(deployment.cluster, "revoke", key_id).returncode == 0
    wait_until(
        lambda: deployment.client.get("/v1/jobs", headers=headers).status_code == 401,
        timeout=10,
        what="the revoked key to be refused",
    )
    return key


@pytest.mark.parametrize("credentials", CREDENTIALS)
@pytest.mark.parametrize("route", ALL_ROUTES)
def test_every_route_refuses_a_request_without_a_valid_key(
    deployment: Deployment, revoked_key: str, route: str, credentials: str
) -> None:
    acme = deployment.tenants["acme"]
    headers = CREDENTIALS[credentials].headers(acme.key, revoked_key)

    answer = ALL_ROUTES[route](deployment, headers, acme.jobs["completed"])

    assert answer.status == 401, answer.body
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.body["type"] == "/problems/unauthorized"
    assert acme.key not in json.dumps(answer.body)
    assert _snapshot(deployment) == deployment.snapshot


def test_a_revoked_key_is_refused_on_its_next_requests(deployment: Deployment) -> None:
    """Revocation is one command on the database; the running server follows it within a
    second (polled here up to a generous deadline rather than timed)."""
    bravo = deployment.tenants["bravo"]
    key_id, key = create_key(deployment.cluster, "bravo")
    headers = {"Authorization": f"Bearer {key}"}
    before = deployment.client.get(f"/v1/jobs/{bravo.jobs['completed']}", headers=headers)

    revoked = run_keys(deployment.cluster, "revoke", key_id)
    refused = wait_until(
        lambda: deployment.client.get("/v1/jobs", headers=headers).status_code == 401,
        timeout=10,
        interval=0.05,
        what="the revoked key to be refused",
    )

    assert before.status_code == 200
    assert revoked.returncode == 0
    assert refused
    still = deployment.client.get(f"/v1/jobs/{bravo.jobs['completed']}", headers=bravo.headers)
    assert still.status_code == 200, "revoking one key must not lock the tenant's others out"


def test_probes_answer_without_a_key(deployment: Deployment) -> None:
    assert deployment.client.get("/healthz").status_code == 200
    assert deployment.client.get("/readyz").status_code == 200


def test_raw_keys_are_never_stored_or_logged(deployment: Deployment, revoked_key: str) -> None:
    store = stored_bytes(deployment.cluster)
    logs = b"".join(path.read_bytes() for path in deployment.cluster.directory.glob("*.log"))
    keys = [tenant.key for tenant in deployment.tenants.values()] + [revoked_key]

    for key in keys:
        assert key.encode() not in store
        assert key.encode() not in logs
        assert hashlib.sha256(key.encode()).hexdigest().encode() in store, "not the key store?"
