"""Fault injection in front of moto: AWS errors and stalls on chosen calls, at chosen rates.

A fault is `SERVICE:Operation=ErrorCode@RATE` (`dynamodb:PutItem=ProvisionedThroughputExceededException@0.2`):
that fraction of the calls of that operation, whoever makes them (a handler, a poller, the
console), is answered with that AWS error, with the HTTP status and error body AWS sends for it
in the service's protocol, so that botocore's retries and the handlers' error paths run as they
would against AWS. A delay is `SERVICE:Operation=SECONDS@RATE`: the call waits that long, then
goes through, whatever error fault hit it too (a stall: the caller may have given up while the
call still takes effect, as a SendMessage or a Publish does in AWS after its client timed out).
`*` as the operation matches
every operation of the service. Services and operations are botocore's names (those of
`boto3.client(SERVICE)`), checked against botocore's models, as are the error codes (the
service's own errors, and AWS's common ones such as InternalFailure or ThrottlingException).

Whether a call is hit is drawn from a generator of each fault's own, seeded with the run's seed
and the fault's text: the same seed and the same calls give the same faults.

The endpoint's processes each apply the faults of the calls they serve (the first forwards
DynamoDB's calls to the second untouched) and share one list, changed on a running endpoint
through `/_orderpipe/faults` (GET the list and the counts, POST {"add": [...]} and DELETE to
clear), which is what `orderpipe faults` uses.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape

import urllib3

CONTROL_PATH = "/_orderpipe/faults"

# Errors every AWS API may answer besides its own (AWS's "common errors"), and the 5xx ones.
_COMMON_ERRORS = {
    "AccessDeniedException": 400,
    "IncompleteSignature": 400,
    "InternalError": 500,
    "InternalFailure": 500,
    "InternalServerError": 500,
    "InvalidClientTokenId": 403,
    "NotAuthorized": 400,
    "RequestExpired": 400,
    "ServiceUnavailable": 503,
    "ThrottlingException": 400,
    "Throttling": 400,
    "ValidationError": 400,
}
_SERVER_ERRORS = {
    "InternalError": 500,
    "InternalFailure": 500,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
}
_PROTOCOLS = ("json", "query")


class FaultError(ValueError):
    """A fault spec that cannot be applied, in words."""


@dataclass(frozen=True)
class Fault:
    """One fault: `error` (an AWS error code) or `delay` (seconds), on `rate` of the calls."""

    service: str
    operation: str  # botocore's operation name, or "*"
    rate: float
    error: str | None = None
    delay: float | None = None

    @property
    def spec(self) -> str:
        effect = self.error if self.error is not None else f"{self.delay:g}"
        return f"{self.service}:{self.operation}={effect}@{self.rate:g}"

    @property
    def status(self) -> int:
        assert self.error is not None
        return _error_status(self.service, self.error)

    def matches(self, service: str, operation: str) -> bool:
        return self.service == service and self.operation in ("*", operation)


def parse_fault(text: str, *, kind: str | None = None) -> Fault:
    """`SERVICE:Operation=ErrorCode@RATE` or `SERVICE:Operation=SECONDS@RATE`.

    `kind` ("error" or "delay") is what the caller asked for (`--fault`, `--delay`); None takes
    either, told apart by the effect being a number of seconds.
    """
    target, equals, rest = text.strip().partition("=")
    service, colon, operation = target.partition(":")
    effect, at, rate_text = rest.rpartition("@")
    if not (equals and colon and at and service and operation and effect):
        example = "SERVICE:Operation=SECONDS@RATE" if kind == "delay" else "SERVICE:Operation=ErrorCode@RATE"
        raise FaultError(f"{text!r} is not {example} (for example sns:Publish=InternalError@0.2)")
    try:
        rate = float(rate_text)
    except ValueError:
        raise FaultError(f"{text!r}: the rate {rate_text!r} is not a number from 0 to 1") from None
    if not 0 < rate <= 1:
        raise FaultError(f"{text!r}: the rate must be more than 0 and at most 1, not {rate_text}")
    model = _service_model(service, text)
    if operation != "*" and operation not in model.operation_names:
        close = [name for name in model.operation_names if name.lower() == operation.lower()]
        hint = f"; did you mean {close[0]}?" if close else ""
        raise FaultError(f"{text!r}: {service} has no operation {operation}{hint}")
    delay = _seconds(effect)
    if delay is not None:
        if kind == "error":
            raise FaultError(f"{text!r}: {effect} is a number of seconds; stalls are given with --delay")
        if not 0 < delay <= 900:
            raise FaultError(f"{text!r}: a delay is more than 0 and at most 900 seconds, not {effect}")
        return Fault(service, operation, rate, delay=delay)
    if kind == "delay":
        raise FaultError(f"{text!r}: a delay is a number of seconds, not {effect!r}")
    if effect not in _known_errors(service):
        raise FaultError(
            f"{text!r}: {service} answers no error {effect}; for example "
            + ", ".join([*sorted(_SERVER_ERRORS), "ThrottlingException"])
            + f" or one of {service}'s own (see botocore's model of {service})"
        )
    return Fault(service, operation, rate, error=effect)


def _seconds(effect: str) -> float | None:
    try:
        return float(effect.removesuffix("s"))
    except ValueError:
        return None


@cache
def _models() -> Any:
    import botocore.session

    return botocore.session.get_session()


def _service_model(service: str, text: str) -> Any:
    from botocore.exceptions import UnknownServiceError

    try:
        model = _models().get_service_model(service)
    except UnknownServiceError:
        raise FaultError(
            f"{text!r}: no AWS service {service!r} (botocore's names: sqs, dynamodb, sns...)"
        ) from None
    if model.protocol not in _PROTOCOLS:
        raise FaultError(f"{text!r}: {service}'s {model.protocol} protocol is not one faults are injected in")
    return model


@cache
def _known_errors(service: str) -> dict[str, int]:
    """Error code -> HTTP status, for the service's modelled errors and AWS's common ones."""
    errors = dict(_COMMON_ERRORS)
    for shape in _models().get_service_model(service).error_shapes:
        status = (shape.metadata.get("error") or {}).get("httpStatusCode")
        errors[shape.error_code] = int(status) if status else _SERVER_ERRORS.get(shape.error_code, 400)
    return errors


def _error_status(service: str, code: str) -> int:
    return _known_errors(service)[code]


@cache
def _json_targets() -> dict[str, str]:
    """X-Amz-Target prefix -> service, for the JSON-protocol services the endpoint serves."""
    targets = {}
    for service in ("sqs", "dynamodb", "dynamodbstreams", "sns", "logs", "cloudwatch", "events"):
        model = _models().get_service_model(service)
        if prefix := model.metadata.get("targetPrefix"):
            targets[prefix] = service
    return targets


class FaultList:
    """The faults one endpoint process applies, their generators and counts."""

    def __init__(self, seed: int, faults: Iterable[Fault] = ()) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._draws: dict[str, random.Random] = {}
        self.counts: dict[str, int] = {}  # injected, by spec; kept when a fault is cleared
        self.add(faults)

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def add(self, faults: Iterable[Fault]) -> None:
        with self._lock:
            for fault in faults:
                if fault not in self._faults:
                    self._faults.append(fault)
                    self._draws.setdefault(fault.spec, random.Random(f"{self.seed}:{fault.spec}"))
                    self.counts.setdefault(fault.spec, 0)

    def clear(self) -> None:
        with self._lock:
            self._faults = []

    def services(self) -> set[str]:
        with self._lock:
            return {fault.service for fault in self._faults}

    def draw(self, service: str, operation: str) -> tuple[float, Fault | None]:
        """What to do to one call: the seconds to stall it, or the error to answer (or None).

        A stalled call goes through: were it also failed, a caller that gave up waiting could
        not tell it from one that took effect, which is what a stall is there to show.
        """
        delay, error = 0.0, None
        with self._lock:
            hits = [
                fault
                for fault in self._faults
                if fault.matches(service, operation) and self._draws[fault.spec].random() < fault.rate
            ]
            delays = [fault for fault in hits if fault.delay is not None]
            errors = [fault for fault in hits if fault.error is not None]
            applied = delays or errors[:1]  # one error a call: the first that hits
            for fault in applied:
                self.counts[fault.spec] += 1
            delay = sum(fault.delay or 0.0 for fault in delays)
            error = None if delays or not errors else errors[0]
        return delay, error

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seed": self.seed,
                "faults": [fault.spec for fault in self._faults],
                "injected": dict(self.counts),
            }


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FaultInjector:
    """WSGI middleware: applies `faults` to the AWS calls reaching `app`, and serves the list at
    CONTROL_PATH. `passed_on`: X-Amz-Target prefixes of calls this process forwards to `peer`
    (the endpoint's second process), whose faults are applied there; list changes go there too."""

    def __init__(
        self, app: WsgiApp, faults: FaultList, *, passed_on: Iterable[str] = (), peer: str | None = None
    ) -> None:
        self.app = app
        self.faults = faults
        self._passed_on = frozenset(passed_on)
        self._peer = _peer_pool(peer) if peer else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == CONTROL_PATH:
            return self._control(environ, start_response)
        if not self.faults.counts:  # no fault was ever given: nothing to look at
            return self.app(environ, start_response)
        service, operation, prefix = _identify(environ, self.faults.services())
        if service is None or prefix in self._passed_on:
            return self.app(environ, start_response)
        delay, fault = self.faults.draw(service, operation)
        if delay:
            time.sleep(delay)
        if fault is None:
            return self.app(environ, start_response)
        status, headers, body = error_response(fault)
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        try:
            if method == "POST":
                request = json.loads(_read_body(environ) or b"{}")
                added = [parse_fault(spec) for spec in request.get("add", [])]
                self._tell_peer("POST", {"add": [fault.spec for fault in added]})
                self.faults.add(added)
            elif method == "DELETE":
                self._tell_peer("DELETE")
                self.faults.clear()
            elif method != "GET":
                return _answer(start_response, 405, {"message": f"{method} is not GET, POST or DELETE"})
        except (FaultError, ValueError, AttributeError) as error:
            return _answer(start_response, 400, {"message": str(error)})
        state = self.faults.describe()
        if self._peer is not None:
            peer = self._tell_peer("GET")
            for spec, count in peer.get("injected", {}).items():
                state["injected"][spec] = state["injected"].get(spec, 0) + count
        return _answer(start_response, 200, state)

    def _tell_peer(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._peer is None:
            return {}
        answer = self._peer.urlopen(method, CONTROL_PATH, body=json.dumps(body or {}).encode())
        if answer.status != 200:
            raise FaultError(json.loads(answer.data).get("message", answer.data.decode()))
        result: dict[str, Any] = json.loads(answer.data)
        return result


def _peer_pool(url: str) -> urllib3.HTTPConnectionPool:
    parsed = urllib.parse.urlsplit(url)
    return urllib3.HTTPConnectionPool(
        parsed.hostname or "127.0.0.1", parsed.port or 80, maxsize=2, timeout=urllib3.Timeout(5.0)
    )


def _identify(environ: dict[str, Any], services: set[str]) -> tuple[str | None, str, str]:
    """(service, operation, X-Amz-Target prefix) of an AWS call; service None for anything else.

    JSON-protocol calls name themselves in X-Amz-Target. Query-protocol ones (SNS) name the
    action in the form body, read (and put back) only while a fault of theirs is set.
    """
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        prefix, _, operation = target.partition(".")
        return _json_targets().get(prefix), operation, prefix
    service = _signing_service(environ.get("HTTP_AUTHORIZATION", ""))
    if service is None or service not in services or _models().get_service_model(service).protocol != "query":
        return None, "", ""
    form = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        body = _read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        form |= urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    action = form.get("Action", [""])[0]
    return (service, action, "") if action else (None, "", "")


def _signing_service(authorization: str) -> str | None:
    """The service of SigV4's credential scope: `Credential=KEY/DATE/REGION/SERVICE/aws4_request`."""
    _, found, rest = authorization.partition("Credential=")
    scope = rest.split(",", 1)[0].split("/")
    return scope[3] if found and len(scope) >= 5 else None


def _read_body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body: bytes = environ["wsgi.input"].read(length) if length else b""
    return body


def error_response(fault: Fault) -> tuple[int, list[tuple[str, str]], bytes]:
    """The status, headers and body AWS answers the fault's error with, in its protocol."""
    assert fault.error is not None
    model = _models().get_service_model(fault.service)
    status = fault.status
    request_id = str(uuid.uuid4())
    message = f"injected by orderpipe local ({fault.spec})"
    if model.protocol == "json":
        prefix = model.metadata.get("endpointPrefix", fault.service)
        body = json.dumps({"__type": f"com.amazonaws.{prefix}#{fault.error}", "message": message}).encode()
        headers = [
            ("Content-Type", f"application/x-amz-json-{model.metadata.get('jsonVersion', '1.0')}"),
            ("x-amzn-RequestId", request_id),
        ]
        if fault.service == "sqs":  # SQS's JSON protocol names its errors in a header too
            headers.append(
                ("x-amzn-query-error", f"{fault.error};{'Receiver' if status >= 500 else 'Sender'}")
            )
    else:
        namespace = model.metadata.get("xmlNamespace", "")
        body = (
            f'<ErrorResponse xmlns="{escape(namespace)}"><Error>'
            f"<Type>{'Receiver' if status >= 500 else 'Sender'}</Type>"
            f"<Code>{escape(fault.error)}</Code><Message>{escape(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    headers.append(("Content-Length", str(len(body))))
    return status, headers, body


def _answer(start_response: Callable[..., Any], status: int, content: dict[str, Any]) -> list[bytes]:
    body = json.dumps(content).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


# --- the client side: `orderpipe faults` and the console ------------------------------------


def read_faults(endpoint_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The running endpoint's faults: {"seed", "faults": [spec...], "injected": {spec: count}}."""
    return _control_call(endpoint_url, "GET", None, timeout)


def add_faults(endpoint_url: str, specs: Sequence[str]) -> dict[str, Any]:
    return _control_call(endpoint_url, "POST", {"add": list(specs)})


def clear_faults(endpoint_url: str) -> dict[str, Any]:
    return _control_call(endpoint_url, "DELETE", None)


def _control_call(
    endpoint_url: str, method: str, body: dict[str, Any] | None, timeout: float = 10.0
) -> dict[str, Any]:
    answer = urllib3.request(
        method,
        endpoint_url.rstrip("/") + CONTROL_PATH,
        body=json.dumps(body).encode() if body is not None else None,
        timeout=timeout,
        retries=False,
    )
    content: dict[str, Any] = json.loads(answer.data or b"{}")
    if answer.status != 200:
        raise FaultError(content.get("message", f"the endpoint answered {answer.status}"))
    return content
