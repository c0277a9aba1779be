"""`orderpipe local --auth` as API Gateway with a JWT authorizer, tokens from `orderpipe token`;
and the API's CORS configuration, preflight included. Over HTTP only."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import RSAKey

from orderpipe_local.testing import (
    ROOT,
    RunningPipeline,
    load_event,
    orderpipe_command,
    start_pipeline,
    wait_until,
)

pytestmark = pytest.mark.e2e

ORDER = json.loads(load_event("ingest-post-order.json")["body"])
STOREFRONT = "https://shop.example.com"
UNAUTHORIZED = {"message": "Unauthorized"}
FORBIDDEN = {"message": "Forbidden"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPipeline]:
    """One pipeline with its issuer and a storefront origin, for every test here."""
    running = start_pipeline(
        tmp_path_factory.mktemp("auth"),
        "--auth",
        "--auth-port",
        "0",
        "--parameter-overrides",
        f"CorsAllowedOrigins={STOREFRONT}",
    )
    yield running
    running.stop()


def token(pipeline: RunningPipeline, *args: str) -> str:
    """`orderpipe token ARGS` for the running pipeline: the token it prints on stdout."""
    state_file = pipeline.output.parent / "state.json"
    printed = subprocess.run(
        [*orderpipe_command(), "token", "--state-file", str(state_file), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return printed.stdout.strip()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def place(
    pipeline: RunningPipeline, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    return pipeline.request("POST", "/orders", ORDER, headers)


# --- Refused by the authorizer ----------------------------------------------------------------


def test_post_without_a_token_is_unauthorized(pipeline: RunningPipeline) -> None:
    # When an order is posted without a token, or with one that is no JWT
    missing = place(pipeline)
    garbage = place(pipeline, bearer("not-a-token"))

    # Then API Gateway's 401 answers, and nothing reaches ingest
    assert missing[0] == garbage[0] == 401
    assert missing[2] == garbage[2] == UNAUTHORIZED


def test_an_expired_token_is_unauthorized(pipeline: RunningPipeline) -> None:
    # Given a token that expired a minute ago
    expired = token(pipeline, "--sub", "ada", "--scope", "orders/write", "--expires-in", "-60")

    # Then it is refused
    status, _, body = place(pipeline, bearer(expired))
    assert (status, body) == (401, UNAUTHORIZED)


def test_a_token_signed_by_another_key_is_unauthorized(pipeline: RunningPipeline) -> None:
    # Given the claims and key id of a real token, signed again by a key the issuer never published
    genuine = token(pipeline, "--sub", "ada", "--scope", "orders/write")
    compact = jws.extract_compact(genuine.encode())
    claims = json.loads(compact.payload)
    forger = RSAKey.generate_key(2048, parameters={"kid": compact.protected["kid"]}, private=True)
    forged = jwt.encode(compact.protected, claims, forger)

    # Then the genuine token is accepted and the forged one refused
    assert place(pipeline, bearer(genuine))[0] == 202
    status, _, body = place(pipeline, bearer(forged))
    assert (status, body) == (401, UNAUTHORIZED)


def test_a_token_for_another_audience_is_unauthorized(pipeline: RunningPipeline) -> None:
    # Given a token of the right issuer for another audience
    elsewhere = token(pipeline, "--sub", "ada", "--scope", "orders/write", "--audience", "another-api")

    # Then it is refused
    status, _, body = place(pipeline, bearer(elsewhere))
    assert (status, body) == (401, UNAUTHORIZED)


def test_a_valid_token_without_orders_write_is_forbidden(pipeline: RunningPipeline) -> None:
    # Given valid tokens with no scope, and with orders/read-all only
    no_scope = token(pipeline, "--sub", "ada")
    read_all = token(pipeline, "--sub", "support", "--scope", "orders/read-all")

    # Then placing an order is API Gateway's 403
    for refused in (no_scope, read_all):
        status, _, body = place(pipeline, bearer(refused))
        assert (status, body) == (403, FORBIDDEN)


# --- Whose order is answered ------------------------------------------------------------------


def test_an_order_is_answered_to_its_owner_and_read_all_only(pipeline: RunningPipeline) -> None:
    # Given an order Ada placed, stored
    ada = bearer(token(pipeline, "--sub", "ada", "--scope", "orders/write"))
    status, _, accepted = place(pipeline, ada)
    assert status == 202, accepted
    path = f"/orders/{accepted['orderId']}"
    wait_until(lambda: pipeline.request("GET", path, headers=ada)[0] == 200)

    # When Ada, Grace and support read it, and Grace an id no order has
    own = pipeline.request("GET", path, headers=ada)
    grace = bearer(token(pipeline, "--sub", "grace", "--scope", "orders/write"))
    other = pipeline.request("GET", path, headers=grace)
    unknown = pipeline.request("GET", "/orders/00000000-0000-4000-8000-000000000000", headers=grace)
    support = pipeline.request(
        "GET", path, headers=bearer(token(pipeline, "--sub", "s1", "--scope", "orders/read-all"))
    )
    anonymous = pipeline.request("GET", path)

    # Then Ada and support get it with Ada as its customer; Grace the 404 of an unknown id
    assert own[0] == support[0] == 200
    assert own[2]["customerId"] == support[2]["customerId"] == "ada"
    assert other[0] == unknown[0] == 404
    assert other[2] == unknown[2]
    assert anonymous[0] == 401


def test_the_issuer_publishes_its_public_key_only(pipeline: RunningPipeline) -> None:
    # Given the issuer the running pipeline names
    issuer = pipeline.state["auth"]["issuer"]

    # When its OpenID configuration and JWKS are read, as API Gateway reads them
    with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=10) as response:
        discovery = json.loads(response.read())
    with urllib.request.urlopen(discovery["jwks_uri"], timeout=10) as response:
        jwks = json.loads(response.read())

    # Then they name the issuer and one RSA key, without its private part
    assert discovery["issuer"] == issuer
    [key] = jwks["keys"]
    assert key["kty"] == "RSA"
    assert not {"d", "p", "q"} & set(key)


# --- CORS ---------------------------------------------------------------------------------------


def test_a_preflight_from_the_storefront_is_answered_before_any_token(pipeline: RunningPipeline) -> None:
    # When the storefront's browser asks whether it may POST with a token and JSON
    status, headers, _ = pipeline.request(
        "OPTIONS",
        "/orders",
        headers={
            "Origin": STOREFRONT,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )

    # Then API Gateway answers it itself (no token needed) with the configured CORS headers
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == STOREFRONT
    assert set(headers["Access-Control-Allow-Methods"].split(",")) == {"GET", "POST"}
    assert {"authorization", "content-type"} <= set(headers["Access-Control-Allow-Headers"].split(","))
    assert headers["Access-Control-Max-Age"] == "600"


def test_another_origin_gets_no_cors_headers(pipeline: RunningPipeline) -> None:
    # When another site's page preflights, and posts
    preflight = pipeline.request(
        "OPTIONS",
        "/orders",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    posted = place(pipeline, {"Origin": "https://evil.example"})

    # Then neither answer allows it: the browser keeps them from the page
    assert "Access-Control-Allow-Origin" not in preflight[1]
    assert "Access-Control-Allow-Origin" not in posted[1]


def test_the_storefronts_requests_carry_cors_headers_refusals_included(pipeline: RunningPipeline) -> None:
    # When the storefront posts with a token, and without one
    ada = bearer(token(pipeline, "--sub", "ada", "--scope", "orders/write"))
    accepted = place(pipeline, {"Origin": STOREFRONT, **ada})
    refused = place(pipeline, {"Origin": STOREFRONT})

    # Then both answers allow the storefront to read them, and the Location header
    assert (accepted[0], refused[0]) == (202, 401)
    for _, headers, _ in (accepted, refused):
        assert headers["Access-Control-Allow-Origin"] == STOREFRONT
        assert "location" in headers["Access-Control-Expose-Headers"].split(",")


def test_token_without_a_running_issuer_says_so(tmp_path: Path) -> None:
    # Given no pipeline running with this state file
    printed = subprocess.run(
        [*orderpipe_command(), "token", "--state-file", str(tmp_path / "state.json"), "--sub", "ada"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then it prints no token and says why
    assert printed.returncode == 1
    assert printed.stdout == ""
    assert "no orderpipe local is running" in printed.stderr
