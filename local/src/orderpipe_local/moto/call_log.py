"""A log of the AWS calls the endpoint serves, for counting what a run would be billed for.

Off unless `ORDERPIPE_CALL_LOG` names a directory: then each of the endpoint's processes appends
one JSON line per AWS call to `calls-<pid>.jsonl` there - the service, the operation, the HTTP
status, and for the calls whose bill depends on their content (DynamoDB's reads and writes,
SQS's messages, SNS's publishes) the request and the answer. `bench/lambda_bench.py` turns it
into billed requests and capacity units. A call the first process forwards to the second
(DynamoDB's) is logged by the second only.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from orderpipe_local.moto.faults import _identify

CALL_LOG_VARIABLE = "ORDERPIPE_CALL_LOG"
# Operations whose request and answer are kept: what they are billed for depends on them.
_WITH_CONTENT = frozenset(
    {
        ("dynamodb", "PutItem"),
        ("dynamodb", "UpdateItem"),
        ("dynamodb", "GetItem"),
        ("dynamodb", "BatchGetItem"),
        ("dynamodb", "TransactWriteItems"),
        ("dynamodb", "DeleteItem"),
        ("sqs", "SendMessage"),
        ("sqs", "SendMessageBatch"),
        ("sqs", "ReceiveMessage"),
        ("sns", "Publish"),
    }
)


class CallLog:
    """WSGI middleware: one line per AWS call reaching `app`; `passed_on`: X-Amz-Target prefixes
    this process forwards to another that logs them."""

    def __init__(self, app: Callable[..., Iterable[bytes]], directory: Path, passed_on: Iterable[str] = ()):
        directory.mkdir(parents=True, exist_ok=True)
        self.app = app
        self._passed_on = frozenset(passed_on)
        self._file = (directory / f"calls-{os.getpid()}.jsonl").open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        service, operation, prefix = _identify(environ, {"sns"})
        if service is None or prefix in self._passed_on:
            return self.app(environ, start_response)
        keep = (service, operation) in _WITH_CONTENT
        request = b""
        if keep:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            request = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(request)
        status: list[str] = []

        def recording_start_response(code: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            status.append(code)
            return start_response(code, headers, *args)

        answer = b"".join(self.app(environ, recording_start_response))
        line: dict[str, Any] = {
            "service": service,
            "operation": operation,
            "status": int(status[0].split()[0]) if status else 0,
            "user_agent": environ.get("HTTP_USER_AGENT", ""),
        }
        if keep:
            line["request"] = request.decode("utf-8", "replace")
            line["answer"] = answer.decode("utf-8", "replace")
        with self._lock:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
        return [answer]


def call_log_directory() -> Path | None:
    value = os.environ.get(CALL_LOG_VARIABLE)
    return Path(value) if value else None
