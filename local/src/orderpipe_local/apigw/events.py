"""What API Gateway's HTTP API does with a request, apart from HTTP itself.

The routes the template declares, the payload format 2.0 event API Gateway sends a Lambda proxy
integration for a request, and its reading of the function's proxy response. The HTTP server
that receives the requests and writes the answers is `apigw.server`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from orderpipe_local.apigw.auth import JwtAuthorizerConfig
from orderpipe_local.stack.template import ACCOUNT_ID, Resolver, Template, TemplateError

if TYPE_CHECKING:
    from orderpipe_local.apigw.cors import CorsConfiguration

_DIGITS = re.compile(r"[0-9]+")
DEFAULT_ROUTE = "$default"
DEFAULT_STAGE = "$default"

_INTEGRATION = "x-amazon-apigateway-integration"
_ANY_METHOD = "x-amazon-apigateway-any-method"
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})
_FUNCTION_ARN = re.compile(r":function:(?P<name>[^/:]+)")
# Hop-by-hop headers belong to the client's connection to API Gateway, not to the event.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110, 5.1)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TEXT_MEDIA_TYPES = frozenset(
    {"application/json", "application/xml", "application/javascript", "application/x-www-form-urlencoded"}
)


# --- Routes from the template ----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One route of the API: `POST /orders`, `GET /orders/{orderId}`, `ANY /{proxy+}` or `$default`."""

    method: str
    path: str
    function_id: str
    payload_format_version: str = "2.0"
    # The JWT authorizer of the route's `security` and the scopes it needs (none: any valid token).
    authorizer: str | None = None
    authorization_scopes: tuple[str, ...] = ()
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _parameters: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parameters: list[str] = []
        pattern = ""
        if self.path != DEFAULT_ROUTE:
            for segment in self.path.strip("/").split("/"):
                if match := re.fullmatch(r"\{(?P<name>[^{}+]+)(?P<greedy>\+)?\}", segment):
                    parameters.append(match["name"])
                    group = f"(?P<p{len(parameters) - 1}>{'.+' if match['greedy'] else '[^/]+'})"
                    pattern += "/" + group
                else:
                    pattern += "/" + re.escape(segment)
        object.__setattr__(self, "_pattern", re.compile(pattern or "/"))
        object.__setattr__(self, "_parameters", tuple(parameters))

    @property
    def route_key(self) -> str:
        return DEFAULT_ROUTE if self.path == DEFAULT_ROUTE else f"{self.method} {self.path}"

    @property
    def specificity(self) -> tuple[int, int, int, int, int]:
        """Sort key, most specific first: API Gateway prefers literal segments to parameters,
        parameters to greedy ones, a named method to ANY, and any route to `$default`."""
        greedy = "+}" in self.path
        literals = sum(1 for s in self.path.strip("/").split("/") if not s.startswith("{"))
        return (
            self.path == DEFAULT_ROUTE,
            greedy,
            len(self._parameters),
            -literals,
            self.method == "ANY",
        )

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters if the request goes to this route, else None."""
        if self.method not in ("ANY", method):
            return None
        if self.path == DEFAULT_ROUTE:
            return {}
        found = self._pattern.fullmatch(path)
        if found is None:
            return None
        return {name: unquote(found[f"p{i}"]) for i, name in enumerate(self._parameters)}


@dataclass(frozen=True)
class HttpApi:
    """An AWS::ApiGatewayV2::Api of the template: its id, stage and routes."""

    logical_id: str
    api_id: str
    stage: str
    routes: tuple[Route, ...]
    authorizers: Mapping[str, JwtAuthorizerConfig] = field(default_factory=dict)
    cors: CorsConfiguration | None = None

    def route_request(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
        """The route a request goes to, and its path parameters: a named stage prefixes every
        path (`/prod/orders`), the `$default` stage none. None: API Gateway's 404."""
        path = raw_path
        if self.stage != DEFAULT_STAGE:
            prefix = f"/{self.stage}"
            if path != prefix and not path.startswith(prefix + "/"):
                return None
            path = path[len(prefix) :] or "/"
        return self.find_route(method, path)

    def find_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in sorted(self.routes, key=lambda r: r.specificity):
            parameters = route.match(method, path)
            if parameters is not None:
                return route, parameters
        return None


def http_api_from_template(template: Template, logical_id: str | None = None) -> HttpApi:
    """The HTTP API (SAM's `AWS::Serverless::HttpApi` after the transform) and its routes.

    Routes come from the API's OpenAPI `Body` (what API Gateway imports): each path and method
    with an `aws_proxy` integration whose URI names one of the template's functions.
    """
    apis = {
        api_id: resource
        for api_id, resource in template.resources_of_type("AWS::ApiGatewayV2::Api").items()
        if resource.get("Properties", {}).get("ProtocolType", "HTTP") == "HTTP"
    }
    if logical_id is None:
        if len(apis) != 1:
            found = ", ".join(sorted(apis)) or "none"
            raise TemplateError(f"expected one HTTP API in the template, found {found}")
        (logical_id,) = apis
    properties = apis[logical_id].get("Properties", {})
    if "Body" not in properties:
        raise TemplateError(f"{logical_id} has no inline OpenAPI Body (BodyS3Location is not read locally)")
    resolver = Resolver(template, _function_arns(template))
    body = resolver.resolve(properties["Body"])
    routes = []
    for path, operations in body.get("paths", {}).items():
        for key, operation in operations.items():
            method = "ANY" if key == _ANY_METHOD else key.upper() if key in _HTTP_METHODS else None
            if method is None or _INTEGRATION not in operation:
                continue
            integration = operation[_INTEGRATION]
            if integration.get("type", "").lower() != "aws_proxy":
                raise TemplateError(f"{method} {path}: only Lambda proxy integrations run locally")
            function = _FUNCTION_ARN.search(str(integration.get("uri", "")))
            if function is None or function["name"] not in template.resources:
                raise TemplateError(f"{method} {path}: the integration names no function of the template")
            authorizer, scopes = _route_security(operation.get("security"), f"{method} {path}")
            routes.append(
                Route(
                    method=method,
                    path=DEFAULT_ROUTE if path in ("/$default", DEFAULT_ROUTE) else path,
                    function_id=function["name"],
                    payload_format_version=str(integration.get("payloadFormatVersion", "2.0")),
                    authorizer=authorizer,
                    authorization_scopes=scopes,
                )
            )
    for route in routes:
        if route.payload_format_version != "2.0":
            raise TemplateError(
                f"{route.route_key}: payload format {route.payload_format_version} is not run locally"
            )
    stage = DEFAULT_STAGE
    for resource in template.resources_of_type("AWS::ApiGatewayV2::Stage").values():
        stage_properties = resource.get("Properties", {})
        if stage_properties.get("ApiId") == {"Ref": logical_id}:
            stage = str(stage_properties.get("StageName", DEFAULT_STAGE))
    from orderpipe_local.apigw.cors import CorsConfiguration  # it builds on this module's types

    schemes = (body.get("components") or {}).get("securitySchemes") or {}
    authorizers = {
        name: JwtAuthorizerConfig.from_security_scheme(name, scheme)
        for name, scheme in schemes.items()
        if "x-amazon-apigateway-authorizer" in scheme
    }
    for route in routes:
        if route.authorizer is not None and route.authorizer not in authorizers:
            raise TemplateError(f"{route.route_key}: no authorizer {route.authorizer} in the API")
    cors = body.get("x-amazon-apigateway-cors")
    digest = hashlib.sha256(f"{template.stack_name}/{logical_id}".encode()).hexdigest()
    return HttpApi(
        logical_id=logical_id,
        api_id=digest[:10],
        stage=stage,
        routes=tuple(routes),
        authorizers=authorizers,
        cors=CorsConfiguration.from_openapi(cors) if cors else None,
    )


def _route_security(security: Any, route: str) -> tuple[str | None, tuple[str, ...]]:
    """The authorizer and scopes of an operation's OpenAPI `security` (one requirement)."""
    if not security:
        return None, ()
    if not isinstance(security, list) or len(security) != 1 or len(security[0]) != 1:
        raise TemplateError(f"{route}: only one authorizer per route runs locally")
    ((name, scopes),) = security[0].items()
    return str(name), tuple(str(scope) for scope in scopes or ())


def _function_arns(template: Template) -> Any:
    """A lookup that resolves `Fn::GetAtt Function.Arn` to the ARN the function would have."""

    def lookup(logical_id: str, attribute: str | None) -> str:
        function_id = template.invoked_function(logical_id)
        if function_id != logical_id and attribute is None:
            alias = template.resources[logical_id]["Properties"].get("Name", "")
            return f"arn:aws:lambda:{template.region}:{ACCOUNT_ID}:function:{function_id}:{alias}"
        resource_type = template.resources[logical_id]["Type"]
        if resource_type == "AWS::Lambda::Function":
            return f"arn:aws:lambda:{template.region}:{ACCOUNT_ID}:function:{logical_id}"
        return f"{logical_id}.{attribute}" if attribute else logical_id

    return lookup


# --- Request -> payload 2.0 event --------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """A request as it reached the API: raw target, headers in order, body bytes."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    source_ip: str = "127.0.0.1"
    protocol: str = "HTTP/1.1"
    port: int = 3000

    @property
    def raw_path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def raw_query_string(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name]
        return ",".join(values) if values else None


def new_request_id() -> str:
    """An id shaped like API Gateway's (`JKJaXmPLvHcESHA=`)."""
    return base64.b64encode(os.urandom(11)).decode("ascii")


def _trace_id(now: float) -> str:
    return f"Root=1-{int(now):08x}-{os.urandom(12).hex()}"


def is_text(content_type: str | None) -> bool:
    """Whether API Gateway would pass a body of this type as text (else it base64-encodes it)."""
    if not content_type:
        return False
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    charset = re.search(r"charset\s*=\s*\"?([\w.:-]+)", parameters, re.IGNORECASE)
    if charset and charset[1].lower().replace("_", "-") not in ("utf-8", "utf8", "us-ascii", "ascii"):
        return False
    return (
        media_type.startswith("text/")
        or media_type in _TEXT_MEDIA_TYPES
        or media_type.endswith(("+json", "+xml"))
    )


def build_event(
    api: HttpApi,
    route: Route,
    path_parameters: Mapping[str, str],
    request: HttpRequest,
    *,
    request_id: str | None = None,
    now: float | None = None,
    authorizer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway sends for `request` on `route`; `authorizer`:
    what the route's authorizer passes on (`{"jwt": {"claims": ..., "scopes": ...}}`)."""
    now = time.time() if now is None else now
    request_id = request_id or new_request_id()

    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        key = name.lower()
        if key == "cookie":  # payload 2.0 moves cookies out of the headers
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
        elif key not in _HOP_BY_HOP:
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    if request.header("transfer-encoding") is not None:
        headers["content-length"] = str(len(request.body))
    forwarded = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{forwarded}, {request.source_ip}" if forwarded else request.source_ip
    headers["x-forwarded-port"] = str(request.port)
    headers["x-forwarded-proto"] = "http"
    headers.setdefault("x-amzn-trace-id", _trace_id(now))

    domain_name = (headers.get("host") or "localhost").rsplit(":", 1)[0]
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query_string,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers

    query: dict[str, str] = {}
    for name, value in parse_qsl(request.raw_query_string, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)

    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": api.api_id,
        **({"authorizer": dict(authorizer)} if authorizer is not None else {}),
        "domainName": domain_name,
        "domainPrefix": domain_name.split(".", 1)[0],
        "http": {
            "method": request.method,
            "path": request.raw_path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route.route_key,
        "stage": api.stage,
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if request.body:
        if is_text(headers.get("content-type")):
            try:
                event["body"] = request.body.decode("utf-8")
                event["isBase64Encoded"] = False
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(request.body).decode("ascii")
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(request.body).decode("ascii")
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


# --- Lambda proxy response -> HTTP response ----------------------------------------------------


class InvalidProxyResponse(ValueError):
    """The function answered something API Gateway cannot turn into an HTTP response."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def api_error(
    status: HTTPStatus, message: str | None = None, *, retry_after: int | None = None
) -> HttpResponse:
    """An answer API Gateway gives itself: `{"message": "Not Found"}` and the like;
    `retry_after`: seconds, in a `Retry-After` header."""
    body = json.dumps({"message": message or status.phrase}, separators=(",", ":")).encode()
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    if retry_after is not None:
        headers += (("Retry-After", str(retry_after)),)
    return HttpResponse(int(status), headers, body)


def from_proxy_response(result: Any) -> HttpResponse:
    """API Gateway's reading of a payload 2.0 Lambda response.

    A dict with `statusCode` is a proxy response; anything else is taken as a JSON body
    with status 200 (the response format 2.0 infers).
    """
    try:  # what the Lambda runtime does to the handler's return value
        result = json.loads(json.dumps(result))
    except (TypeError, ValueError) as error:
        raise InvalidProxyResponse(f"the response is not JSON serializable: {error}") from error
    if not (isinstance(result, dict) and "statusCode" in result):
        body = json.dumps(result).encode()
        return HttpResponse(200, (("Content-Type", "application/json"),), body)

    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int | str) or not _DIGITS.fullmatch(str(status)):
        raise InvalidProxyResponse(f"statusCode {status!r} is not an integer")
    status = int(status)
    if not 100 <= status <= 599:
        raise InvalidProxyResponse(f"statusCode {status} is out of range")

    headers: list[tuple[str, str]] = []
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend(
            (str(name), _header_value(v)) for v in (values if isinstance(values, list) else [values])
        )
    for name, value in (result.get("headers") or {}).items():
        headers = [(n, v) for n, v in headers if n.lower() != str(name).lower()]
        headers.append((str(name), _header_value(value)))
    for name, _ in headers:
        if not _TOKEN.fullmatch(name):
            raise InvalidProxyResponse(f"{name!r} is not a header name")
    headers.extend(("Set-Cookie", _header_value(cookie)) for cookie in result.get("cookies") or [])

    raw_body = result.get("body")
    if raw_body is None:
        payload = b""
    elif result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(str(raw_body), validate=True)
        except (binascii.Error, ValueError) as error:
            raise InvalidProxyResponse("isBase64Encoded is set but the body is not base64") from error
    else:
        text = raw_body if isinstance(raw_body, str) else json.dumps(raw_body)
        payload = text.encode("utf-8", "surrogatepass")
    return HttpResponse(status, tuple(headers), payload)


def _header_value(value: Any) -> str:
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value)
        if isinstance(value, dict | list)
        else str(value)
    )
    if isinstance(value, bool):
        text = str(value).lower()
    if "\r" in text or "\n" in text:
        raise InvalidProxyResponse("a header value holds a line break")
    if _CONTROL.search(text):
        raise InvalidProxyResponse("a header value holds a control character")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError as error:
        raise InvalidProxyResponse("a header value is not ISO-8859-1 text") from error
    return text
