"""Make one boto3 client fail chosen calls, as AWS or the network would fail them, without a network."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError


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


class LambdaEnded(BaseException):
    """Plays the Lambda runtime ending an invocation at its Timeout: no `except Exception` in the
    code (nor Powertools') sees it, so nothing after the call runs."""


def _hook(
    client: Any,
    operation: str,
    failure: Callable[[], BaseException],
    *,
    reaches_aws: bool,
    stall_seconds: float,
    calls: set[int] | None,
) -> Callable[[], None]:
    service = client.meta.service_model.service_id.hyphenize()
    seen = 0

    def before_send(event_name: str, **_: Any) -> None:
        nonlocal seen
        if event_name != f"before-send.{service}.{operation}":
            return
        seen += 1
        if calls is not None and seen not in calls:
            return
        time.sleep(stall_seconds)
        raise failure()

    # moto answers on the generic `before-send` event. Handlers of a more specific event run
    # before it (the request never reaches AWS); those registered after it on the same event run
    # once moto has applied the request (AWS did it, its answer is lost).
    event_name = "before-send" if reaches_aws else f"before-send.{service}.{operation}"
    client.meta.events.register(event_name, before_send)
    return lambda: client.meta.events.unregister(event_name, before_send)


def stall_calls(
    client: Any,
    operation: str,
    *,
    reaches_aws: bool,
    longest_stall: float = 5.0,
    calls: set[int] | None = None,
) -> Callable[[], None]:
    """Each call of `operation` (or those numbered in `calls`, from 1) waits out the client's read
    timeout (at most `longest_stall` seconds) and fails with ReadTimeoutError, as against an
    endpoint that stopped answering; botocore retries it as it would. `reaches_aws`: AWS applied
    the request before its answer was lost. Returns an undo."""
    url = client.meta.endpoint_url
    return _hook(
        client,
        operation,
        lambda: ReadTimeoutError(endpoint_url=url),
        reaches_aws=reaches_aws,
        stall_seconds=min(client.meta.config.read_timeout, longest_stall),
        calls=calls,
    )


def unreachable(client: Any, operation: str) -> Callable[[], None]:
    """`operation` cannot connect (EndpointConnectionError, at once); botocore retries it."""
    url = client.meta.endpoint_url
    return _hook(
        client,
        operation,
        lambda: EndpointConnectionError(endpoint_url=url),
        reaches_aws=False,
        stall_seconds=0,
        calls=None,
    )


def end_invocation_during(
    client: Any, operation: str, *, reaches_aws: bool, calls: set[int] | None = None
) -> Callable[[], None]:
    """The invocation ends (LambdaEnded) during `operation`, after AWS applied it or before."""
    return _hook(client, operation, LambdaEnded, reaches_aws=reaches_aws, stall_seconds=0, calls=calls)
