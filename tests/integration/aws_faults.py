"""Make one boto3 client fail chosen calls, as AWS would answer them, without a network."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders


def fail_calls(
    client: Any,
    operation: str,
    code: str,
    *,
    status: int = 400,
    when: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> Callable[[], None]:
    """Answer `operation` with the error `code` whenever `when(request)` holds; returns an undo.

    A `before-call` hook that returns a response short-circuits the request, so botocore raises
    the error as it would for AWS's own answer. `request` is the JSON body (DynamoDB), else {}.
    """

    def before_call(params: dict[str, Any], **_: Any) -> Any:
        body = params.get("body")
        request = json.loads(body) if isinstance(body, bytes | str) and body else {}
        if not when(request):
            return None
        error = {"Code": code, "Message": f"injected {code}"}
        return AWSResponse("", status, HTTPHeaders(), None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    event_name = f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}"
    client.meta.events.register(event_name, before_call)
    return lambda: client.meta.events.unregister(event_name, before_call)
