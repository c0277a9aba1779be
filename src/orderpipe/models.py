"""The order as customers send it, as it travels on the queue and as it is stored.

Field names are snake_case in Python and camelCase on the wire and in DynamoDB.
Money is `Decimal` everywhere; it is written as a string with two places in JSON.
"""

from __future__ import annotations

import re
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
    WithJsonSchema,
    computed_field,
)
from pydantic.alias_generators import to_camel

MAX_BODY_BYTES = 64 * 1024
MAX_ITEMS = 100
MAX_QUANTITY = 1000
MAX_UNIT_PRICE = Decimal("1000000")
MAX_IDEMPOTENCY_KEY_LENGTH = 255
CENT = Decimal("0.01")

# Character sets as fixed ranges, not unicodedata lookups (whose tables change with the Python
# version), so that the server and the patterns in openapi.json apply one and the same rule.
# Controls and line breaks; U+FFFE and U+FFFF too: SQS refuses a message that holds them. (A lone
# surrogate, which only a \u escape can put in JSON, is refused by pydantic before these checks;
# text in valid Unicode never holds one, so the patterns leave it unstated.)
_CONTROLS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff"
# The same, but for the line feed and carriage return a note may hold.
_CONTROLS_BUT_LINE_BREAKS = r"\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff"
# Characters that show nothing: Unicode 15.1's (Python 3.13's) controls, format characters
# (zero-width, bidi marks), spaces and separators (Cc, Cf, Zs, Zl, Zp), and the fillers that
# Unicode files as letters or symbols (U+115F, U+1160, U+2800, U+3164, U+FFA0). Characters
# beyond U+FFFF are written as themselves: no regex dialect shares an escape for them.
_INVISIBLE = (
    r"\x00-\x20\x7f-\xa0\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u1680"
    r"\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u2800\u3000\u3164\ufeff\uffa0"
    r"\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
# What Python's str.strip() removes, which pydantic's email check does before it validates.
_STRIPPED_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

# One line with a visible character (the names and address lines ingest accepts).
VISIBLE_LINE_PATTERN = f"^[^{_CONTROLS}]*[^{_CONTROLS}{_INVISIBLE}][^{_CONTROLS}]*$"
NOTE_PATTERN = f"^[^{_CONTROLS_BUT_LINE_BREAKS}]*$"
# 0 to 1,000,000 in digits 0-9, at most 2 places: "12.50", "12.5", "12", "0.99".
PRICE_PATTERN = r"^0*(?:[0-9]{1,6}(?:\.[0-9]{1,2})?|1000000(?:\.0{1,2})?)$"


def _email_pattern() -> str:
    """The ASCII addresses pydantic's EmailStr accepts (email-validator 2, no deliverability
    check): a dot-atom local part; hostname labels of at most 63 characters, no `--` as the 3rd
    and 4th characters (which only Punycode may have: this pattern leaves Punycode out); a
    top-level domain of letters that is not a special-use name; spaces around are stripped."""
    atext = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
    local = f"[{atext}]+(?:\\.[{atext}]+)*"
    x, xh = "[A-Za-z0-9]", "[A-Za-z0-9-]"
    label = f"{x}(?:{x}|{xh}(?:{x}(?:{xh}{{0,59}}{x})?|-{x}(?:{xh}{{0,58}}{x})?))?"
    special_use = "|".join(
        "".join(f"[{c.upper()}{c}]" for c in name)
        for name in ("arpa", "invalid", "localhost", "local", "onion", "test")
    )
    space = f"[{_STRIPPED_SPACE}]*"
    return f"^{space}{local}@(?:{label}\\.)+(?!(?:{special_use}){space}$)[A-Za-z]{{1,63}}{space}$"


EMAIL_PATTERN = _email_pattern()

_CONTROL_CHARACTERS = re.compile(f"[{_CONTROLS}]")
_CONTROL_CHARACTERS_BUT_LINE_BREAKS = re.compile(f"[{_CONTROLS_BUT_LINE_BREAKS}]")
_VISIBLE_CHARACTER = re.compile(f"[^{_INVISIBLE}]")
_PRICE_STRING = re.compile(PRICE_PATTERN)


def _single_line(value: str) -> str:
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


def has_visible_character(text: str) -> bool:
    return _VISIBLE_CHARACTER.search(text) is not None


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
    """JSON booleans and strings are not quantities; DynamoDB's Decimal is, and so is `2.0`: JSON
    has one number type, and JSON Schema's `integer` is any number without a fraction."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a whole number")
    return value


def _money_from_json(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be a decimal amount")
    if isinstance(value, float):
        # A JSON number: take its shortest decimal spelling, never its binary value.
        amount = Decimal(repr(value))
        # openapi.json says multipleOf 0.01, which JSON Schema validators check by dividing in
        # binary floating point: they take 84700.54000000001 (8470054 * 0.01 in floats, one unit
        # in the last place from 84700.54) for a multiple. Take it for the amount they do.
        exponent = amount.as_tuple().exponent  # a letter for infinity
        if isinstance(exponent, int) and exponent < -2 and (value / 0.01).is_integer():
            return Decimal(int(value / 0.01)).scaleb(-2)
        return amount
    # The one spelling openapi.json states: Python's Decimal would also read " 1.5", "1E+2",
    # "1_000" and digits of other scripts ("١٢").
    if isinstance(value, str) and not _PRICE_STRING.fullmatch(value):
        raise ValueError('must be an amount from 0 to 1000000 with at most 2 decimal places, such as "12.50"')
    return value


def _no_negative_zero(amount: Decimal) -> Decimal:
    """-0 passes `ge=0`, but is no price to show anyone."""
    return amount.copy_abs() if amount.is_zero() else amount


def format_money(amount: Decimal) -> str:
    return f"{amount.quantize(CENT):f}"


def utc_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _visible_line_schema(max_length: int) -> WithJsonSchema:
    """Ingest also needs a visible character (`blank_text_fields`); the models do not, so that
    orders stored before that rule are still read."""
    return WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": max_length,
            "pattern": VISIBLE_LINE_PATTERN,
            "description": "One line, no control characters, at least one visible character",
        }
    )


Text = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(_single_line), _visible_line_schema(200)
]
PostalCode = Annotated[
    str, Field(min_length=1, max_length=20), AfterValidator(_single_line), _visible_line_schema(20)
]
Note = Annotated[
    str,
    Field(max_length=1000),
    AfterValidator(_multi_line),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 1000,
            "pattern": NOTE_PATTERN,
            "description": "Line breaks allowed, no other control characters",
        }
    ),
]
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
    # Pydantic's own schema for these bounds would allow "-700" and "0.001".
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": int(MAX_UNIT_PRICE), "multipleOf": 0.01},
                {"type": "string", "pattern": PRICE_PATTERN},
            ],
            "description": 'A decimal amount, best sent as a string such as "12.50"',
        },
        mode="validation",
    ),
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
        frozen=True,
    )


class Customer(WireModel):
    name: Text
    email: Annotated[
        EmailStr,
        Field(max_length=254),
        BeforeValidator(_address_only),
        WithJsonSchema(
            {
                "type": "string",
                "format": "email",
                "maxLength": 254,
                "pattern": EMAIL_PATTERN,
                "description": "An address alone, no display name; the server also accepts "
                "internationalized addresses, which this pattern leaves out",
            }
        ),
    ]


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
    postal_code: PostalCode
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
    # The token's `sub` of whoever placed it, when the API has an authorizer (`orderpipe.access`).
    customer_id: str | None = None
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
        cls,
        request: OrderRequest,
        *,
        now: datetime | None = None,
        order_id: str | None = None,
        customer_id: str | None = None,
    ) -> Self:
        return cls(
            **dict(request),
            order_id=order_id or new_order_id(),
            created_at=now or datetime.now(UTC),
            customer_id=customer_id,
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


# Any RFC 9562 UUID (versions 1-8; keyed orders get a version 5 one), in canonical lowercase form.
_ORDER_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def new_order_id() -> str:
    return str(uuid.uuid4())


def is_order_id(value: str) -> bool:
    return _ORDER_ID.fullmatch(value) is not None
