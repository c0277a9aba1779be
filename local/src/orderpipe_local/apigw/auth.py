"""API Gateway's JWT authorizer, played locally with joserfc.

What the HTTP API checks before it invokes a route's function (API Gateway's "Control access to
HTTP APIs with JWT authorizers"): the token from the identity source (a leading `Bearer ` taken
off), signed with RS256 by a key of the issuer's JWKS (found through its
`/.well-known/openid-configuration`), `iss` the issuer, `aud` (or, without one, `client_id`) one
of the audiences, `exp` after now, `nbf` and `iat` before it, and the `scope` or `scp` claim
holding one of the route's scopes. Any failure but the scope is `401 {"message":"Unauthorized"}`,
a missing scope `403 {"message":"Forbidden"}`. The function then gets the claims, each as a
string as API Gateway passes them, in `requestContext.authorizer.jwt`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from orderpipe_local.stack.template import TemplateError

if TYPE_CHECKING:
    from joserfc.jwk import KeySetSerialization

# API Gateway accepts RSA-signed tokens only.
ALGORITHMS = ["RS256"]
_JWKS_TIMEOUT_SECONDS = 5.0
# An unknown `kid` makes the JWKS be fetched again (keys rotate), at most this often.
_JWKS_REFRESH_SECONDS = 30.0


class Unauthorized(Exception):
    """No token, or one that fails a check: API Gateway's 401."""


class Forbidden(Exception):
    """A valid token without any of the route's scopes: API Gateway's 403."""


@dataclass(frozen=True)
class JwtAuthorizerConfig:
    """One `x-amazon-apigateway-authorizer` of type jwt, from the API's OpenAPI body."""

    name: str
    issuer: str
    audience: tuple[str, ...]
    identity_source: str = "$request.header.Authorization"

    @classmethod
    def from_security_scheme(cls, name: str, scheme: Mapping[str, Any]) -> JwtAuthorizerConfig:
        authorizer = scheme.get("x-amazon-apigateway-authorizer") or {}
        if str(authorizer.get("type", "")).lower() != "jwt":
            raise TemplateError(f"authorizer {name}: only JWT authorizers run locally")
        configuration = authorizer.get("jwtConfiguration") or {}
        source = authorizer.get("identitySource", "$request.header.Authorization")
        source = source[0] if isinstance(source, list) else source
        if not str(source).lower().startswith("$request.header."):
            raise TemplateError(f"authorizer {name}: only a header identity source runs locally")
        return cls(
            name=name,
            issuer=str(configuration.get("issuer", "")),
            audience=tuple(str(value) for value in configuration.get("audience") or ()),
            identity_source=str(source),
        )

    @property
    def header(self) -> str:
        return self.identity_source.removeprefix("$request.header.").lower()


class JwtAuthorizer:
    """Checks tokens for one authorizer configuration, with its issuer's JWKS (cached)."""

    def __init__(self, config: JwtAuthorizerConfig) -> None:
        self.config = config
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def authorize(self, token: str | None, scopes: Sequence[str], now: float | None = None) -> dict[str, Any]:
        """The `requestContext.authorizer` entry for a request bearing `token` on a route that
        needs one of `scopes` (none: any valid token). Raises Unauthorized or Forbidden."""
        if not token:
            raise Unauthorized("no token")
        token = token.strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        claims = self._verified_claims(token, time.time() if now is None else now)
        granted = _token_scopes(claims)
        if scopes and not set(scopes) & set(granted):
            raise Forbidden(f"the token has none of the scopes {', '.join(scopes)}")
        return {
            "jwt": {
                "claims": {name: _as_apigw_string(value) for name, value in claims.items()},
                "scopes": granted or None,
            }
        }

    def _verified_claims(self, token: str, now: float) -> dict[str, Any]:
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError) as error:
            raise Unauthorized(f"not a JWT: {error}") from error
        if header.get("alg") not in ALGORITHMS:
            raise Unauthorized(f"algorithm {header.get('alg')!r} is not accepted")
        keys = self._key_set(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(token, keys, algorithms=ALGORITHMS).claims
            jwt.JWTClaimsRegistry(
                now=int(now),
                iss={"essential": True, "value": self.config.issuer},
                exp={"essential": True},
            ).validate(claims)
        except (JoseError, ValueError) as error:  # the registry checks nbf and iat when present
            raise Unauthorized(str(error)) from error
        audiences = claims.get("aud", claims.get("client_id"))
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if not set(self.config.audience) & {str(value) for value in audiences if value is not None}:
            raise Unauthorized("the token is not for this audience")
        return claims

    def _key_set(self, kid: str) -> KeySet:
        with self._lock:
            known = self._keys is not None and any(key.kid == kid for key in self._keys.keys)
            stale = time.monotonic() - self._fetched_at > _JWKS_REFRESH_SECONDS
            if self._keys is None or (not known and stale):
                try:
                    self._keys = KeySet.import_key_set(
                        cast("KeySetSerialization", fetch_jwks(self.config.issuer))
                    )
                except (OSError, ValueError, JoseError) as error:
                    raise Unauthorized(f"the issuer's keys could not be read: {error}") from error
                self._fetched_at = time.monotonic()
            return self._keys


def fetch_jwks(issuer: str) -> dict[str, Any]:
    """The issuer's JWKS, found as API Gateway finds it: through its OpenID configuration."""
    discovery = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
    return _get_json(str(discovery["jwks_uri"]))


def _get_json(url: str) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url} is not an HTTP URL")
    with urllib.request.urlopen(url, timeout=_JWKS_TIMEOUT_SECONDS) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


def _token_scopes(claims: Mapping[str, Any]) -> list[str]:
    scopes: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            scopes.extend(value.split())
        elif isinstance(value, list):
            scopes.extend(str(scope) for scope in value)
    return scopes


def _as_apigw_string(value: Any) -> str:
    """API Gateway passes every claim as a string; a list as `[a b]`, an object as its JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + " ".join(_as_apigw_string(item) for item in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
