"""The OpenAPI document describes every route, body and problem; /docs works offline."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from longjobs import Context
from tests.integration.http_harness import Harness, open_harness

UNAUTHENTICATED = {"/healthz", "/readyz"}
ID_ROUTES = re.compile(r"\{(job|response)_id\}")


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path) as harness:
        yield harness


@pytest.fixture
async def document(h: Harness) -> dict[str, Any]:
    response = await h.client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


async def test_every_http_route_is_in_the_document(h: Harness, document: dict[str, Any]) -> None:
    routes = {
        (method, route.path)
        for route in h.api.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
    }
    documented = {(method, path) for method, path, _ in _operations(document)}
    assert routes == documented
    assert {
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/{job_id}"),
        ("DELETE", "/v1/jobs/{job_id}"),
        ("POST", "/v1/jobs/{job_id}/cancel"),
        ("GET", "/v1/jobs/{job_id}/result"),
        ("GET", "/v1/jobs/{job_id}/events"),
        ("GET", "/v1/kinds"),
        ("GET", "/metrics"),
    } <= documented
    assert "/v1/jobs/{job_id}/ws" in document["info"]["description"]


async def test_every_error_answer_is_documented_as_a_problem(document: dict[str, Any]) -> None:
    problem = {"$ref": "#/components/schemas/Problem"}
    errors = 0
    openai_error = {"$ref": "#/components/schemas/OpenAIErrorBody"}
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if status[0] in "45" and path.startswith("/v1/responses"):  # OpenAI's shape
                assert response["content"] == {"application/json": {"schema": openai_error}}
                assert status != "422", (method, path)
            elif status[0] in "45":
                errors += 1
                assert response["content"] == {"application/problem+json": {"schema": problem}}, (
                    method,
                    path,
                    status,
                )
    assert errors > 30
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) >= {"type", "title", "status"}


async def test_routes_with_keys_say_so_and_document_401_429(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["apiKey"]["description"],
    }
    for method, path, operation in _operations(document):
        if path in UNAUTHENTICATED:
            assert "security" not in operation, path
            continue
        assert operation["security"] == [{"apiKey": []}], (method, path)
        assert {"401", "429"} <= operation["responses"].keys(), (method, path)
        if ID_ROUTES.search(path):
            assert "404" in operation["responses"], (method, path)


async def test_submit_documents_its_body_and_answers(document: dict[str, Any]) -> None:
    submit = document["paths"]["/v1/jobs"]["post"]
    assert {"200", "202", "400", "404", "413", "422", "503"} <= submit["responses"].keys()
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body, "the submission envelope is described"


async def test_submission_body_gives_each_kind_its_input_schema(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    kinds = {variant["properties"]["kind"]["const"]: variant for variant in body["schema"]["oneOf"]}

    assert sorted(kinds) == ["echo", "explosive", "response", "tick"]
    echo = kinds["echo"]
    assert echo["required"] == ["kind", "input"]
    assert echo["additionalProperties"] is False
    assert set(echo["properties"]["input"]["properties"]) == {"text", "count"}
    assert echo["properties"]["input"]["properties"]["count"]["minimum"] == 1
    assert "input" not in kinds["tick"].get("required", [])
    assert {"type": "null"} in kinds["tick"]["properties"]["input"]["anyOf"]
    assert set(echo["properties"]) == set(kinds["tick"]["properties"])  # the same envelope


class Part(BaseModel):
    text: str


class Message(BaseModel):
    parts: list[Part]


async def chat(ctx: Context, message: Message) -> None:
    """Takes a nested model."""


async def test_nested_input_models_become_components(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as harness:
        harness.app.job(chat)
        document = (await harness.client.get("/openapi.json")).json()

    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    chat_body = next(v for v in body["schema"]["oneOf"] if v["title"] == "chat")
    items = chat_body["properties"]["input"]["properties"]["parts"]["items"]
    assert items == {"$ref": "#/components/schemas/chat.Part"}
    assert document["components"]["schemas"]["chat.Part"]["required"] == ["text"]
    assert "$defs" not in json.dumps(document)


async def test_optional_parameters_are_absent_never_null(document: dict[str, Any]) -> None:
    parameters = [
        parameter
        for _, _, operation in _operations(document)
        for parameter in operation.get("parameters", [])
    ]

    assert {parameter["name"] for parameter in parameters} >= {
        "wait", "after", "last-event-id", "cursor", "status", "idempotency-key", "Prefer"
    }  # fmt: skip
    for parameter in parameters:
        assert "null" not in json.dumps(parameter["schema"]), parameter
    status = next(parameter for parameter in parameters if parameter["name"] == "status")
    assert re.fullmatch(status["schema"]["items"]["pattern"], "completed,cancelled")
    assert not re.fullmatch(status["schema"]["items"]["pattern"], "done")


async def test_links_lead_from_a_job_to_the_operations_on_it(document: dict[str, Any]) -> None:
    operation_ids = {operation["operationId"] for _, _, operation in _operations(document)}
    submit = document["paths"]["/v1/jobs"]["post"]["responses"]
    listing = document["paths"]["/v1/jobs"]["get"]["responses"]["200"]

    for status in ("200", "202"):
        links = submit[status]["links"]
        assert {link["operationId"] for link in links.values()} == {
            "getJob", "getJobEvents", "getJobResult", "cancelJob", "deleteJob"
        }  # fmt: skip
        assert all(
            link["parameters"] == {"job_id": "$response.body#/id"} for link in links.values()
        )
        assert submit[status]["headers"]["Location"]["required"] is True
    assert listing["links"]["next"]["parameters"] == {"cursor": "$response.body#/next_cursor"}
    linked = {link["operationId"] for link in [*submit["202"]["links"].values()]}
    assert linked <= operation_ids


async def test_problem_answers_document_their_headers(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        if "401" in responses:
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"], (method, path)
        if "429" in responses:
            assert responses["429"]["headers"]["Retry-After"]["required"], (method, path)


async def test_docs_page_and_its_assets_are_served_locally(h: Harness) -> None:
    page = await h.client.get("/docs")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert assets, page.text
    assert not [url for url in assets if url.startswith(("http:", "https:", "//"))]
    for url in assets:
        asset = await h.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    assert "/openapi.json" in page.text


async def test_redoc_is_served_locally_too(h: Harness) -> None:
    page = await h.client.get("/redoc")
    assert page.status_code == 200
    scripts = re.findall(r"""src=['"]([^'"]+)['"]""", page.text)
    assert scripts
    assert all(not url.startswith(("http:", "https:", "//")) for url in scripts)
