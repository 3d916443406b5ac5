"""``longjobs webhooks ...`` and ``longjobs submit --webhook`` as real commands, and the webhook
calls of ``Client``, against a real ``longjobs serve`` that delivers to a loopback receiver."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from werkzeug.wrappers import Response

from longjobs.client import (
    Client,
    DeliveryResource,
    InvalidRequest,
    NotFound,
    WebhookResource,
)
from tests.acceptance.harness import Cluster, wait_until
from tests.acceptance.receiver import Receiver
from tests.acceptance.test_cli_jobs import Shell, one_line_error

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

SERVE_ENV = {
    "LONGJOBS_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.0/8"]',
    "LONGJOBS_WEBHOOK_RETRY_SCHEDULE": "[0.2, 0.2]",
    "LONGJOBS_WEBHOOK_POLL_INTERVAL": "0.1",
}
QUICK = '{"lines": 1, "interval_ms": 0}'
"""The input of a ``chatty`` job that completes at once."""
UNSAFE = "http://10.0.0.1/x"
EXIT_USAGE, EXIT_NOT_FOUND = 2, 5


@pytest.fixture
def shell(served: Cluster, tmp_path: Path) -> Shell:
    return Shell(served.processes[0], tmp_path)


@pytest.fixture
def client(served: Cluster) -> Iterator[Client]:
    with Client(served.processes[0].base_url) as client:
        yield client


@pytest.fixture(autouse=True)
def no_endpoints_left(api: httpx.Client) -> Iterator[None]:
    """The server is shared by the module's tests: each leaves no endpoint behind (it would be
    sent the next tests' events)."""
    yield
    for endpoint in api.get("/v1/webhooks").json()["data"]:
        api.delete(f"/v1/webhooks/{endpoint['id']}")


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def settled(shell: Shell, job_id: str, attempts: int = 1) -> list[dict[str, Any]]:
    """The job's deliveries once there is one and none is pending, after ``attempts`` tries."""

    def done() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = shell.json("webhooks", "deliveries", job_id)
        finished = [d for d in found if d["status"] != "pending" and len(d["attempts"]) >= attempts]
        return found if found and len(finished) == len(found) else []

    return wait_until(done, timeout=30.0, what=f"the deliveries of {job_id}")


# -- the commands ---------------------------------------------------------------------------------


def test_an_endpoint_is_created_listed_rotated_disabled_enabled_and_removed(
    shell: Shell, receiver: Receiver
) -> None:
    done = shell.run(
        "webhooks", "create", receiver.url(), "--event", "job.failed", "--description", "ops"
    )
    endpoint_id, secret = ok(done).split()
    assert endpoint_id.startswith("we_")
    assert secret.startswith("whsec_")
    assert "shown only once" in done.stderr
    assert "Traceback" not in done.stderr

    table = ok(shell.run("webhooks", "ls"))
    (row,) = [line for line in table.splitlines() if endpoint_id in line]
    assert "enabled" in row
    assert "job.failed" in row
    assert secret not in table
    (listed,) = shell.json("webhooks", "ls")
    assert listed["id"] == endpoint_id
    assert listed["url"] == receiver.url()
    assert listed["description"] == "ops"
    assert listed["secret"] is None
    shown = shell.json("webhooks", "get", endpoint_id)
    assert (shown["id"], shown["secret"]) == (endpoint_id, None)

    done = shell.run("webhooks", "rotate", endpoint_id)
    rotated = ok(done).strip()
    assert rotated.startswith("whsec_")
    assert rotated != secret
    assert "shown only once" in done.stderr

    assert ok(shell.run("webhooks", "disable", endpoint_id)).split() == [endpoint_id, "disabled"]
    disabled = shell.json("webhooks", "get", endpoint_id)
    assert disabled["status"] == "disabled"
    assert disabled["disabled_reason"]
    assert "disabled" in ok(shell.run("webhooks", "ls"))
    assert ok(shell.run("webhooks", "enable", endpoint_id)).split() == [endpoint_id, "enabled"]
    assert shell.json("webhooks", "get", endpoint_id)["status"] == "enabled"

    assert ok(shell.run("webhooks", "rm", endpoint_id)).split() == [endpoint_id, "deleted"]
    assert shell.json("webhooks", "ls") == []
    assert endpoint_id not in ok(shell.run("webhooks", "ls"))


def test_create_with_json_shows_the_secret_once(shell: Shell, receiver: Receiver) -> None:
    created = shell.json("webhooks", "create", receiver.url())
    assert created["object"] == "webhook_endpoint"
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == []
    assert "all" in ok(shell.run("webhooks", "ls"))  # every event type
    rotated = shell.json("webhooks", "rotate", created["id"])
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    assert shell.json("webhooks", "rm", created["id"])["deleted"] is True


def test_a_job_submitted_with_a_webhook_is_delivered_listed_and_replayed(
    shell: Shell, receiver: Receiver
) -> None:
    secret = ok(shell.run("webhooks", "secret")).strip()
    job_id = ok(shell.run("submit", "chatty", "--input", QUICK, "--webhook", receiver.url()))
    job_id = job_id.strip()
    assert shell.json("get", job_id)["webhook"] == {"url": receiver.url()}

    (got,) = receiver.wait_for(1)
    event = Webhook(secret).verify(got.body, got.headers)
    assert (event["type"], event["data"]["id"]) == ("job.completed", job_id)
    (delivery,) = settled(shell, job_id)
    assert delivery["status"] == "succeeded"
    assert delivery["endpoint_id"] == "default"
    assert [a["status_code"] for a in delivery["attempts"]] == [200]

    table = ok(shell.run("webhooks", "deliveries", job_id))
    header, row = table.splitlines()
    assert header.split() == ["id", "type", "endpoint", "status", "attempts", "last", "next"]
    assert row.split() == [delivery["id"], "job.completed", "default", "succeeded", "1", "200", "-"]

    replayed = ok(shell.run("webhooks", "replay", job_id, delivery["id"]))
    assert replayed.split() == [delivery["id"], "pending"]
    received = receiver.wait_for(2)
    assert received[1].headers["Webhook-Id"] == received[0].headers["Webhook-Id"]
    (again,) = settled(shell, job_id, attempts=2)
    assert again["status"] == "succeeded"
    assert [a["status_code"] for a in again["attempts"]] == [200, 200]


def test_a_failing_receiver_shows_its_answers_in_the_deliveries(
    shell: Shell, receiver: Receiver
) -> None:
    receiver.script = [lambda: Response("down", 503)] * 3  # the first try and both retries
    job_id = ok(shell.run("submit", "chatty", "--input", QUICK, "--webhook", receiver.url()))
    (delivery,) = settled(shell, job_id.strip(), attempts=3)
    assert delivery["status"] == "failed"
    (row,) = ok(shell.run("webhooks", "deliveries", job_id.strip())).splitlines()[1:]
    assert row.split()[3:] == ["failed", "3", "503", "-"]


def test_the_default_secret_is_printed_and_rotated(shell: Shell) -> None:
    secret = ok(shell.run("webhooks", "secret")).strip()
    assert secret.startswith("whsec_")
    assert ok(shell.run("webhooks", "secret")).strip() == secret
    assert shell.json("webhooks", "secret") == {"object": "webhook_secret", "secret": secret}

    rotated = ok(shell.run("webhooks", "secret", "--rotate")).strip()
    assert rotated.startswith("whsec_")
    assert rotated != secret
    assert ok(shell.run("webhooks", "secret")).strip() == rotated


@pytest.mark.parametrize(
    "command",
    [
        ["webhooks", "create", UNSAFE],
        ["submit", "chatty", "--input", QUICK, "--webhook", UNSAFE],
    ],
    ids=["create", "submit"],
)
def test_an_unsafe_url_is_one_line_naming_it(shell: Shell, command: list[str]) -> None:
    done = shell.run(*command)
    assert done.returncode == EXIT_USAGE
    assert done.stdout == ""
    line = one_line_error(done)
    assert UNSAFE in line
    assert "10.0.0.1 is not a public address" in line
    assert shell.json("webhooks", "ls") == []


def test_a_localhost_url_is_refused(shell: Shell) -> None:
    done = shell.run("webhooks", "create", "http://localhost:8080/hook")
    assert done.returncode == EXIT_USAGE
    assert "localhost" in one_line_error(done)


def test_an_unknown_event_type_is_a_usage_error(shell: Shell, receiver: Receiver) -> None:
    done = shell.run("webhooks", "create", receiver.url(), "--event", "job.exploded")
    assert done.returncode == EXIT_USAGE
    assert "job.exploded" in one_line_error(done)


def test_unknown_ids_exit_5(shell: Shell) -> None:
    job_id = ok(shell.run("submit", "chatty", "--input", QUICK)).strip()
    for command in [
        ["get", "we_nope"],
        ["rm", "we_nope"],
        ["rotate", "we_nope"],
        ["enable", "we_nope"],
        ["disable", "we_nope"],
        ["rm", "default"],
        ["deliveries", "job_nope"],
        ["replay", "job_nope", "dlv_nope"],
        ["replay", job_id, "dlv_nope"],
    ]:
        done = shell.run("webhooks", *command)
        assert done.returncode == EXIT_NOT_FOUND, (command, done.stderr)
        assert "not found" in one_line_error(done), command


def test_no_server_is_one_line_and_exit_1(shell: Shell) -> None:
    done = shell.run("webhooks", "ls", env={"LONGJOBS_SERVER": "http://127.0.0.1:9"})
    assert done.returncode == 1
    assert "cannot reach" in one_line_error(done)


# -- the Python client ----------------------------------------------------------------------------


def test_the_client_manages_endpoints(client: Client, receiver: Receiver) -> None:
    created = client.create_webhook(
        receiver.url(), event_types=["job.completed", "job.failed"], description="both"
    )
    assert isinstance(created, WebhookResource)
    assert created.secret is not None
    assert created.secret.startswith("whsec_")
    assert created.event_types == ["job.completed", "job.failed"]
    assert [e.id for e in client.list_webhooks()] == [created.id]
    assert client.get_webhook(created.id).secret is None

    updated = client.update_webhook(created.id, event_types=[], description="all", enabled=False)
    assert (updated.event_types, updated.description, updated.status) == ([], "all", "disabled")
    assert client.update_webhook(created.id, enabled=True).status == "enabled"
    rotated = client.rotate_webhook_secret(created.id)
    assert rotated.secret not in (None, created.secret)

    client.delete_webhook(created.id)
    assert client.list_webhooks() == []
    with pytest.raises(NotFound) as missing:
        client.get_webhook(created.id)
    assert missing.value.problem.type == "/problems/webhook-not-found"


def test_the_client_refuses_unsafe_urls_with_the_field(client: Client) -> None:
    with pytest.raises(InvalidRequest) as refused:
        client.create_webhook(UNSAFE)
    assert refused.value.problem.errors is not None
    assert refused.value.problem.errors[0].loc == ["body", "url"]
    with pytest.raises(InvalidRequest) as refused:
        client.submit("chatty", json.loads(QUICK), webhook_url=UNSAFE)
    assert refused.value.problem.errors is not None
    assert refused.value.problem.errors[0].loc == ["body", "webhook", "url"]


def test_the_client_submits_with_a_webhook_and_replays_its_delivery(
    client: Client, receiver: Receiver
) -> None:
    secret = client.default_webhook_secret()
    job = client.submit("chatty", json.loads(QUICK), webhook_url=receiver.url())
    assert job.webhook is not None
    assert job.webhook.url == receiver.url()

    (got,) = receiver.wait_for(1)
    assert Webhook(secret).verify(got.body, got.headers)["data"] == {"id": job.id}

    def succeeded() -> list[DeliveryResource]:
        found = client.deliveries(job.id)
        return found if found and found[0].status == "succeeded" else []

    (delivery,) = wait_until(succeeded, timeout=30.0, what="the delivery")
    replayed = client.replay_delivery(job.id, delivery.id)
    assert (replayed.id, replayed.status) == (delivery.id, "pending")
    receiver.wait_for(2)

    with pytest.raises(NotFound) as missing:
        client.replay_delivery(job.id, "dlv_nope")
    assert missing.value.problem.type == "/problems/delivery-not-found"
    with pytest.raises(NotFound) as missing:
        client.deliveries("job_nope")
    assert missing.value.problem.type == "/problems/job-not-found"

    rotated = client.rotate_default_webhook_secret()
    assert rotated != secret
    assert client.default_webhook_secret() == rotated
