"""The template's CORS configuration as the local API plays it, read from the transformed template."""

from __future__ import annotations

from orderpipe_local.apigw.cors import CorsConfiguration
from orderpipe_local.apigw.events import HttpRequest, HttpResponse, http_api_from_template
from orderpipe_local.stack.template import load_template
from orderpipe_local.testing import ROOT

STOREFRONT = "https://shop.example.com"


def cors_of(origins: str) -> CorsConfiguration | None:
    template = load_template(ROOT / "template.yaml", overrides={"CorsAllowedOrigins": origins})
    return http_api_from_template(template).cors


def options(*headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest("OPTIONS", "/orders", (("host", "localhost"), *headers))


def test_without_origins_the_local_api_has_no_cors_configuration() -> None:
    assert cors_of("") is None


def test_an_options_request_that_is_no_preflight_is_routed_as_any_request() -> None:
    # Given the storefront's configuration, and an OPTIONS without Access-Control-Request-Method
    cors = cors_of(STOREFRONT)
    assert cors is not None

    # Then it is not answered as a preflight (it goes on to the routes: API Gateway's 404)
    assert cors.preflight(options(("origin", STOREFRONT))) is None


def test_the_functions_own_cors_headers_are_replaced_by_the_configurations() -> None:
    # Given a function answer that allows every origin by itself
    cors = cors_of(STOREFRONT)
    assert cors is not None
    answered = HttpResponse(
        200, (("Access-Control-Allow-Origin", "*"), ("Content-Type", "application/json")), b"{}"
    )

    # When a page of another origin reads it, and the storefront
    other = cors.decorate(HttpRequest("GET", "/orders/x", (("origin", "https://evil.example"),)), answered)
    own = cors.decorate(HttpRequest("GET", "/orders/x", (("origin", STOREFRONT),)), answered)

    # Then only the configured origin is allowed, whatever the function said
    assert [name for name, _ in other.headers] == ["Content-Type"]
    assert ("Access-Control-Allow-Origin", STOREFRONT) in own.headers
    assert ("Access-Control-Allow-Origin", "*") not in own.headers


def test_several_origins_each_get_their_own_origin_back() -> None:
    cors = cors_of(f"{STOREFRONT},https://www.example.com")
    assert cors is not None
    for origin in (STOREFRONT, "https://www.example.com"):
        preflight = cors.preflight(options(("origin", origin), ("access-control-request-method", "POST")))
        assert preflight is not None
        assert (preflight.status, dict(preflight.headers)["Access-Control-Allow-Origin"]) == (204, origin)
