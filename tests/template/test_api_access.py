"""The HTTP API's JWT authorizer and CORS configuration in the SAM-transformed template.

Both are written into the API's OpenAPI body under Fn::If; these resolve the body with each set
of parameter values, as CloudFormation would, and read what API Gateway would import.
"""

from __future__ import annotations

from typing import Any

import pytest

from orderpipe_local.stack.template import Resolver, Template, TemplateError, load_template
from orderpipe_local.testing import ROOT

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example"
AUDIENCE = "3n4b5urk1ft4fl3mg5e62d9ado"
AUTH_ON = {"AuthIssuer": ISSUER, "AuthAudience": AUDIENCE}
AUTHORIZER = "OrdersJwtAuthorizer"


def api_body(overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """OrdersApi's OpenAPI body as API Gateway imports it with these parameter values."""
    template = load_template(ROOT / "template.yaml", overrides=overrides or {})
    resolver = Resolver(template, lambda logical_id, attribute: f"{logical_id}.{attribute or 'Ref'}")
    body: dict[str, Any] = resolver.resolve(template.resources["OrdersApi"]["Properties"]["Body"])
    return body


def operations(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, methods in body["paths"].items()
        for method, operation in methods.items()
    }


# --- Authorization ----------------------------------------------------------------------------


def test_by_default_the_api_has_no_authorizer() -> None:
    # Given the template's defaults (dev)
    body = api_body()

    # Then no route asks for a token and no authorizer is declared: the API answers as before auth
    assert set(operations(body)) == {"POST /orders", "GET /orders/{orderId}"}
    assert all("security" not in operation for operation in operations(body).values())
    assert "components" not in body


def test_with_an_issuer_and_audience_the_api_has_a_jwt_authorizer() -> None:
    # Given AuthIssuer and AuthAudience
    body = api_body(AUTH_ON)

    # Then the API declares one JWT authorizer reading the Authorization header, for that issuer
    # and audience
    schemes = body["components"]["securitySchemes"]
    assert schemes == {
        AUTHORIZER: {
            "type": "oauth2",
            "x-amazon-apigateway-authorizer": {
                "type": "jwt",
                "identitySource": "$request.header.Authorization",
                "jwtConfiguration": {"issuer": ISSUER, "audience": [AUDIENCE]},
            },
        }
    }


def test_placing_an_order_needs_orders_write_and_reading_one_any_valid_token() -> None:
    # Given the API with its authorizer
    routes = operations(api_body(AUTH_ON))

    # Then POST needs the scope orders/write; GET a valid token (ingest checks whose order it is)
    assert routes["POST /orders"]["security"] == [{AUTHORIZER: ["orders/write"]}]
    assert routes["GET /orders/{orderId}"]["security"] == [{AUTHORIZER: []}]
    # And each route still goes to IngestFunction, through its alias `live`
    for operation in routes.values():
        assert "IngestFunctionAliaslive.Ref" in operation["x-amazon-apigateway-integration"]["uri"]


@pytest.mark.parametrize("half", [{"AuthIssuer": ISSUER}, {"AuthAudience": AUDIENCE}])
def test_an_issuer_without_an_audience_or_the_reverse_is_refused_before_any_change(
    half: dict[str, str],
) -> None:
    # Given only one of the two parameters, Then the template's rules refuse it
    with pytest.raises(TemplateError, match="needs an Auth"):
        load_template(ROOT / "template.yaml", overrides=half)


# --- CORS -------------------------------------------------------------------------------------


def test_by_default_the_api_answers_no_cors() -> None:
    # Given no CorsAllowedOrigins, Then the API has no CORS configuration (no browser origin may call it)
    assert "x-amazon-apigateway-cors" not in api_body()


def test_allowed_origins_become_the_apis_cors_configuration() -> None:
    # Given two storefront origins
    body = api_body({"CorsAllowedOrigins": "https://shop.example.com,https://www.example.com"})

    # Then API Gateway answers preflights and adds CORS headers for exactly those origins, allowing
    # the headers a storefront sends (the token, JSON, Idempotency-Key) and exposing Location
    cors = body["x-amazon-apigateway-cors"]
    assert cors["allowOrigins"] == ["https://shop.example.com", "https://www.example.com"]
    assert cors["allowMethods"] == ["GET", "POST"]
    assert {"authorization", "content-type", "idempotency-key"} <= set(cors["allowHeaders"])
    assert "location" in cors["exposeHeaders"]
    assert "allowCredentials" not in cors  # tokens travel in a header, never in cookies


def test_template_resolves_with_auth_and_cors_together() -> None:
    # Given both turned on, Then the transform and the rules accept them, and the stage is unchanged
    template: Template = load_template(
        ROOT / "template.yaml", overrides=AUTH_ON | {"CorsAllowedOrigins": "https://shop.example.com"}
    )
    stages = template.resources_of_type("AWS::ApiGatewayV2::Stage")
    assert len(stages) == 1
