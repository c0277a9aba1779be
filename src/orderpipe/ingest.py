"""The ingest step: `POST /orders` puts each accepted order on OrdersQueue, `GET /orders/{orderId}`
reads a stored one back.

Every error becomes an HTTP answer in one place, `error_response`. Powertools validates the
request before any route or middleware runs, so that is also where a failed validation is
explained: an unsupported content type (415), an oversized body (413) or a body that is not
JSON (400) are told apart from an order that breaks the schema (422).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from pydantic import BaseModel, ConfigDict

from orderpipe.access import PLACE_ORDERS_SCOPE, READ_ALL_ORDERS_SCOPE, AccessDenied, caller_of
from orderpipe.aws import clients
from orderpipe.aws.orders_queue import QueueUnavailable
from orderpipe.aws.orders_table import StorageError
from orderpipe.models import (
    MAX_BODY_BYTES,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    ErrorDetail,
    ErrorResponse,
    Order,
    OrderAccepted,
    OrderRequest,
    is_order_id,
)
from orderpipe.observability import MetricUnit, logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

IDEMPOTENCY_WINDOW_SECONDS = 24 * 60 * 60
RETRY_AFTER_SECONDS = 5
JSON_MEDIA_TYPE = "application/json"
_NOT_AN_OBJECT = "the body must be a JSON object: an order"
INVALID_ORDER_MESSAGE = "the order is not valid; see errors for each field"


class OrdersResolver(APIGatewayHttpResolver):
    """Powertools' HTTP API resolver, reading the JSON media type in any case."""

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        # Media types are case-insensitive (RFC 9110), but Powertools' validation compares
        # "application/json" as written and would refuse "Application/JSON".
        headers = event.get("headers") or {}
        content_type = headers.get("content-type")
        if content_type and _is_json_media_type(content_type):
            media_type, separator, parameters = content_type.partition(";")
            headers = headers | {"content-type": media_type.strip().lower() + separator + parameters}
            event = {**event, "headers": headers}
        return super().resolve(event, context)


app = OrdersResolver(enable_validation=True)


# --- What can go wrong -----------------------------------------------------------------------


class OrderRejected(Exception):
    """The client must change the request before sending it again."""

    def __init__(self, message: str, errors: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class BodyNotJson(OrderRejected):
    pass


class BodyTooLarge(OrderRejected):
    pass


class UnsupportedContentType(OrderRejected):
    pass


class InvalidIdempotencyKey(OrderRejected):
    pass


class InvalidOrder(OrderRejected):
    pass


class OrderNotFound(OrderRejected):
    pass


# The one answer for an unknown id and for an order the caller may not read: ids reveal nothing.
ORDER_NOT_FOUND_MESSAGE = "no order has this id"
# API Gateway's own body for a token without the route's scope.
FORBIDDEN_MESSAGE = "Forbidden"


# --- The request body ------------------------------------------------------------------------


class _NotJsonNumber(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJsonNumber(f"{name} is not a JSON number")


def parse_json(text: str) -> Any:
    """JSON as RFC 8259 defines it: Python's parser would also take NaN and Infinity."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise BodyNotJson(
            f"the body is not valid JSON: {error.msg}: line {error.lineno} column {error.colno}"
        ) from error
    except _NotJsonNumber as error:
        raise BodyNotJson(f"the body is not valid JSON: {error}") from error
    except RecursionError as error:
        raise BodyNotJson("the body is not valid JSON: it nests too deeply") from error
    except ValueError as error:  # Python refuses integers of more than 4300 digits
        raise BodyNotJson("the body is not valid JSON: a number has too many digits") from error


def _is_json_media_type(content_type: str | None) -> bool:
    """A missing Content-Type is taken for JSON, as Powertools' validation takes it."""
    if content_type is None or not content_type.strip():
        return True
    return content_type.split(";", 1)[0].strip().lower() == JSON_MEDIA_TYPE


def _body_bytes(event: APIGatewayProxyEventV2) -> bytes:
    body = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as error:
            raise BodyNotJson("the body is not valid base64") from error
    # Lone surrogates survive into the event's JSON; keep them so UTF-8 decoding refuses them.
    return body.encode("utf-8", "surrogatepass")


def _content_encoding(event: APIGatewayProxyEventV2) -> str | None:
    """The body's Content-Encoding, unless it is absent or `identity` (none)."""
    codings = [c.strip() for c in (event.headers.get("content-encoding") or "").split(",") if c.strip()]
    codings = [c for c in codings if c.lower() != "identity"]
    return ", ".join(codings) if codings else None


def check_order_body(event: APIGatewayProxyEventV2) -> dict[str, Any]:
    """What the order schema cannot check: size, content type, JSON, an object. Returns the object."""
    body = _body_bytes(event)
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"the body is {len(body)} bytes; an order may be at most {MAX_BODY_BYTES} bytes")
    if not _is_json_media_type(event.headers.get("content-type")):
        raise UnsupportedContentType(f"Content-Type must be {JSON_MEDIA_TYPE}")
    # API Gateway passes a compressed body through as it came; it is not the order's JSON.
    if (encoding := _content_encoding(event)) is not None:
        raise UnsupportedContentType(
            f"Content-Encoding {encoding} is not supported; send the order uncompressed"
        )
    if not body.strip():
        raise BodyNotJson("the body is empty; send the order as JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyNotJson("the body is not UTF-8 text") from error
    parsed = parse_json(text)
    # Powertools would validate the first element of an array as if it were the whole body.
    if not isinstance(parsed, dict):
        raise InvalidOrder(_NOT_AN_OBJECT, errors=[ErrorDetail(field="", message=_NOT_AN_OBJECT)])
    return parsed


# --- Accepting an order ----------------------------------------------------------------------


# Namespace of the order ids derived from an Idempotency-Key and an order (uuid5).
KEYED_ORDER_NAMESPACE = uuid.UUID("5b0e6f3c-8d1a-4e2b-9c47-0a3f5d6e7b81")


class KeyedOrderRequest(BaseModel):
    """What the idempotency record is about: the key and the order in canonical form, and the
    customer who sent them when the API has an authorizer.

    Hashing the validated order (not the raw body) makes the same order sent with other
    whitespace, key order or number spelling count as the same request.
    """

    model_config = ConfigDict(frozen=True)

    idempotency_key: str
    order: OrderRequest
    customer_id: str | None = None

    def order_id(self) -> str:
        """The same for every attempt of this request, so a retry whose first attempt reached SQS
        unseen (its answer lost, or Lambda ended it) queues the same orderId, stored once.

        From the key and the order, not the key alone: a different order under a used key is
        refused (422) while the idempotency record lives, and must never be taken, after it, for
        a copy of the first one.
        """
        canonical = json.dumps(self.order.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        name = f"{self.idempotency_key}\n{canonical}"
        if self.customer_id is not None:  # without one, the ids keyed orders had before auth
            name = f"{self.customer_id}\n{name}"
        return str(uuid.uuid5(KEYED_ORDER_NAMESPACE, name))


def _count_replay(response: Any, idempotent_data: DataRecord) -> Any:
    """Called instead of the function when the first response is answered again."""
    logger.set_correlation_id(response.order_id)
    logger.info("answered a retried request with its first response", extra={"order_id": response.order_id})
    metrics.add_metric(name="IdempotentReplays", unit=MetricUnit.Count, value=1)
    return response


_idempotency_config = IdempotencyConfig(
    # One customer's key is not another's: the record is keyed on the pair when there is a
    # customer, and on the key alone (as before auth) when there is none.
    event_key_jmespath="customer_id && [customer_id, idempotency_key] || idempotency_key",
    payload_validation_jmespath="order",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=IDEMPOTENCY_WINDOW_SECONDS,
    response_hook=_count_replay,
)


@tracer.capture_method
def accept_order(
    request: OrderRequest, order_id: str | None = None, customer_id: str | None = None
) -> OrderAccepted:
    """Give the order its id (a new one unless given) and put it on OrdersQueue; it is accepted
    once SQS has it."""
    order = Order.accept(request, order_id=order_id, customer_id=customer_id)
    logger.set_correlation_id(order.order_id)
    clients.orders_queue().enqueue(order)
    # At DEBUG: the writer's batch line names every order stored (CloudWatch Logs bills every byte).
    logger.debug("order accepted", extra={"order_id": order.order_id, "items": len(order.items)})
    metrics.add_metric(name="OrdersAccepted", unit=MetricUnit.Count, value=1)
    return OrderAccepted(order_id=order.order_id)


def _accept_keyed_order(keyed: KeyedOrderRequest) -> OrderAccepted:
    return accept_order(keyed.order, order_id=keyed.order_id(), customer_id=keyed.customer_id)


@tracer.capture_method
def accept_order_once(
    request: OrderRequest, idempotency_key: str, customer_id: str | None = None
) -> OrderAccepted:
    """`accept_order`, or the first answer again if this key was used with this order before."""
    # Decorated per call: the persistence layer (and its DynamoDB client) is built on first use.
    accept = idempotent_function(
        _accept_keyed_order,
        data_keyword_argument="keyed",
        persistence_store=clients.idempotency_store(),
        config=_idempotency_config,
        output_serializer=PydanticSerializer(OrderAccepted),
    )
    keyed = KeyedOrderRequest(idempotency_key=idempotency_key, order=request, customer_id=customer_id)
    accepted: OrderAccepted = accept(keyed=keyed)
    return accepted


@tracer.capture_method(capture_response=False)  # the order holds personal data
def read_order(order_id: str) -> Order:
    order = None
    order_id = order_id.lower()  # UUIDs are case-insensitive; order ids are stored in lowercase
    if is_order_id(order_id):  # anything else cannot be stored: no need to ask DynamoDB
        logger.set_correlation_id(order_id)
        order = clients.orders_table().get_order(order_id)
    if order is None:
        raise OrderNotFound(ORDER_NOT_FOUND_MESSAGE)
    return order


def read_order_for(event: Mapping[str, Any], order_id: str) -> Order:
    """`read_order`, answered as not found to a caller who may not read it."""
    caller = caller_of(event)
    order = read_order(order_id)
    if caller is not None and not caller.may_read(order):
        logger.info("order not shown: the caller neither placed it nor may read all orders")
        raise OrderNotFound(ORDER_NOT_FOUND_MESSAGE)
    return order


# --- Routes ----------------------------------------------------------------------------------


def _error(description: str) -> OpenAPIResponse:
    return {"description": description, "content": {JSON_MEDIA_TYPE: {"model": ErrorResponse}}}


# API Gateway's own answer, with a JWT authorizer (the AuthIssuer and AuthAudience parameters).
_NO_TOKEN = "With an authorizer: no token, or one that is not valid (signature, issuer, audience, expiry)"


def _retry_after(description: str) -> OpenAPIResponse:
    return {
        **_error(description),
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    }


@app.post(
    "/orders",
    summary="Place an order",
    description="Validates the order, gives it an id and queues it; the order is stored shortly after.",
    operation_id="placeOrder",
    tags=["orders"],
    status_code=HTTPStatus.ACCEPTED,
    responses={
        HTTPStatus.ACCEPTED: {
            "description": "The order is accepted and queued",
            "headers": {"Location": {"description": "Where to read the order", "schema": {"type": "string"}}},
            "content": {JSON_MEDIA_TYPE: {"model": OrderAccepted}},
        },
        HTTPStatus.BAD_REQUEST: _error("The body is not JSON, or the Idempotency-Key header is invalid"),
        HTTPStatus.UNAUTHORIZED: _error(_NO_TOKEN),
        HTTPStatus.FORBIDDEN: _error(
            f"With an authorizer: the token does not have the scope {PLACE_ORDERS_SCOPE} (or has no sub)"
        ),
        HTTPStatus.CONFLICT: _retry_after("A request with this Idempotency-Key is still in progress"),
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE: _error(f"The body is over {MAX_BODY_BYTES} bytes"),
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE: _error(f"The Content-Type is not {JSON_MEDIA_TYPE}"),
        HTTPStatus.UNPROCESSABLE_ENTITY: _error(
            "The order breaks the schema (`errors` names each field), "
            "or its Idempotency-Key was used with a different order"
        ),
        HTTPStatus.SERVICE_UNAVAILABLE: _retry_after("The order could not be queued; retry later"),
    },
)
def place_order(
    order: Annotated[OrderRequest, Body(description="The order; the server computes its total")],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
            description="Makes retries safe: the same key with the same order within 24 hours "
            "answers the first response again",
        ),
    ] = None,
) -> Response[OrderAccepted]:
    caller = caller_of(app.current_event.raw_event)
    if caller is not None and not caller.may_place_orders():
        raise AccessDenied(FORBIDDEN_MESSAGE)
    customer_id = caller.subject if caller is not None else None
    check_order_body(app.current_event)
    if blank := order.blank_text_fields():
        errors = [ErrorDetail(field=field, message="must contain a visible character") for field in blank]
        raise InvalidOrder(INVALID_ORDER_MESSAGE, errors=errors)
    if idempotency_key is None:
        accepted = accept_order(order, customer_id=customer_id)
    else:
        _idempotency_config.register_lambda_context(app.lambda_context)
        accepted = accept_order_once(order, idempotency_key, customer_id=customer_id)
    return Response(
        status_code=HTTPStatus.ACCEPTED,
        content_type=content_types.APPLICATION_JSON,
        body=accepted,
        headers={"Location": f"/orders/{accepted.order_id}"},
    )


@app.get(
    "/orders/<orderId>",
    summary="Read an order",
    description="Status PLACED once the order is stored, NOTIFIED once support staff were emailed.",
    operation_id="getOrder",
    tags=["orders"],
    cache_control="no-store",
    responses={
        HTTPStatus.OK: {"description": "The stored order", "content": {JSON_MEDIA_TYPE: {"model": Order}}},
        HTTPStatus.UNAUTHORIZED: _error(_NO_TOKEN),
        HTTPStatus.NOT_FOUND: _error(
            "No order has this id (yet: an accepted order is stored shortly after), or, with an "
            f"authorizer, the token neither placed it nor has the scope {READ_ALL_ORDERS_SCOPE}"
        ),
        HTTPStatus.SERVICE_UNAVAILABLE: _retry_after("The order could not be read; retry later"),
    },
)
def get_order(
    order_id: Annotated[str, Path(alias="orderId", description="The id POST /orders answered")],
) -> Order:
    return read_order_for(app.current_event.raw_event, order_id)


# --- Errors to HTTP, in one place ------------------------------------------------------------

_HTTP_STATUS: dict[type[Exception], HTTPStatus] = {
    BodyNotJson: HTTPStatus.BAD_REQUEST,
    InvalidIdempotencyKey: HTTPStatus.BAD_REQUEST,
    OrderNotFound: HTTPStatus.NOT_FOUND,
    AccessDenied: HTTPStatus.FORBIDDEN,
    NotFoundError: HTTPStatus.NOT_FOUND,
    IdempotencyAlreadyInProgressError: HTTPStatus.CONFLICT,
    BodyTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedContentType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    InvalidOrder: HTTPStatus.UNPROCESSABLE_ENTITY,
    IdempotencyValidationError: HTTPStatus.UNPROCESSABLE_ENTITY,
    QueueUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    StorageError: HTTPStatus.SERVICE_UNAVAILABLE,
    IdempotencyPersistenceLayerError: HTTPStatus.SERVICE_UNAVAILABLE,
    IdempotencyInconsistentStateError: HTTPStatus.SERVICE_UNAVAILABLE,
}

_MESSAGES: dict[type[Exception], str] = {
    AccessDenied: FORBIDDEN_MESSAGE,
    NotFoundError: "not found",
    IdempotencyAlreadyInProgressError: "a request with this Idempotency-Key is in progress; retry shortly",
    IdempotencyValidationError: "this Idempotency-Key was already used with a different order",
}

_RETRY_AFTER: dict[HTTPStatus, int] = {
    HTTPStatus.CONFLICT: 1,
    HTTPStatus.SERVICE_UNAVAILABLE: RETRY_AFTER_SECONDS,
}

# Raised by Powertools' validation before the route runs, or by decoding the body for it.
_VALIDATION_FAILURES = (RequestValidationError, RequestUnsupportedContentType, ValueError, RecursionError)


def error_response(error: Exception) -> Response[dict[str, Any]]:
    """Any error raised while serving a request, as the HTTP answer DESIGN names for it."""
    if isinstance(error, _VALIDATION_FAILURES):
        error = _rejection_behind(error)
    status = _status_of(error)
    headers = {"Retry-After": str(_RETRY_AFTER[status])} if status in _RETRY_AFTER else {}
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        logger.exception("could not serve the request", exc_info=error)
        message = "the service is unavailable; retry later"
    else:
        message = (
            error.message if isinstance(error, OrderRejected) else _MESSAGES.get(type(error), status.phrase)
        )
        logger.info("request rejected", extra={"status": int(status), "reason": message})
    errors = error.errors if isinstance(error, OrderRejected) else None
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=ErrorResponse(message=message, errors=errors).model_dump(mode="json", exclude_none=True),
        headers=headers,
    )


app.exception_handler([*_HTTP_STATUS, *_VALIDATION_FAILURES])(error_response)


def _status_of(error: Exception) -> HTTPStatus:
    return next(_HTTP_STATUS[kind] for kind in type(error).__mro__ if kind in _HTTP_STATUS)


def _rejection_behind(error: Exception) -> Exception:
    """The client's mistake that made validation fail; re-raises `error` if there is none (a bug)."""
    event = app.current_event
    if event.http_method.upper() == "POST":
        try:
            check_order_body(event)
        except OrderRejected as rejection:
            return rejection
    if isinstance(error, RequestUnsupportedContentType):  # "Application/JSON", which Powertools refuses
        return UnsupportedContentType(f"Content-Type must be {JSON_MEDIA_TYPE}")
    if isinstance(error, RequestValidationError):
        return _explain_validation(error)
    raise error


def _explain_validation(error: RequestValidationError) -> OrderRejected:
    problems = error.errors()
    if any(problem["loc"][0] == "header" for problem in problems):
        return InvalidIdempotencyKey(
            f"the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters long"
        )
    details = [
        ErrorDetail(field=_field_path(problem["loc"]), message=_message(problem)) for problem in problems
    ]
    return InvalidOrder(INVALID_ORDER_MESSAGE, errors=details)


def _field_path(location: tuple[str | int, ...]) -> str:
    """("body", "items", 0, "unitPrice") -> "items.0.unitPrice": the names the client sent."""
    return ".".join(str(part) for part in location[1:])


def _message(problem: dict[str, Any]) -> str:
    """Pydantic's message, without the prefix it puts before the models' own words."""
    return str(problem.get("msg", "is not valid")).removeprefix("Value error, ")


# --- OpenAPI ---------------------------------------------------------------------------------


# Every failed validation is answered by `error_response` with an ErrorResponse body, so the
# error schemas Powertools adds to each operation describe nothing this API sends.
_POWERTOOLS_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def openapi_json() -> str:
    """The OpenAPI description of this API, generated from the routes and the order models."""
    try:
        api_version = version("orderpipe")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        api_version = "0.0.0"
    document = json.loads(
        app.get_openapi_json_schema(
            title="orderpipe",
            version=api_version,
            summary="Place orders and read them back",
            description="Orders are accepted with 202 and queued, then stored and announced to support.",
        )
    )
    for operations in document["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
            operation["responses"] = dict(sorted(responses.items()))
    for name in _POWERTOOLS_ERROR_SCHEMAS:
        document["components"]["schemas"].pop(name, None)
    return json.dumps(document, indent=2) + "\n"
