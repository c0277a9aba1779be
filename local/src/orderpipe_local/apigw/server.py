"""The HTTP API played locally: the template's routes, served as API Gateway serves them.

Each request becomes the HTTP API payload format 2.0 event API Gateway sends to a Lambda proxy
integration, the route's function is invoked in-process, and its proxy response is written
back. What API Gateway answers itself is answered here the same way: 404 for a route the
template does not declare, 413 above its 10 MB payload limit, 500 when the function fails or
answers something that is not a valid proxy response.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.errors
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote

from orderpipe_local.runtime.functions import Invocable
from orderpipe_local.stack.template import ACCOUNT_ID, Resolver, Template, TemplateError

PAYLOAD_LIMIT_BYTES = 10 * 1024 * 1024  # API Gateway's request payload quota
IDLE_TIMEOUT_SECONDS = 30
_DIGITS = re.compile(r"[0-9]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# What the header parser reports when the header block does not end where it should.
_FRAMING_DEFECTS = (
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
)
DEFAULT_ROUTE = "$default"
DEFAULT_STAGE = "$default"

log = logging.getLogger(__name__)

_INTEGRATION = "x-amazon-apigateway-integration"
_ANY_METHOD = "x-amazon-apigateway-any-method"
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})
_FUNCTION_ARN = re.compile(r":function:(?P<name>[^/:]+)")
# Hop-by-hop headers belong to the client's connection to API Gateway, not to the event.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
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
            routes.append(
                Route(
                    method=method,
                    path=DEFAULT_ROUTE if path in ("/$default", DEFAULT_ROUTE) else path,
                    function_id=function["name"],
                    payload_format_version=str(integration.get("payloadFormatVersion", "2.0")),
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
    digest = hashlib.sha256(f"{template.stack_name}/{logical_id}".encode()).hexdigest()
    return HttpApi(logical_id=logical_id, api_id=digest[:10], stage=stage, routes=tuple(routes))


def _function_arns(template: Template) -> Any:
    """A lookup that resolves `Fn::GetAtt Function.Arn` to the ARN the function would have."""

    def lookup(logical_id: str, attribute: str | None) -> str:
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
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway sends for `request` on `route`."""
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


def api_error(status: HTTPStatus, message: str | None = None) -> HttpResponse:
    """An answer API Gateway gives itself: `{"message": "Not Found"}` and the like."""
    body = json.dumps({"message": message or status.phrase}, separators=(",", ":")).encode()
    return HttpResponse(int(status), (("Content-Type", "application/json"),), body)


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
    return text


# --- The server --------------------------------------------------------------------------------


@dataclass
class ApiStats:
    """Counters for the status line: requests answered, by outcome."""

    requests: int = 0
    accepted: int = 0  # 202: an order was taken
    client_errors: int = 0
    server_errors: int = 0
    in_flight: int = 0


class LocalHttpApi:
    """A threading HTTP/1.1 server (keep-alive) that plays `api` with the given functions.

    The port is bound at construction (so a taken port shows at once); requests are served
    from `start()`, which may also be given the functions.
    """

    def __init__(
        self,
        api: HttpApi,
        functions: Mapping[str, Invocable] | None = None,
        host: str = "127.0.0.1",
        port: int = 3000,
    ) -> None:
        self.api = api
        self.functions = dict(functions or {})
        self._server = _Server((host, port), _RequestHandler, self)
        _close_in_forked_children(self._server.socket)
        self._thread: threading.Thread | None = None
        self._stats = ApiStats()
        self._lock = threading.Condition()
        self._closing = False
        self._connections: dict[socket.socket, bool] = {}  # socket -> busy with a request

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        bound = str(self._server.server_address[0])
        host = "127.0.0.1" if bound in ("0.0.0.0", "") else bound
        prefix = "" if self.api.stage == DEFAULT_STAGE else f"/{self.api.stage}"
        return f"http://{host}:{self.port}{prefix}"

    def start(self, functions: Mapping[str, Invocable] | None = None) -> None:
        if functions is not None:
            self.functions = dict(functions)
        missing = {route.function_id for route in self.api.routes} - set(self.functions)
        if missing:
            raise TemplateError(f"routes point at functions not loaded: {', '.join(sorted(missing))}")
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="http-api", daemon=True
        )
        self._thread.start()

    def stats(self) -> ApiStats:
        with self._lock:
            return ApiStats(**vars(self._stats))

    def close(self, timeout: float = 30.0) -> bool:
        """Stop accepting: close the listening socket, answer 503 to any new request on an open
        connection, close idle connections, and wait for requests in flight to be answered.
        True if none is left in flight."""
        with self._lock:
            self._closing = True
            idle = [connection for connection, busy in self._connections.items() if not busy]
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        for connection in idle:  # wakes the thread blocked reading the next request
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RD)
        with self._lock:
            return self._lock.wait_for(lambda: self._stats.in_flight == 0, timeout)

    # Called by the request handler threads.

    def _register(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections[connection] = False

    def _unregister(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.pop(connection, None)

    def _begin(self, connection: socket.socket) -> bool:
        with self._lock:
            if self._closing:
                return False
            self._connections[connection] = True
            self._stats.in_flight += 1
            return True

    def _count(self, status: int) -> None:
        with self._lock:
            self._stats.requests += 1
            if status == HTTPStatus.ACCEPTED:
                self._stats.accepted += 1
            elif 400 <= status < 500:
                self._stats.client_errors += 1
            elif status >= 500:
                self._stats.server_errors += 1

    def _end(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections[connection] = False
            self._stats.in_flight -= 1
            if self._closing:  # idle now: wake its thread so it sees the connection end
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RD)
            self._lock.notify_all()

    @property
    def closing(self) -> bool:
        with self._lock:
            return self._closing

    def respond(self, request: HttpRequest) -> HttpResponse:
        """What API Gateway answers to `request`: route it, invoke the function, map the result."""
        path = request.raw_path
        if self.api.stage != DEFAULT_STAGE:
            prefix = f"/{self.api.stage}"
            if path != prefix and not path.startswith(prefix + "/"):
                return api_error(HTTPStatus.NOT_FOUND)
            path = path[len(prefix) :] or "/"
        found = self.api.find_route(request.method, path)
        if found is None:
            return api_error(HTTPStatus.NOT_FOUND)
        route, parameters = found
        request_id = new_request_id()
        event = build_event(self.api, route, parameters, request, request_id=request_id)
        function = self.functions[route.function_id]
        try:
            result = function.invoke(event)
            response = from_proxy_response(result)
        except InvalidProxyResponse as error:
            log.error(
                "%s answered %s with an invalid response: %s", route.function_id, route.route_key, error
            )
            response = api_error(HTTPStatus.INTERNAL_SERVER_ERROR)
        except Exception:
            log.exception("%s raised on %s (request %s)", route.function_id, route.route_key, request_id)
            response = api_error(HTTPStatus.INTERNAL_SERVER_ERROR)
        return HttpResponse(
            response.status, (*response.headers, ("apigw-requestid", request_id)), response.body
        )


def _close_in_forked_children(listening: socket.socket) -> None:
    """Worker processes forked after the port is bound must not hold the listening socket: once
    the API closed it, the kernel would go on queueing connections that nobody answers."""
    held = weakref.ref(listening)

    def close() -> None:
        if (inherited := held()) is not None:
            inherited.close()

    os.register_at_fork(after_in_child=close)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a load generator opens many connections at once

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], api: LocalHttpApi
    ) -> None:
        self.api = api
        super().__init__(address, handler)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    server: _Server
    # A client silent this long (idle on keep-alive, or stalled mid-request) loses its
    # connection, so that it holds no thread for ever.
    timeout = IDLE_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        # The response goes out in one write; without this the client's delayed ACK can hold
        # it back for 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.api._register(self.connection)

    def finish(self) -> None:
        self.server.api._unregister(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The errors of the HTTP layer itself (a request line or headers too long, a method
        it does not know) in API Gateway's JSON, as every other error."""
        self.close_connection = True
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self.log_error("%d %s", int(status), message or status.phrase)
        self.server.api._count(int(status))
        self._send(api_error(status))

    def _handle(self) -> None:
        """Read the request, then hand it to the API - unless it stopped accepting meanwhile: a
        request counts as in flight (and is waited for on stopping) only once it is all read."""
        api = self.server.api
        body = self._read_request_body()
        if isinstance(body, HttpResponse) or not api._begin(self.connection):
            self.close_connection = True
            if api.closing:
                self._send(api_error(HTTPStatus.SERVICE_UNAVAILABLE))
            else:
                assert isinstance(body, HttpResponse)
                api._count(body.status)
                self._send(body)
            return
        try:
            response = self._respond(api, body)
            if api.closing:
                self.close_connection = True
            api._count(response.status)
            self._send(response)
        finally:
            api._end(self.connection)

    def _read_request_body(self) -> bytes | HttpResponse:
        if any(isinstance(defect, _FRAMING_DEFECTS) for defect in self.headers.defects):
            # A header line without a colon, say: where the body starts is unknown.
            return api_error(HTTPStatus.BAD_REQUEST)
        body = self._read_body()
        if body is None:
            return api_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return body

    def _respond(self, api: LocalHttpApi, body: bytes) -> HttpResponse:
        request = HttpRequest(
            method=self.command,
            target=self.path,
            headers=tuple(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
            protocol=self.request_version,
            port=api.port,
        )
        return api.respond(request)

    def _read_body(self) -> bytes | HttpResponse | None:
        """The body; None if it is over the payload limit; an error response if it is malformed."""
        # Where the body ends must be beyond doubt (RFC 9112, 6.3): one length, or chunked alone.
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        codings = ",".join(self.headers.get_all("Transfer-Encoding") or [])
        if codings:
            if lengths or codings.rsplit(",", 1)[-1].strip().lower() != "chunked":
                return api_error(HTTPStatus.BAD_REQUEST)
            return self._read_chunked()
        if not lengths:
            return b""
        if len(lengths) > 1 or not _DIGITS.fullmatch(length_header := lengths.pop()):
            return api_error(HTTPStatus.BAD_REQUEST)
        length = int(length_header)
        if length > PAYLOAD_LIMIT_BYTES:
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            return api_error(HTTPStatus.BAD_REQUEST)
        return body

    def _read_chunked(self) -> bytes | HttpResponse | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            size_field = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_field):
                return api_error(HTTPStatus.BAD_REQUEST)
            chunk_size = int(size_field, 16)
            if chunk_size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            size += chunk_size
            if size > PAYLOAD_LIMIT_BYTES:
                return None
            chunk = self.rfile.read(chunk_size)
            if len(chunk) < chunk_size:
                return api_error(HTTPStatus.BAD_REQUEST)
            chunks.append(chunk)
            self.rfile.readline(1024)

    def _send(self, response: HttpResponse) -> None:
        phrase = _reason(response.status)
        lines = [f"{self.protocol_version} {response.status} {phrase}"]
        lines.extend(
            f"{name}: {value}" for name, value in response.headers if name.lower() != "content-length"
        )
        lines.append(f"Date: {formatdate(usegmt=True)}")
        lines.append(f"Content-Length: {len(response.body)}")
        if self.close_connection:
            lines.append("Connection: close")
        else:
            lines.extend(("Connection: keep-alive", f"Keep-Alive: timeout={IDLE_TIMEOUT_SECONDS}"))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        payload = head if self.command == "HEAD" else head + response.body
        try:
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the client went away

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
