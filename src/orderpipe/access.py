"""Who may place and read orders, from the JWT claims API Gateway's authorizer passes on.

API Gateway checks the token (signature, issuer, audience, expiry, the route's scopes) before
ingest runs; ingest only reads what it passed on, in `requestContext.authorizer.jwt`. Whether
access is enforced is decided from the event, never from configuration alone: a function version
published before the authorizer was turned on (SAM does not publish one when only a parameter
changes) must still enforce it. An event with an authorizer but no usable claims is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orderpipe.models import Order

PLACE_ORDERS_SCOPE = "orders/write"
READ_ALL_ORDERS_SCOPE = "orders/read-all"


class AccessDenied(Exception):
    """A token that API Gateway let through but that does not allow this request."""


@dataclass(frozen=True)
class Caller:
    """The holder of a token API Gateway accepted: its subject and scopes."""

    subject: str | None
    scopes: frozenset[str]

    def may_place_orders(self) -> bool:
        return bool(self.subject) and PLACE_ORDERS_SCOPE in self.scopes

    def may_read(self, order: Order) -> bool:
        """Its own orders, or any with `orders/read-all`; orders placed without a customer (auth
        off when they came) only with `orders/read-all`."""
        if READ_ALL_ORDERS_SCOPE in self.scopes:
            return True
        return bool(self.subject) and order.customer_id == self.subject


def caller_of(event: Mapping[str, Any]) -> Caller | None:
    """The caller of a payload 2.0 event; None only if API Gateway ran no authorizer (auth off).

    An authorizer entry without JWT claims (another kind of authorizer, or a malformed event)
    gives a caller with no subject and no scopes, who may do nothing.
    """
    request_context = event.get("requestContext")
    authorizer = request_context.get("authorizer") if isinstance(request_context, Mapping) else None
    if authorizer is None:
        return None
    jwt = authorizer.get("jwt") if isinstance(authorizer, Mapping) else None
    claims = jwt.get("claims") if isinstance(jwt, Mapping) else None
    if not isinstance(claims, Mapping):
        return Caller(subject=None, scopes=frozenset())
    subject = claims.get("sub")
    scopes = set(_scope_claims(claims))
    listed = jwt.get("scopes") if isinstance(jwt, Mapping) else None
    if isinstance(listed, list):
        scopes.update(scope for scope in listed if isinstance(scope, str))
    return Caller(subject=subject if isinstance(subject, str) and subject else None, scopes=frozenset(scopes))


def _scope_claims(claims: Mapping[str, Any]) -> list[str]:
    """The `scope` (space-separated, RFC 8693; Cognito) and `scp` (a list: Okta, Entra) claims.

    API Gateway passes every claim as a string: a list arrives as `[a b]`.
    """
    scopes: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, list):
            scopes.extend(str(scope) for scope in value)
        elif isinstance(value, str):
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1].replace(",", " ")
            scopes.extend(text.split())
    return scopes
