"""The HTTP API played locally: uvicorn serves HTTP/1.1, this module plays API Gateway on it.

uvicorn (on h11) does the framing, chunked bodies, keep-alive and graceful shutdown; the ASGI
app below turns each request into the payload 2.0 event of `apigw.events`, invokes the route's
function in a thread pool sized to its execution environments, and writes its proxy response
back. What API Gateway answers itself is answered here the same way, in JSON: 404 for a route
(or method) the template does not declare, 413 above the 10 MB payload quota, 431 above the
10,240-byte request line and headers quota, 400 without a Host, 505 for an HTTP version other
than 1.0 and 1.1, 500 when the function fails or answers an invalid proxy response, and 503
with `Retry-After` while the function is unavailable (none of its execution environments can be
started), so a client retries instead of taking the outage for its own fault.

Its cost (`bench/api_front.py`, a function that answers at once, 150 requests/s): 1.6-2.0 ms
of CPU a request against 0.8-1.0 ms for the hand-written front it replaced, measured in turn on
2026-12-02 (httptools instead of h11 saved 0.1-0.2 ms: not worth a compiled dependency). That
is about 7% of an order's CPU in the whole pipeline (12-13 ms), under the 20% that would
justify keeping our own HTTP code.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from orderpipe_local.apigw.auth import Forbidden, JwtAuthorizer, Unauthorized
from orderpipe_local.apigw.events import (
    DEFAULT_STAGE,
    HttpApi,
    HttpRequest,
    HttpResponse,
    InvalidProxyResponse,
    api_error,
    build_event,
    from_proxy_response,
    new_request_id,
)
from orderpipe_local.runtime.functions import RETRY_START_SECONDS, FunctionUnavailable, Invocable
from orderpipe_local.stack.template import TemplateError

PAYLOAD_LIMIT_BYTES = 10 * 1024 * 1024  # API Gateway's request payload quota
HEAD_LIMIT_BYTES = 10_240  # API Gateway's quota for the request line and headers together
IDLE_TIMEOUT_SECONDS = 30
# h11 refuses (400) a head it cannot complete within this; below it, the app applies the quota.
_PARSER_HEAD_LIMIT = 1024 * 1024
_SUPPORTED_VERSIONS = frozenset({"1.0", "1.1"})
# While a function is unavailable, its environments are started again this often.
UNAVAILABLE_RETRY_AFTER_SECONDS = math.ceil(RETRY_START_SECONDS)
# Framing headers of the function's response: uvicorn frames the body itself.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})

log = logging.getLogger(__name__)
# uvicorn logs each malformed request as a warning; the console is for the pipeline's own lines.
logging.getLogger("uvicorn.error").setLevel(logging.ERROR)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ApiStats:
    """Counters for the status line: requests answered, by outcome."""

    requests: int = 0
    accepted: int = 0  # 202: an order was taken
    client_errors: int = 0
    server_errors: int = 0
    in_flight: int = 0


class _JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, its own 400 (a request h11 cannot parse) in API Gateway's JSON."""

    def send_400_response(self, msg: str) -> None:
        log.debug("refused a request h11 could not parse: %s", msg)
        if isinstance(self.app, _ApiGatewayApp):
            self.app.owner._count(HTTPStatus.BAD_REQUEST)
        response = api_error(HTTPStatus.BAD_REQUEST)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(response.body)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(
            self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
        )
        self.transport.write(self.conn.send(h11.Data(data=response.body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


class LocalHttpApi:
    """uvicorn, in a thread with its own event loop, playing `api` with the given functions.

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
        self.authorizers = {name: JwtAuthorizer(config) for name, config in api.authorizers.items()}
        # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
        # sockets that say they are TCP, and uvicorn writes a response's head and body apart; with
        # Nagle on, the body waited for the client's delayed ACK (POST p50 1.5 -> 42 ms).
        self._socket = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(1024)  # a load generator opens many connections at once
        except OSError:
            self._socket.close()
            raise
        _close_in_forked_children(self._socket)
        self._address = self._socket.getsockname()
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stats = ApiStats()
        self._lock = threading.Condition()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing_event: asyncio.Event | None = None

    @property
    def port(self) -> int:
        port: int = self._address[1]
        return port

    @property
    def url(self) -> str:
        bound = str(self._address[0])
        host = "127.0.0.1" if bound in ("0.0.0.0", "") else bound
        prefix = "" if self.api.stage == DEFAULT_STAGE else f"/{self.api.stage}"
        return f"http://{host}:{self.port}{prefix}"

    def start(self, functions: Mapping[str, Invocable] | None = None) -> None:
        if functions is not None:
            self.functions = dict(functions)
        routed = {route.function_id for route in self.api.routes}
        missing = routed - set(self.functions)
        if missing:
            raise TemplateError(f"routes point at functions not loaded: {', '.join(sorted(missing))}")
        # As many invocations at once as the routed functions have execution environments.
        threads = max(1, sum(self.functions[function_id].concurrency for function_id in routed))
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="http-api-invoke")
        config = uvicorn.Config(
            _ApiGatewayApp(self),
            http=_JsonErrorsH11Protocol,
            loop="asyncio",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,  # X-Forwarded-For is the client's, as API Gateway keeps it
            server_header=False,
            timeout_keep_alive=IDLE_TIMEOUT_SECONDS,
            h11_max_incomplete_event_size=_PARSER_HEAD_LIMIT,
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="http-api", daemon=True)
        self._thread.start()
        started.wait(10)

    def _serve(self, started: threading.Event) -> None:
        assert self._server is not None

        async def serve() -> None:
            assert self._server is not None
            self._loop = asyncio.get_running_loop()
            self._closing_event = asyncio.Event()
            started.set()
            # In a thread, uvicorn installs no signal handlers: the pipeline owns SIGINT/SIGTERM.
            await self._server.serve(sockets=[self._socket])

        try:
            asyncio.run(serve())
        finally:
            started.set()

    def stats(self) -> ApiStats:
        with self._lock:
            return ApiStats(**vars(self._stats))

    def close(self, timeout: float = 30.0) -> bool:
        """Stop accepting (the listening socket closes), answer 503 to a request still being
        received, close idle connections, and give requests in flight `timeout` seconds to be
        answered (uvicorn's graceful shutdown). True if none is left in flight."""
        with self._lock:
            first = not self._closing
            self._closing = True
        server, thread = self._server, self._thread
        if first and server is not None and thread is not None:
            server.config.timeout_graceful_shutdown = max(0, int(timeout + 0.999))
            if self._loop is not None and self._closing_event is not None:
                self._loop.call_soon_threadsafe(self._closing_event.set)
            server.should_exit = True
            thread.join(timeout + 2)
        if thread is None:
            self._socket.close()
        with self._lock:
            drained = self._lock.wait_for(lambda: self._stats.in_flight == 0, timeout)
        if self._executor is not None and (drained or not thread or not thread.is_alive()):
            self._executor.shutdown(wait=False, cancel_futures=True)
        return drained

    @property
    def closing(self) -> bool:
        with self._lock:
            return self._closing

    def _begin(self) -> bool:
        with self._lock:
            if self._closing:
                return False
            self._stats.in_flight += 1
            return True

    def _end(self) -> None:
        with self._lock:
            self._stats.in_flight -= 1
            self._lock.notify_all()

    def _count(self, status: int) -> None:
        with self._lock:
            self._stats.requests += 1
            if status == HTTPStatus.ACCEPTED:
                self._stats.accepted += 1
            elif 400 <= status < 500:
                self._stats.client_errors += 1
            elif status >= 500:
                self._stats.server_errors += 1

    def respond(self, request: HttpRequest) -> HttpResponse:
        """What API Gateway answers to `request`: a CORS preflight itself, else route it, check
        its token, invoke the function, map the result. Blocking: the ASGI app calls it in the
        thread pool."""
        cors = self.api.cors
        if cors is None:
            return self._respond(request)
        if (preflight := cors.preflight(request)) is not None:
            return preflight
        return cors.decorate(request, self._respond(request))

    def _respond(self, request: HttpRequest) -> HttpResponse:
        found = self.api.route_request(request.method, request.raw_path)
        if found is None:
            return api_error(HTTPStatus.NOT_FOUND)
        route, parameters = found
        request_id = new_request_id()
        authorizer = None
        if route.authorizer is not None:
            checks = self.authorizers[route.authorizer]
            try:
                authorizer = checks.authorize(
                    request.header(checks.config.header), route.authorization_scopes
                )
            except Unauthorized as refusal:
                log.debug("%s: 401 (request %s): %s", route.route_key, request_id, refusal)
                return _with_request_id(api_error(HTTPStatus.UNAUTHORIZED), request_id)
            except Forbidden as refusal:
                log.debug("%s: 403 (request %s): %s", route.route_key, request_id, refusal)
                return _with_request_id(api_error(HTTPStatus.FORBIDDEN), request_id)
        event = build_event(
            self.api, route, parameters, request, request_id=request_id, authorizer=authorizer
        )
        function = self.functions[route.function_id]
        try:
            result = function.invoke(event)
            response = from_proxy_response(result)
        except InvalidProxyResponse as error:
            log.error(
                "%s answered %s with an invalid response: %s", route.function_id, route.route_key, error
            )
            response = api_error(HTTPStatus.INTERNAL_SERVER_ERROR)
        except FunctionUnavailable as error:  # the function's pool logged the outage once
            log.debug(
                "%s not invoked on %s (request %s): %s", route.function_id, route.route_key, request_id, error
            )
            response = api_error(HTTPStatus.SERVICE_UNAVAILABLE, retry_after=UNAVAILABLE_RETRY_AFTER_SECONDS)
        except Exception:
            log.exception("%s raised on %s (request %s)", route.function_id, route.route_key, request_id)
            response = api_error(HTTPStatus.INTERNAL_SERVER_ERROR)
        return _with_request_id(response, request_id)


def _with_request_id(response: HttpResponse, request_id: str) -> HttpResponse:
    return HttpResponse(response.status, (*response.headers, ("apigw-requestid", request_id)), response.body)


class _Refused(Exception):
    """The request is answered before its function is invoked (and maybe before its body is read)."""

    def __init__(self, status: HTTPStatus, *, close: bool = True) -> None:
        super().__init__(status.phrase)
        self.response = api_error(status)
        self.close = close


class _Disconnected(Exception):
    """The client went away: there is nobody to answer."""


class _ApiGatewayApp:
    """The ASGI app: API Gateway's checks on a request, then its function through `owner.respond`."""

    def __init__(self, owner: LocalHttpApi) -> None:
        self.owner = owner

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan, no websockets
            return
        owner = self.owner
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        expects_continue = any(
            name == "expect" and value.lower() == "100-continue" for name, value in headers
        )
        try:
            # Nothing is awaited before these checks: the answer goes out before any body is read
            # (and, with `Expect: 100-continue`, before `100 Continue`).
            self._check_head(scope, headers)
            body = await self._read_body(receive)
        except _Refused as refused:
            # An early answer to a client that waits for `100 Continue` ends the connection: what
            # it sends next would otherwise be read as its body. Without that, the connection stays
            # open and uvicorn reads and drops the rest of the body, so that a client sending it
            # all before reading still sees the answer.
            close = refused.close or expects_continue
            owner._count(refused.response.status)
            await _send(send, refused.response, close=close)
            return
        except _Disconnected:
            return
        if not owner._begin():
            await _send(send, api_error(HTTPStatus.SERVICE_UNAVAILABLE), close=True)
            return
        try:
            request = HttpRequest(
                method=scope["method"],
                target=_target(scope),
                headers=tuple(headers),
                body=body,
                source_ip=(scope.get("client") or ("127.0.0.1", 0))[0],
                protocol=f"HTTP/{scope['http_version']}",
                port=owner.port,
            )
            assert owner._executor is not None
            loop = asyncio.get_running_loop()
            try:
                response = await loop.run_in_executor(owner._executor, owner.respond, request)
            except asyncio.CancelledError:  # the drain timeout ran out before the function answered
                response = api_error(HTTPStatus.SERVICE_UNAVAILABLE)
            owner._count(response.status)
            await _send(send, response, close=owner.closing)
        finally:
            owner._end()

    def _check_head(self, scope: dict[str, Any], headers: list[tuple[str, str]]) -> None:
        if self.owner.closing:
            raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE)
        if scope["http_version"] not in _SUPPORTED_VERSIONS:
            raise _Refused(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
        names = {name for name, _ in headers}
        if "host" not in names:  # h11 refuses it in HTTP/1.1 already; HTTP/1.0 too needs one here
            raise _Refused(HTTPStatus.BAD_REQUEST)
        request_line = len(scope["method"]) + 1 + len(_target(scope)) + len(" HTTP/1.1\r\n")
        head = request_line + sum(len(name) + len(value) + 4 for name, value in headers) + 2
        if head > HEAD_LIMIT_BYTES:
            raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        if "content-length" in names and "transfer-encoding" in names:
            # h11 reads such a body as chunked; a proxy in front might not (request smuggling).
            raise _Refused(HTTPStatus.BAD_REQUEST)
        lengths = [value for name, value in headers if name == "content-length"]
        if lengths and int(lengths[0]) > PAYLOAD_LIMIT_BYTES:  # h11 checked it is one integer
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, close=False)

    async def _read_body(self, receive: Receive) -> bytes:
        """The body; a silent client gets 408, one still sending when the API closes 503."""
        owner = self.owner
        closing = owner._closing_event
        assert closing is not None
        chunks: list[bytes] = []
        size = 0
        while True:
            receiving = asyncio.ensure_future(receive())
            closed = asyncio.ensure_future(closing.wait())
            done, _ = await asyncio.wait(
                {receiving, closed}, timeout=IDLE_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            closed.cancel()
            if receiving not in done:
                receiving.cancel()
                raise _Refused(
                    HTTPStatus.SERVICE_UNAVAILABLE if closed in done else HTTPStatus.REQUEST_TIMEOUT
                )
            message = receiving.result()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > PAYLOAD_LIMIT_BYTES:  # a chunked body grown over the quota
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, close=False)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _target(scope: dict[str, Any]) -> str:
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


async def _send(send: Send, response: HttpResponse, *, close: bool) -> None:
    headers = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers
        if name.lower() not in _FRAMING
    ]
    headers.append((b"content-length", str(len(response.body)).encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def _close_in_forked_children(listening: socket.socket) -> None:
    """Worker processes forked after the port is bound must not hold the listening socket: once
    the API closed it, the kernel would go on queueing connections that nobody answers."""
    held = weakref.ref(listening)

    def close() -> None:
        if (inherited := held()) is not None:
            inherited.close()

    os.register_at_fork(after_in_child=close)
