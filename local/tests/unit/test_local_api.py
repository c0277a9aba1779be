"""The local HTTP API: routes from the template, requests as payload 2.0 events, API Gateway's own answers."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import multiprocessing
import socket
import time
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

import pytest

from orderpipe_local.apigw.events import (
    HttpApi,
    HttpRequest,
    InvalidProxyResponse,
    Route,
    build_event,
    from_proxy_response,
    http_api_from_template,
)
from orderpipe_local.apigw.server import HEAD_LIMIT_BYTES, PAYLOAD_LIMIT_BYTES, LocalHttpApi
from orderpipe_local.runtime.functions import FunctionUnavailable, LocalFunction
from orderpipe_local.stack.template import TemplateError, load_template
from orderpipe_local.testing import ROOT, load_event

ORDER_BODY = load_event("ingest-post-order.json")["body"]
API = HttpApi(
    logical_id="OrdersApi",
    api_id="abcdef1234",
    stage="$default",
    routes=(
        Route("POST", "/orders", "IngestFunction"),
        Route("GET", "/orders/{orderId}", "IngestFunction"),
    ),
)


def post(body: bytes = ORDER_BODY.encode(), headers: dict[str, str] | None = None) -> HttpRequest:
    fields = {"Host": "127.0.0.1:3000", "Content-Type": "application/json", "User-Agent": "curl/8.5.0"}
    fields |= headers or {}
    return HttpRequest("POST", "/orders", tuple(fields.items()), body, source_ip="127.0.0.1", port=3000)


# --- Routes ------------------------------------------------------------------------------------


def test_routes_are_those_the_template_declares() -> None:
    # Given the SAM-transformed template
    template = load_template(ROOT / "template.yaml")

    # When its HTTP API is read
    api = http_api_from_template(template)

    # Then every route goes to the function its event names, with payload format 2.0
    assert api.logical_id == "OrdersApi"
    assert api.stage == "$default"
    assert {(route.route_key, route.function_id) for route in api.routes} == {
        ("POST /orders", "IngestFunction"),
        ("GET /orders/{orderId}", "IngestFunction"),
    }
    assert {route.payload_format_version for route in api.routes} == {"2.0"}


@pytest.mark.parametrize(
    ("method", "path", "route_key", "parameters"),
    [
        ("POST", "/orders", "POST /orders", {}),
        ("GET", "/orders/7c9e6679", "GET /orders/{orderId}", {"orderId": "7c9e6679"}),
        ("GET", "/orders/a%20b", "GET /orders/{orderId}", {"orderId": "a b"}),
    ],
)
def test_a_request_finds_its_route_and_path_parameters(
    method: str, path: str, route_key: str, parameters: dict[str, str]
) -> None:
    found = API.find_route(method, path)

    assert found is not None
    route, values = found
    assert route.route_key == route_key
    assert values == parameters


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/orders"),
        ("DELETE", "/orders/1"),
        ("GET", "/orders/1/items"),
        ("POST", "/"),
        ("GET", "/orders/"),
    ],
)
def test_a_request_no_route_declares_finds_none(method: str, path: str) -> None:
    assert API.find_route(method, path) is None


def test_the_most_specific_route_wins() -> None:
    # Given routes that overlap, as API Gateway allows
    api = HttpApi(
        "Api",
        "id",
        "$default",
        (
            Route("ANY", "$default", "Fallback"),
            Route("ANY", "/{proxy+}", "Greedy"),
            Route("GET", "/orders/{orderId}", "ById"),
            Route("ANY", "/orders/latest", "AnyLatest"),
            Route("GET", "/orders/latest", "GetLatest"),
        ),
    )

    def target(method: str, path: str) -> str:
        found = api.find_route(method, path)
        assert found is not None
        return found[0].function_id

    # Then literal beats parameter beats greedy beats $default, and a method beats ANY
    assert target("GET", "/orders/latest") == "GetLatest"
    assert target("PUT", "/orders/latest") == "AnyLatest"
    assert target("GET", "/orders/42") == "ById"
    assert target("GET", "/orders/42/items") == "Greedy"
    assert target("GET", "/") == "Fallback"


# --- Request -> payload 2.0 event --------------------------------------------------------------


def test_a_post_becomes_the_event_api_gateway_sends() -> None:
    # Given a JSON POST
    request = post(headers={"Idempotency-Key": "k-1"})

    # When it is translated for POST /orders
    event = build_event(API, API.routes[0], {}, request, request_id="Tq3mXgHNoAMEbPw=", now=1763781615.123)

    # Then it has the fields and shape of the fixture API Gateway would send
    fixture = load_event("ingest-post-order.json")
    assert set(event) == set(fixture)
    assert set(event["requestContext"]) == set(fixture["requestContext"])
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /orders"
    assert event["rawPath"] == "/orders"
    assert event["rawQueryString"] == ""
    assert event["body"] == ORDER_BODY
    assert event["isBase64Encoded"] is False
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["idempotency-key"] == "k-1"
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert event["headers"]["x-amzn-trace-id"].startswith("Root=1-")
    context = event["requestContext"]
    assert context["http"] == {
        "method": "POST",
        "path": "/orders",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "curl/8.5.0",
    }
    assert context["routeKey"] == "POST /orders"
    assert context["stage"] == "$default"
    assert context["requestId"] == "Tq3mXgHNoAMEbPw="
    assert context["time"] == "22/Nov/2025:03:20:15 +0000"
    assert context["timeEpoch"] == 1763781615123
    assert context["apiId"] == "abcdef1234"
    assert context["accountId"] == "123456789012"


def test_a_get_has_path_parameters_and_no_body() -> None:
    request = HttpRequest("GET", "/orders/7c9e6679", (("Host", "localhost:3000"),))

    event = build_event(API, API.routes[1], {"orderId": "7c9e6679"}, request)

    assert event["routeKey"] == "GET /orders/{orderId}"
    assert event["pathParameters"] == {"orderId": "7c9e6679"}
    assert "body" not in event
    assert event["isBase64Encoded"] is False
    assert "queryStringParameters" not in event
    assert "cookies" not in event


def test_headers_are_lower_cased_and_repeated_ones_joined_with_commas() -> None:
    request = HttpRequest(
        "GET",
        "/orders/1?a=1&a=2&b=x%20y&c=",
        (
            ("Accept", "text/plain"),
            ("ACCEPT", "application/json"),
            ("Cookie", "s=1; theme=dark"),
            ("Cookie", "x=2"),
        ),
    )

    event = build_event(API, API.routes[1], {"orderId": "1"}, request)

    assert event["headers"]["accept"] == "text/plain,application/json"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["s=1", "theme=dark", "x=2"]
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y&c="
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y", "c": ""}


@pytest.mark.parametrize(
    ("content_type", "body", "encoded"),
    [
        ("application/json", b'{"a": 1}', False),
        ("application/json; charset=utf-8", '{"name": "Zoë"}'.encode(), False),
        ("text/plain", b"hello", False),
        ("application/octet-stream", b"\x00\x01", True),
        ("image/png", b"\x89PNG", True),
        ("application/json", b"\xff\xfe not utf-8", True),
        ("application/json; charset=latin-1", b"caf\xe9", True),
    ],
)
def test_a_body_that_is_not_text_is_base64_encoded(content_type: str, body: bytes, encoded: bool) -> None:
    event = build_event(API, API.routes[0], {}, post(body, {"Content-Type": content_type}))

    assert event["isBase64Encoded"] is encoded
    decoded = base64.b64decode(event["body"]) if encoded else event["body"].encode()
    assert decoded == body


# --- Lambda proxy response -> HTTP response ------------------------------------------------------


def test_a_proxy_response_becomes_the_http_response() -> None:
    response = from_proxy_response(
        {
            "statusCode": 202,
            "headers": {"Content-Type": "application/json", "Location": "/orders/1"},
            "cookies": ["a=1; Path=/"],
            "body": '{"orderId": "1"}',
            "isBase64Encoded": False,
        }
    )

    assert response.status == 202
    assert ("Location", "/orders/1") in response.headers
    assert ("Set-Cookie", "a=1; Path=/") in response.headers
    assert response.body == b'{"orderId": "1"}'


def test_a_base64_response_body_is_decoded() -> None:
    response = from_proxy_response(
        {"statusCode": 200, "body": base64.b64encode(b"\x00\x01").decode(), "isBase64Encoded": True}
    )

    assert response.body == b"\x00\x01"


def test_a_response_without_status_code_is_a_json_200() -> None:
    response = from_proxy_response({"hello": "world"})

    assert response.status == 200
    assert ("Content-Type", "application/json") in response.headers
    assert json.loads(response.body) == {"hello": "world"}


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "abc"},
        {"statusCode": 99},
        {"statusCode": 200, "body": object()},
        {"statusCode": 200, "headers": {"x": "a\r\nb"}},
    ],
)
def test_an_invalid_proxy_response_is_refused(result: dict[str, Any]) -> None:
    with pytest.raises(InvalidProxyResponse):
        from_proxy_response(result)


# --- The server --------------------------------------------------------------------------------


def echo_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("body") == "boom":
        raise RuntimeError("the handler failed")
    status = 202 if event["routeKey"] == "POST /orders" else 200
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(event)}


@pytest.fixture
def server() -> Iterator[LocalHttpApi]:
    function = LocalFunction("IngestFunction", echo_handler, timeout_seconds=3, memory_mb=128)
    api = LocalHttpApi(API, {"IngestFunction": function}, port=0)
    api.start()
    yield api
    api.close(timeout=1)


def request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    **headers: str,
) -> tuple[int, dict[str, Any]]:
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_the_server_invokes_the_function_over_one_kept_alive_connection(server: LocalHttpApi) -> None:
    # Given one HTTP/1.1 connection
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    # When two requests go over it
    posted = request(
        connection, "POST", "/orders", ORDER_BODY.encode(), **{"Content-Type": "application/json"}
    )
    fetched = request(connection, "GET", "/orders/abc?x=1")

    # Then the function got payload 2.0 events and answered both; the 202 is counted
    assert connection.sock is not None  # still open: kept alive
    assert posted[0] == 202
    assert posted[1]["body"] == ORDER_BODY
    assert posted[1]["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert fetched == (200, fetched[1])
    assert fetched[1]["pathParameters"] == {"orderId": "abc"}
    assert fetched[1]["queryStringParameters"] == {"x": "1"}
    assert server.stats().accepted == 1
    assert server.stats().requests == 2
    connection.close()


def test_answers_are_not_held_back_by_nagles_algorithm(server: LocalHttpApi) -> None:
    """uvicorn writes a response's head and body apart: with Nagle on, the body waited for the
    client's delayed ACK, 40 ms a request."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    assert request(connection, "GET", "/orders/abc")[0] == 200

    assert server._server is not None
    accepted = [c.transport.get_extra_info("socket") for c in server._server.server_state.connections]
    assert accepted
    assert all(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for sock in accepted)
    connection.close()


def test_an_unknown_route_is_api_gateways_404(server: LocalHttpApi) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    assert request(connection, "GET", "/nowhere") == (404, {"message": "Not Found"})
    assert request(connection, "DELETE", "/orders/1") == (404, {"message": "Not Found"})


def test_a_handler_exception_is_api_gateways_500(
    server: LocalHttpApi, caplog: pytest.LogCaptureFixture
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    status, body = request(connection, "POST", "/orders", b"boom", **{"Content-Type": "text/plain"})

    assert (status, body) == (500, {"message": "Internal Server Error"})
    assert "IngestFunction raised on POST /orders" in caplog.text


def test_an_unavailable_function_is_a_503_with_retry_after() -> None:
    # Given a function none of whose execution environments can be started
    def unavailable(event: dict[str, Any], context: Any) -> None:
        raise FunctionUnavailable("IngestFunction is unavailable: none of its execution environments is up")

    function = LocalFunction("IngestFunction", unavailable, timeout_seconds=3, memory_mb=128)
    api = LocalHttpApi(API, {"IngestFunction": function}, port=0)
    api.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)

        # When an order is posted
        connection.request("POST", "/orders", body=ORDER_BODY, headers={"Content-Type": "application/json"})
        response = connection.getresponse()

        # Then the API answers as API Gateway does when it cannot reach a function, and says when
        # to come back: the client retries, nothing was accepted
        assert response.status == 503
        assert response.getheader("Retry-After") == "5"
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(response.read()) == {"message": "Service Unavailable"}
        assert (api.stats().accepted, api.stats().server_errors) == (0, 1)
    finally:
        api.close(timeout=1)


def raw_exchange(port: int, request_bytes: bytes) -> tuple[bytes, bytes]:
    """Send bytes as they are, and read one answer: (head, body), the body as long as the answer's
    Content-Length says (uvicorn, as most servers, answers no client that half-closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request_bytes)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := connection.recv(65536)):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        length = (
            0
            if request_bytes.startswith(b"HEAD ")
            else int({k.strip().lower(): v for k, v in fields.items()}.get(b"content-length", b"0"))
        )
        while len(body) < length and (chunk := connection.recv(65536)):
            body += chunk
    return head, body


def assert_refused_and_closed(server: LocalHttpApi, head: bytes, body: bytes, status: HTTPStatus) -> None:
    assert head.startswith(f"HTTP/1.1 {int(status)} ".encode())
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"message": status.phrase}
    assert server.functions["IngestFunction"].invocations == 0


def test_a_body_over_the_payload_limit_is_413_without_invoking(server: LocalHttpApi) -> None:
    # Given a request that announces 10 MB + 1 byte (it need not send them)
    request_bytes = (
        f"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {PAYLOAD_LIMIT_BYTES + 1}\r\n\r\n".encode()
    )

    # When the answer is read
    head, body = raw_exchange(server.port, request_bytes)

    # Then API Gateway's 413 came back at once, and the function never ran
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body) == {"message": "Request Entity Too Large"}
    assert server.functions["IngestFunction"].invocations == 0


def test_a_client_that_sends_all_of_an_oversized_body_before_reading_still_sees_413(
    server: LocalHttpApi,
) -> None:
    # Given a client that writes its whole 10 MB + 1 byte body before reading anything
    size = PAYLOAD_LIMIT_BYTES + 1
    head_bytes = f"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(head_bytes + b" " * size)

        # When it reads the answer
        answer = connection.recv(65536)

    # Then the 413 was not lost (the server read and dropped the body instead of resetting)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert server.functions["IngestFunction"].invocations == 0


def test_expect_100_continue_over_the_limit_is_413_before_100_continue(server: LocalHttpApi) -> None:
    request_bytes = (
        f"POST /orders HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        f"Content-Length: {PAYLOAD_LIMIT_BYTES + 1}\r\n\r\n".encode()
    )

    head, body = raw_exchange(server.port, request_bytes)

    assert b"100 Continue" not in head
    assert_refused_and_closed(server, head, body, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)


def test_expect_100_continue_within_the_limit_is_served(server: LocalHttpApi) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/json\r\n"
            b"Content-Length: 8\r\n\r\n"
        )
        assert connection.recv(65536).startswith(b"HTTP/1.1 100 ")
        connection.sendall(b'{"a": 1}')
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 202 ")


def test_a_chunked_body_is_read_whole(server: LocalHttpApi) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    status, event = request(
        connection,
        "POST",
        "/orders",
        iter([b'{"a":', b" 1}"]),
        **{"Content-Type": "application/json"},
    )

    assert status == 202
    assert event["body"] == '{"a": 1}'
    assert event["headers"]["content-length"] == "8"
    assert "transfer-encoding" not in event["headers"]


def test_closing_stops_accepting_and_closes_idle_connections(server: LocalHttpApi) -> None:
    # Given an idle kept-alive connection
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    assert request(connection, "GET", "/orders/1")[0] == 200

    # When the API closes
    assert server.close(timeout=5) is True

    # Then the connection takes no further request (closed, or answered 503 and closed),
    # and no new connection is accepted
    try:
        status, body = request(connection, "GET", "/orders/1")
    except (ConnectionError, http.client.HTTPException):
        pass
    else:
        assert (status, body) == (503, {"message": "Service Unavailable"})
    assert server.functions["IngestFunction"].invocations == 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


def test_the_port_is_bound_before_the_functions_are_given() -> None:
    # Given an API bound before its functions are loaded
    api = LocalHttpApi(API, None, port=0)
    try:
        # Then its port is taken already, and it will not serve routes without their function
        with pytest.raises(OSError, match="in use"):
            LocalHttpApi(API, None, port=api.port)
        with pytest.raises(TemplateError, match="IngestFunction"):
            api.start({})
    finally:
        api.close(timeout=0)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
            id="two different Content-Lengths",
        ),
        pytest.param(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}", id="signed length"),
        pytest.param(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n{}\r\n0\r\n\r\n",
            id="negative chunk size",
        ),
        pytest.param(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nno colon here\r\nContent-Length: 2\r\n\r\n{}",
            id="header line without a colon",
        ),
        pytest.param(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n{}",
            id="superscript digit length",
        ),
        pytest.param(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n",
            id="both a length and chunked",
        ),
        pytest.param(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n",
            id="chunked not the last coding",
        ),
    ],
)
def test_a_request_whose_body_cannot_be_framed_is_400_and_ends_the_connection(
    server: LocalHttpApi, request_bytes: bytes
) -> None:
    # When a request arrives whose body's end is ambiguous
    head, body = raw_exchange(server.port, request_bytes)

    # Then it is refused in JSON, the connection closed (nothing left over is read as a request),
    # and the function never ran
    assert_refused_and_closed(server, head, body, HTTPStatus.BAD_REQUEST)


def test_a_multipart_body_reaches_the_function_which_judges_its_content_type(server: LocalHttpApi) -> None:
    # Given what `curl -F` sends: a multipart body (the header parser flags its missing boundary)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    form = b'--xyz\r\nContent-Disposition: form-data; name="order"\r\n\r\n{}\r\n--xyz--\r\n'

    # When it is posted
    status, event = request(
        connection, "POST", "/orders", form, **{"Content-Type": "multipart/form-data; boundary=xyz"}
    )

    # Then API Gateway passes it on, as it would: refusing it (415) is the function's business
    assert status == 202
    assert event["headers"]["content-type"] == "multipart/form-data; boundary=xyz"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, id="long target"),
        pytest.param(
            b"GET /orders/1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * HEAD_LIMIT_BYTES + b"\r\n\r\n",
            431,
            id="headers over 10240 bytes",
        ),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, id="TLS hello"),
        pytest.param(b"GET /orders/1 HTTP/1.1\r\n\r\n", 400, id="HTTP/1.1 without Host"),
        pytest.param(b"GET /orders/1 HTTP/1.0\r\n\r\n", 400, id="HTTP/1.0 without Host"),
        pytest.param(b"GET /orders/1 HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="HTTP/2.0 request line"),
        pytest.param(b"GET /orders/1 HTTP/3.1\r\nHost: x\r\n\r\n", 505, id="HTTP/3.1 request line"),
    ],
)
def test_the_http_layers_own_errors_are_json_4xx(
    server: LocalHttpApi, request_bytes: bytes, status: int
) -> None:
    head, body = raw_exchange(server.port, request_bytes)

    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"message": HTTPStatus(status).phrase}
    assert server.functions["IngestFunction"].invocations == 0


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "post", "BREW", "PROPFIND", "OPTIONS", "HEAD"])
def test_a_method_no_route_declares_is_api_gateways_404(server: LocalHttpApi, method: str) -> None:
    target = "127.0.0.1:443" if method == "CONNECT" else "/orders"
    head, body = raw_exchange(server.port, f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    assert head.startswith(b"HTTP/1.1 404 ")
    if method != "HEAD":
        assert json.loads(body) == {"message": "Not Found"}
    assert server.functions["IngestFunction"].invocations == 0


def test_http_1_0_with_a_host_is_served(server: LocalHttpApi) -> None:
    head, body = raw_exchange(server.port, b"GET /orders/abc HTTP/1.0\r\nHost: x\r\n\r\n")

    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["requestContext"]["http"]["protocol"] == "HTTP/1.0"


def test_a_gzip_body_is_passed_through_as_it_came(server: LocalHttpApi) -> None:
    # Given a gzip-compressed JSON body
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    compressed = gzip.compress(b'{"a": 1}')

    # When it is posted
    status, event = request(
        connection,
        "POST",
        "/orders",
        compressed,
        **{"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )

    # Then the function gets it undecoded (base64, not UTF-8) with its Content-Encoding, as API
    # Gateway passes it: refusing it (415) is the function's business
    assert status == 202
    assert event["headers"]["content-encoding"] == "gzip"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == compressed


def test_a_client_stalled_mid_body_does_not_hold_up_closing_and_is_not_accepted(server: LocalHttpApi) -> None:
    # Given a POST whose body is announced but only partly sent
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(b'POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"a"')
        time.sleep(0.2)

        # When the API closes
        started = time.monotonic()
        closed = server.close(timeout=5)

        # Then it does not wait for that client, which gets 503 and never reaches the function
        assert closed is True
        assert time.monotonic() - started < 1
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert server.functions["IngestFunction"].invocations == 0
    assert server.stats().accepted == 0


def test_worker_processes_forked_after_binding_do_not_hold_the_port() -> None:
    # Given an API bound, then a process forked from this one (as the function workers are)
    api = LocalHttpApi(API, None, port=0)
    try:
        reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)

        def report_socket() -> None:
            writer.send(api._socket.fileno())

        child = multiprocessing.get_context("fork").Process(target=report_socket)
        child.start()
        assert reader.poll(10), "the forked child did not report"
        inherited_fd = reader.recv()
        child.join(5)
    finally:
        api.close(timeout=0)

    # Then the child closed its copy of the listening socket (-1: closed), so that once the API
    # closes its own, new connections are refused instead of queued for the child
    assert inherited_fd == -1
