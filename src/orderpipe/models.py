"""The order as customers send it, as it travels on the queue and as it is stored.

Field names are snake_case in Python and camelCase on the wire and in DynamoDB.
Money is `Decimal` everywhere; it is written as a string with two places in JSON.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    computed_field,
)
from pydantic.alias_generators import to_camel

MAX_BODY_BYTES = 64 * 1024
MAX_ITEMS = 100
MAX_QUANTITY = 1000
MAX_UNIT_PRICE = Decimal("1000000")
MAX_IDEMPOTENCY_KEY_LENGTH = 255
CENT = Decimal("0.01")

# U+FFFE and U+FFFF too: SQS refuses a message that holds them.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]")
_DECIMAL_STRING = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_CONTROL_CHARACTERS_BUT_LINE_BREAKS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]")


def _single_line(value: str) -> str:
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


# Characters that show nothing: controls, format characters (zero-width, bidi marks), spaces and
# separators, and the fillers that Unicode files as letters or symbols.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def has_visible_character(text: str) -> bool:
    return any(
        character not in _FILLERS and unicodedata.category(character) not in _INVISIBLE_CATEGORIES
        for character in text
    )


def _address_only(value: object) -> object:
    """EmailStr would take `Name <ada@example.com>` and keep the address, dropping the name."""
    if isinstance(value, str) and "<" in value:
        raise ValueError("must be an email address alone, such as ada@example.com")
    return value


def _multi_line(value: str) -> str:
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    if _CONTROL_CHARACTERS_BUT_LINE_BREAKS.search(value):
        raise ValueError("must not contain control characters")
    return value


def _whole_number(value: object) -> object:
    """JSON booleans, strings and floats are not quantities; DynamoDB's Decimal is."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a whole number")
    return value


def _money_from_json(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be a decimal amount")
    if isinstance(value, float):
        # A JSON number: take its shortest decimal spelling, never its binary value.
        return Decimal(repr(value))
    # Python's Decimal would also read "1_000" and digits of other scripts ("١٢").
    if isinstance(value, str) and not _DECIMAL_STRING.fullmatch(value.strip()):
        raise ValueError('must be a decimal amount in digits 0-9, such as "12.50"')
    return value


def _no_negative_zero(amount: Decimal) -> Decimal:
    """-0 passes `ge=0`, but is no price to show anyone."""
    return amount.copy_abs() if amount.is_zero() else amount


def format_money(amount: Decimal) -> str:
    return f"{amount.quantize(CENT):f}"


def utc_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_single_line)]
Note = Annotated[str, Field(max_length=1000), AfterValidator(_multi_line)]
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
# Field before the validators, so the bounds reach the OpenAPI schema as minimum/maximum.
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY), BeforeValidator(_whole_number)]
Money = Annotated[
    Decimal,
    Field(ge=0, allow_inf_nan=False, decimal_places=2),
    BeforeValidator(_money_from_json),
    AfterValidator(_no_negative_zero),
    PlainSerializer(format_money, return_type=str, when_used="json"),
]
UnitPrice = Annotated[
    Decimal,
    Field(ge=0, le=MAX_UNIT_PRICE, allow_inf_nan=False, decimal_places=2),
    BeforeValidator(_money_from_json),
    AfterValidator(_no_negative_zero),
    PlainSerializer(format_money, return_type=str, when_used="json"),
]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code")]
Timestamp = Annotated[datetime, PlainSerializer(utc_timestamp, return_type=str)]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        str_strip_whitespace=True,
        frozen=True,
    )


class Customer(WireModel):
    name: Text
    email: Annotated[EmailStr, Field(max_length=254), BeforeValidator(_address_only)]


class LineItem(WireModel):
    sku: Sku
    name: Text
    quantity: Quantity
    unit_price: UnitPrice

    @computed_field  # type: ignore[prop-decorator]
    @property
    def line_total(
        self,
    ) -> Annotated[Decimal, PlainSerializer(format_money, return_type=str, when_used="json")]:
        return self.unit_price * self.quantity


class ShippingAddress(WireModel):
    line1: Text
    line2: Text | None = None
    city: Text
    region: Text | None = None
    postal_code: Annotated[str, Field(min_length=1, max_length=20), AfterValidator(_single_line)]
    country: CountryCode


class OrderRequest(WireModel):
    """The body of `POST /orders`."""

    customer: Customer
    items: Annotated[list[LineItem], Field(min_length=1, max_length=MAX_ITEMS)]
    currency: CurrencyCode = "USD"
    shipping_address: ShippingAddress | None = None
    note: Note | None = None

    def blank_text_fields(self) -> list[str]:
        """The names and address lines that show nothing (zero-width characters only, say), as
        the client names them. Not a validation rule of the model: orders stored before it must
        still be read; ingest refuses such new orders."""
        texts = {"customer.name": self.customer.name}
        texts |= {f"items.{index}.name": item.name for index, item in enumerate(self.items)}
        if (address := self.shipping_address) is not None:
            lines = {
                "line1": address.line1,
                "line2": address.line2,
                "city": address.city,
                "region": address.region,
                "postalCode": address.postal_code,
            }
            texts |= {f"shippingAddress.{name}": text for name, text in lines.items() if text is not None}
        return [field for field, text in texts.items() if not has_visible_character(text)]


class OrderStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    PLACED = "PLACED"
    NOTIFIED = "NOTIFIED"


class Order(OrderRequest):
    """An accepted order: what the queue carries and the table stores."""

    order_id: str
    created_at: Timestamp
    status: OrderStatus = OrderStatus.PLACED
    stored_at: Timestamp | None = None
    notified_at: Timestamp | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> Annotated[Decimal, PlainSerializer(format_money, return_type=str, when_used="json")]:
        """Computed by the server from the line items, never taken from the client."""
        return sum((item.line_total for item in self.items), Decimal("0"))

    @classmethod
    def accept(
        cls, request: OrderRequest, *, now: datetime | None = None, order_id: str | None = None
    ) -> Self:
        return cls(
            **dict(request),
            order_id=order_id or new_order_id(),
            created_at=now or datetime.now(UTC),
        )

    def to_message(self) -> str:
        return self.model_dump_json(exclude_none=True)

    def to_item(self) -> dict[str, Any]:
        """The DynamoDB item: money as Number, timestamps as ISO 8601 strings."""
        item: dict[str, Any] = self.model_dump(mode="python", exclude_none=True)
        item["status"] = str(self.status)
        return item


class OrderAccepted(WireModel):
    """The 202 answer to `POST /orders`."""

    order_id: str
    status: OrderStatus = OrderStatus.ACCEPTED


class ErrorDetail(WireModel):
    field: str
    message: str


class ErrorResponse(WireModel):
    message: str
    errors: list[ErrorDetail] | None = None


# Any UUID in canonical form: a new order's is random (version 4), a keyed order's is derived
# from its Idempotency-Key and body (version 5).
_ORDER_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_order_id() -> str:
    return str(uuid.uuid4())


def is_order_id(value: str) -> bool:
    return bool(_ORDER_ID.match(value))
