"""The HTTP API's CORS configuration (`x-amazon-apigateway-cors`), played locally.

As API Gateway does with a CORS configuration: it answers a preflight (`OPTIONS` with `Origin`
and `Access-Control-Request-Method`) itself, on any path, before any authorizer, with `204`;
to a CORS request from an allowed origin it adds `Access-Control-Allow-Origin` (and the exposed
headers, credentials) to whatever is answered, and the function's own CORS headers are dropped.
An origin that is not allowed gets no CORS headers, so the browser keeps the answer from the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orderpipe_local.apigw.events import HttpRequest, HttpResponse


@dataclass(frozen=True)
class CorsConfiguration:
    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False

    @classmethod
    def from_openapi(cls, cors: Mapping[str, Any]) -> CorsConfiguration:
        def strings(name: str) -> tuple[str, ...]:
            values = cors.get(name) or ()
            return tuple(str(v) for v in ([values] if isinstance(values, str) else values))

        max_age = cors.get("maxAge")
        return cls(
            allow_origins=strings("allowOrigins"),
            allow_methods=strings("allowMethods"),
            allow_headers=strings("allowHeaders"),
            expose_headers=strings("exposeHeaders"),
            max_age=None if max_age is None else int(max_age),
            allow_credentials=bool(cors.get("allowCredentials", False)),
        )

    def allowed_origin(self, origin: str | None) -> str | None:
        """The `Access-Control-Allow-Origin` value for `origin`, or None if it is not allowed."""
        if origin is None:
            return None
        if origin in self.allow_origins:
            return origin
        return "*" if "*" in self.allow_origins else None

    def preflight(self, request: HttpRequest) -> HttpResponse | None:
        """API Gateway's answer to a preflight request, or None if `request` is not one."""
        if request.method != "OPTIONS" or request.header("access-control-request-method") is None:
            return None
        headers: list[tuple[str, str]] = []
        if (origin := self.allowed_origin(request.header("origin"))) is not None:
            headers.append(("Access-Control-Allow-Origin", origin))
            if self.allow_methods:
                headers.append(("Access-Control-Allow-Methods", ",".join(self.allow_methods)))
            if self.allow_headers:
                headers.append(("Access-Control-Allow-Headers", ",".join(self.allow_headers)))
            if self.max_age is not None:
                headers.append(("Access-Control-Max-Age", str(self.max_age)))
            if self.allow_credentials:
                headers.append(("Access-Control-Allow-Credentials", "true"))
        return HttpResponse(204, tuple(headers), b"")

    def decorate(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        """`response` with the CORS headers of this configuration, instead of the function's."""
        headers = [
            (name, value)
            for name, value in response.headers
            if not name.lower().startswith("access-control-")
        ]
        if (origin := self.allowed_origin(request.header("origin"))) is not None:
            headers.append(("Access-Control-Allow-Origin", origin))
            if self.expose_headers:
                headers.append(("Access-Control-Expose-Headers", ",".join(self.expose_headers)))
            if self.allow_credentials:
                headers.append(("Access-Control-Allow-Credentials", "true"))
        return HttpResponse(response.status, tuple(headers), response.body)
