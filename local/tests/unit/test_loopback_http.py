"""The pollers' JSON-protocol client: answers as JSON, errors and retries as botocore's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError

from orderpipe_local.moto.loopback_http import JsonProtocolApi


class ScriptedServer(ThreadingHTTPServer):
    """Answers each POST with the next (status, content type, body) of its script."""

    def __init__(self, script: list[tuple[int, str, bytes]]) -> None:
        self.script = script
        self.drop_after_answer = False  # close the connection without saying so
        self.requests: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append({"target": self.headers["X-Amz-Target"], "body": json.loads(body)})
        status, content_type, answer = self.server.script.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        self.close_connection = self.server.drop_after_answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer([])
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()


def api(server: ScriptedServer) -> JsonProtocolApi:
    return JsonProtocolApi(f"http://127.0.0.1:{server.server_address[1]}", "AmazonSQS", "sqs", "us-east-1")


def test_a_server_error_is_tried_again_and_the_answer_is_its_json(server: ScriptedServer) -> None:
    server.script += [(500, "text/plain", b"internal error"), (200, "application/json", b'{"Messages": []}')]

    assert api(server).call("ReceiveMessage", QueueUrl="q") == {"Messages": []}
    assert [request["target"] for request in server.requests] == ["AmazonSQS.ReceiveMessage"] * 2
    assert server.requests[0]["body"] == {"QueueUrl": "q"}


def test_an_error_that_is_not_json_is_still_a_client_error(server: ScriptedServer) -> None:
    server.script += [(400, "text/plain", b"the request is malformed")]

    with pytest.raises(ClientError) as raised:
        api(server).call("DeleteMessageBatch", QueueUrl="q", Entries=[])

    assert raised.value.response["Error"] == {"Code": "400", "Message": "the request is malformed"}


def test_three_server_errors_are_the_last_ones_client_error(server: ScriptedServer) -> None:
    server.script += [(503, "application/json", b'{"__type": "x#ServiceUnavailable", "message": "busy"}')] * 3

    with pytest.raises(ClientError) as raised:
        api(server).call("ReceiveMessage", QueueUrl="q")

    assert raised.value.response["Error"] == {"Code": "ServiceUnavailable", "Message": "busy"}
    assert len(server.requests) == 3


def test_a_kept_alive_connection_the_server_dropped_is_opened_again(server: ScriptedServer) -> None:
    server.drop_after_answer = True
    server.script += [(200, "application/json", b'{"Messages": []}')] * 2
    client = api(server)

    assert client.call("ReceiveMessage", QueueUrl="q") == {"Messages": []}
    assert client.call("ReceiveMessage", QueueUrl="q") == {"Messages": []}
    assert len(server.requests) == 2
