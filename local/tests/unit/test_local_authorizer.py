"""The local JWT authorizer against a LocalIssuer on a free port: each check API Gateway makes,
and the event entry the function then gets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc import jwt

from orderpipe_local.apigw.auth import Forbidden, JwtAuthorizer, JwtAuthorizerConfig, Unauthorized
from orderpipe_local.issuer import LocalIssuer, issue_token


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[LocalIssuer]:
    running = LocalIssuer(tmp_path / "issuer-key.json", port=0)
    running.start()
    yield running
    running.close()


@pytest.fixture
def authorizer(issuer: LocalIssuer) -> JwtAuthorizer:
    return JwtAuthorizer(JwtAuthorizerConfig("OrdersJwtAuthorizer", issuer.url, (issuer.audience,)))


def a_token(issuer: LocalIssuer, **claims: object) -> str:
    """A token of `issuer` for Ada with orders/write, with `claims` changed (None: left out)."""
    base = jwt.decode(
        issue_token(
            issuer.key, issuer=issuer.url, audience=issuer.audience, subject="ada", scopes=["orders/write"]
        ),
        issuer.key,
    ).claims
    changed = {name: value for name, value in (base | claims).items() if value is not None}
    return jwt.encode({"alg": "RS256", "kid": issuer.key.kid}, changed, issuer.key)


def test_a_valid_token_gives_the_claims_as_api_gateway_passes_them(
    issuer: LocalIssuer, authorizer: JwtAuthorizer
) -> None:
    # Given a token of the issuer, sent as `Bearer`
    token = issue_token(
        issuer.key, issuer=issuer.url, audience=issuer.audience, subject="ada", scopes=["orders/write", "x/y"]
    )

    # When the route needs orders/write
    entry = authorizer.authorize(f"Bearer {token}", ["orders/write"])

    # Then the function gets every claim as a string, and the scopes
    claims = entry["jwt"]["claims"]
    assert claims["sub"] == "ada"
    assert claims["iss"] == issuer.url
    assert isinstance(claims["exp"], str)
    assert claims["scope"] == "orders/write x/y"
    assert entry["jwt"]["scopes"] == ["orders/write", "x/y"]


def test_the_issuer_key_file_is_for_its_owner_only_and_goes_with_it(tmp_path: Path) -> None:
    # Given a started issuer
    issuer = LocalIssuer(tmp_path / "issuer-key.json", port=0)
    issuer.start()
    mode = (tmp_path / "issuer-key.json").stat().st_mode & 0o777
    issuer.close()

    # Then its private key was readable by its owner only, and is gone once it stopped
    assert mode == 0o600
    assert not (tmp_path / "issuer-key.json").exists()


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        pytest.param("iss", "https://someone-else.example", id="another-issuer"),
        pytest.param("aud", "another-api", id="another-audience"),
        pytest.param("exp", -1, id="expired"),
        pytest.param("nbf", 300, id="not-yet-valid"),
        pytest.param("iat", 300, id="issued-in-the-future"),
    ],
)
def test_a_token_failing_a_claim_check_is_unauthorized(
    issuer: LocalIssuer, authorizer: JwtAuthorizer, claim: str, value: str | int
) -> None:
    # Given a token with one claim changed (a time: that many seconds from now)
    changed = int(time.time()) + value if isinstance(value, int) else value

    # Then it is refused
    with pytest.raises(Unauthorized):
        authorizer.authorize(a_token(issuer, **{claim: changed}), ["orders/write"])


def test_a_token_without_an_expiry_is_unauthorized(issuer: LocalIssuer, authorizer: JwtAuthorizer) -> None:
    # Given a token with no exp at all (API Gateway requires one)
    claims = {"iss": issuer.url, "aud": issuer.audience, "sub": "ada", "scope": "orders/write"}
    token = jwt.encode({"alg": "RS256", "kid": issuer.key.kid}, claims, issuer.key)

    with pytest.raises(Unauthorized):
        authorizer.authorize(token, ["orders/write"])


def test_client_id_stands_for_the_audience_as_in_cognito_access_tokens(
    issuer: LocalIssuer, authorizer: JwtAuthorizer
) -> None:
    # Given a Cognito-style access token: no aud, the app client in client_id
    token = a_token(issuer, aud=None, client_id=issuer.audience)

    # Then it is accepted
    assert authorizer.authorize(token, ["orders/write"])["jwt"]["claims"]["client_id"] == issuer.audience


def test_hs256_signed_with_the_public_key_is_refused(issuer: LocalIssuer, authorizer: JwtAuthorizer) -> None:
    # Given a token that names an algorithm API Gateway does not take
    token = a_token(issuer).split(".")
    header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}

    with pytest.raises(Unauthorized, match="algorithm"):
        authorizer.authorize(".".join([header, token[1], token[2]]), ["orders/write"])


def test_a_valid_token_without_the_routes_scope_is_forbidden(
    issuer: LocalIssuer, authorizer: JwtAuthorizer
) -> None:
    token = a_token(issuer, scope="orders/read-all")

    with pytest.raises(Forbidden):
        authorizer.authorize(token, ["orders/write"])
    # A route with no scopes takes any valid token
    assert authorizer.authorize(token, [])["jwt"]["claims"]["sub"] == "ada"
