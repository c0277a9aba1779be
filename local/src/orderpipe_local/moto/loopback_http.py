"""The pollers' client for the local endpoint's JSON-protocol APIs, keeping answers as JSON."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import urllib3
from botocore.exceptions import ClientError


class JsonProtocolApi:
    """One AWS JSON-protocol API (DynamoDB Streams, SQS) of the local endpoint, whose answers
    are kept as the JSON they are. botocore turns every attribute of every record into Python
    values, and a poller turns them back into JSON for the function's event: that was half the
    stream poller's CPU (the pipeline's CPU at 150 orders/s: 40% of a core through botocore,
    20% with the JSON kept). HTTP is urllib3's: a pool of kept-alive connections, and a server
    error or a dropped connection tried again, twice, as botocore's standard retries do (the
    pollers' calls - receive, delete, read a stream - may be repeated). Errors are botocore's
    ClientError with the code botocore would give."""

    ATTEMPTS = 3

    def __init__(
        self, endpoint_url: str, target_prefix: str, signing_name: str, region: str, *, connections: int = 4
    ) -> None:
        """`connections`: as many as the threads that call at once (more would be opened, used
        once and dropped with a warning)."""
        parsed = urllib.parse.urlsplit(endpoint_url)
        self._pool = urllib3.HTTPConnectionPool(
            parsed.hostname or "127.0.0.1",
            parsed.port or 80,
            maxsize=connections,
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            retries=urllib3.Retry(
                total=self.ATTEMPTS - 1,
                allowed_methods=None,  # POST too: every call here may be repeated
                status_forcelist=range(500, 600),
                backoff_factor=0.1,
                raise_on_status=False,  # the last answer is read as an error below
                redirect=False,
            ),
        )
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
        answer = self._pool.urlopen("POST", "/", body=json.dumps(parameters).encode(), headers=headers)
        content = _json_object(answer.data)
        if answer.status == 200:
            return content
        # SQS names its errors in a header (botocore reads it); other services in __type.
        query_error = answer.headers.get("x-amzn-query-error", "")
        code = query_error.partition(";")[0] or str(content.get("__type", "")).rpartition("#")[2]
        message = content.get("message", content.get("Message")) or answer.data.decode(errors="replace")
        error = {"Code": code or str(answer.status), "Message": message or answer.reason or ""}
        raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": answer.status}}, action)  # type: ignore[typeddict-item]

    def close(self) -> None:
        self._pool.close()


def _json_object(body: bytes) -> dict[str, Any]:
    """The answer's JSON object; {} for a body that is none (a plain-text error, say)."""
    try:
        content = json.loads(body) if body else {}
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}
