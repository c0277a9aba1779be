"""The committed `openapi.json` is the description generated from the ingest routes and models."""

from __future__ import annotations

import json
from typing import Any

from orderpipe.ingest import openapi_json
from orderpipe.models import MAX_IDEMPOTENCY_KEY_LENGTH
from orderpipe_local.testing import ROOT

COMMITTED = ROOT / "openapi.json"
REGENERATE = (
    ".venv/bin/python -c 'from orderpipe.ingest import openapi_json; print(openapi_json(), end=\"\")'"
    " > openapi.json"
)


def test_committed_openapi_json_is_current() -> None:
    # Given the description generated from the code as it is now
    generated = openapi_json()

    # Then the committed file says the same
    assert COMMITTED.read_text() == generated, f"openapi.json is stale; regenerate it with: {REGENERATE}"


def operation(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method]
    return found


def test_every_answer_of_each_operation_is_documented_with_its_body() -> None:
    # Given the generated description
    document = json.loads(openapi_json())

    # Then POST /orders and GET /orders/{orderId} list exactly the statuses they can answer
    post = operation(document, "/orders", "post")
    get = operation(document, "/orders/{orderId}", "get")
    assert list(post["responses"]) == ["202", "400", "401", "403", "409", "413", "415", "422", "503"]
    assert list(get["responses"]) == ["200", "401", "404", "503"]

    # And the bodies are the order models and ErrorResponse, not Powertools' own error shape
    def schema_of(response: dict[str, Any]) -> str:
        ref: str = response["content"]["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[1]

    assert schema_of(post["responses"]["202"]) == "OrderAccepted"
    assert schema_of(get["responses"]["200"]) == "Order"
    errors = [r for op in (post, get) for code, r in op["responses"].items() if code >= "400"]
    assert {schema_of(response) for response in errors} == {"ErrorResponse"}
    assert "HTTPValidationError" not in json.dumps(document)
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/OrderRequest")
    assert "Location" in post["responses"]["202"]["headers"]
    assert "Retry-After" in post["responses"]["503"]["headers"]


def test_idempotency_key_header_is_documented_with_its_bounds() -> None:
    # Given the generated description
    post = operation(json.loads(openapi_json()), "/orders", "post")

    # Then the optional Idempotency-Key header carries its length bounds
    [header] = [parameter for parameter in post["parameters"] if parameter["in"] == "header"]
    assert header["name"].lower() == "idempotency-key"
    assert header["required"] is False
    [string] = [option for option in header["schema"]["anyOf"] if option["type"] == "string"]
    assert (string["minLength"], string["maxLength"]) == (1, MAX_IDEMPOTENCY_KEY_LENGTH)
