"""The endpoint's HTTP server: persistent connections, bodies as SDKs send them, clear errors."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from orderpipe_local.moto.wsgi_server import WsgiServer


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with what it was asked: method, path, query, a header, the body."""
    if environ["PATH_INFO"] == "/fail":
        raise RuntimeError("the app failed")
    answer = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "target": environ.get("HTTP_X_AMZ_TARGET"),
        "body": environ["wsgi.input"].read().decode(),
        "host": environ.get("HTTP_HOST"),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]


@pytest.fixture
def server() -> Iterator[WsgiServer]:
    server = WsgiServer(echo, "127.0.0.1", 0)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    yield server
    server.shutdown()
    serving.join(5)


def raw_exchange(server: WsgiServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_one_connection_carries_many_requests(server: WsgiServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    answers = []
    for number in range(3):
        connection.request(
            "POST", f"/queue/{number}?a=b%20c", body=f"body {number}", headers={"X-Amz-Target": "T"}
        )
        response = connection.getresponse()
        answers.append((response.status, json.loads(response.read()), response.getheader("Connection")))
        assert connection.sock is not None  # not closed by the server
    connection.close()

    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert [answer["body"] for _, answer, _ in answers] == ["body 0", "body 1", "body 2"]
    assert answers[2][1] | {"host": None} == {
        "method": "POST",
        "path": "/queue/2",
        "query": "a=b%20c",
        "target": "T",
        "body": "body 2",
        "host": None,
    }
    assert {keep_alive for _, _, keep_alive in answers} == {"keep-alive"}


def test_a_chunked_body_is_read_whole(server: WsgiServer) -> None:
    answer = raw_exchange(
        server,
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in head
    assert json.loads(body)["body"] == "hello world"


def test_a_malformed_request_gets_400_and_the_connection_closes(server: WsgiServer) -> None:
    answer = raw_exchange(server, b"NONSENSE\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert answer.endswith(b"malformed request line")


def test_a_failing_app_gets_500_and_the_connection_serves_on(server: WsgiServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("GET", "/fail")
    failed = connection.getresponse()
    failed.read()
    connection.request("GET", "/ok")
    ok = connection.getresponse()

    assert (failed.status, ok.status, json.loads(ok.read())["path"]) == (500, 200, "/ok")
    connection.close()


def test_head_answers_headers_only(server: WsgiServer) -> None:
    answer = raw_exchange(server, b"HEAD /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: " in head
    assert body == b""
