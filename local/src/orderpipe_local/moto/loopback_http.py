"""HTTP to the local endpoint without an SDK in between: forwarding a request, or calling a JSON
protocol API and keeping its answer's JSON as it is."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class KeepAliveConnections:
    """Requests to one server, each thread on a persistent connection of its own."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        self._address = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._timeout = timeout
        self._local = threading.local()

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Answer:
        for attempt in (1, 2):  # a kept-alive connection the other end closed is opened again
            connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection(*self._address, timeout=self._timeout)
                self._local.connection = connection
            try:
                connection.request(method, path, body, headers or {})
                response = connection.getresponse()
                return Answer(response.status, response.reason, response.getheaders(), response.read())
            except (ConnectionError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


class JsonProtocolApi:
    """One AWS JSON-protocol API (DynamoDB Streams, SQS) of the local endpoint, whose answers
    are kept as the JSON they are. botocore turns every attribute of every record into Python
    values, and a poller turns them back into JSON for the function's event: that was half the
    stream poller's CPU. Errors are botocore's ClientError with the code botocore would give;
    a server error or a dropped connection is tried again, twice, as botocore's standard
    retries do (the pollers' calls - receive, delete, read a stream - may be repeated)."""

    ATTEMPTS = 3

    def __init__(self, endpoint_url: str, target_prefix: str, signing_name: str, region: str) -> None:
        self._connections = KeepAliveConnections(endpoint_url)
        self._target_prefix = target_prefix
        # The endpoint ignores signatures; it reads the service from the credential scope.
        self._authorization = (
            f"AWS4-HMAC-SHA256 Credential=local/20000101/{region}/{signing_name}/aws4_request"
        )

    def call(self, action: str, **parameters: Any) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"{self._target_prefix}.{action}",
            "Authorization": self._authorization,
        }
        body = json.dumps(parameters).encode()
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                answer = self._connections.request("POST", "/", body, headers)
            except (OSError, http.client.HTTPException):
                if attempt == self.ATTEMPTS:
                    raise
            else:
                if answer.status < 500 or attempt == self.ATTEMPTS:
                    break
            time.sleep(0.05 * 2**attempt)
        content = _json_object(answer.body)
        if answer.status == 200:
            return content
        # SQS names its errors in a header (botocore reads it); other services in __type.
        answer_headers = {name.lower(): value for name, value in answer.headers}
        query_error = answer_headers.get("x-amzn-query-error", "")
        code = query_error.partition(";")[0] or str(content.get("__type", "")).rpartition("#")[2]
        message = content.get("message", content.get("Message")) or answer.body.decode(errors="replace")
        error = {"Code": code or str(answer.status), "Message": message or answer.reason}
        raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": answer.status}}, action)  # type: ignore[typeddict-item]


def _json_object(body: bytes) -> dict[str, Any]:
    """The answer's JSON object; {} for a body that is none (a plain-text error, say)."""
    try:
        content = json.loads(body) if body else {}
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}
