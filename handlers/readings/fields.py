"""The value types Stripe payloads carry, as marshmallow fields that refuse anything else.

Each field checks one kind of value the way Stripe sends it (integers are JSON integers of at
most 15 digits, timestamps are Unix seconds no calendar past year 9999 lacks, text has no
NUL and fits its column) and fails with `expected …, got …`. `load` turns marshmallow's nested
error dict into one line naming the first bad field's path (`data.object.lines.data[3].amount`),
so an operator can find the value without the payload being logged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import sqlalchemy as sa
from marshmallow import EXCLUDE, Schema, ValidationError, fields

#: The largest magnitude of an amount: 15 digits. Stripe's
#: largest amounts have 12 (IDR 999,999,999,999 in minor units), and the bound leaves room for the
#: sums and negations handlers make of them (thousands of them still fit a signed 64-bit column),
#: so a value Stripe cannot hold fails its event here instead of overflowing a write (a retry).
MAX_AMOUNT = 10**15 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: 9999-12-31T23:59:59Z: the last second Python's datetime (and a timestamp column) can hold.
MAX_TIMESTAMP = 253_402_300_799
#: Strings up to this length are quoted in errors; longer ones are only described.
_QUOTE_UP_TO = 40
_CURRENCY = re.compile(r"[a-z]{3}")


def describe(value) -> str:
    """How an error names what it found, without echoing long or binary text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 24 else f"an integer of {len(text)} digits"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        if len(value) <= _QUOTE_UP_TO and value.isprintable():
            return json.dumps(value)
        return f"a string of {len(value)} characters"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def column_length(column) -> int | None:
    """The width of a String column (None for unbounded Text), read from the model."""
    length = getattr(column.type, "length", None)
    return length if isinstance(column.type, sa.String) else None


class StripeField(fields.Field):
    """Base: optional (absent stays absent) and nullable unless told otherwise; `expected` names
    the value in errors."""

    expected = "a value"

    def __init__(self, *, required: bool = False, allow_none: bool = True, **kwargs):
        super().__init__(required=required, allow_none=allow_none, **kwargs)
        self.error_messages["required"] = f"expected {self.expected}, missing"
        self.error_messages["null"] = f"expected {self.expected}, got null"

    def fail(self, value):
        raise ValidationError(f"expected {self.expected}, got {describe(value)}")


class Int(StripeField):
    """An integer amount or count: a JSON integer (not a string, a boolean or a decimal) of at
    most 15 digits (`MAX_AMOUNT`); signed 32-bit where `column` is a plain Integer column (a
    count like `attempt_count`), signed 64-bit for another `count`."""

    expected = "an integer"

    def __init__(self, column=None, *, count: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.narrow = column is not None and type(column.type) is sa.Integer
        self.count = count

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not int:
            self.fail(value)
        return check_int(value, narrow=self.narrow, count=self.count)


def check_int(value: int, *, narrow: bool = False, count: bool = False) -> int:
    """Refuse an integer out of range: beyond 32 bits where `narrow`; beyond 64 bits for a
    `count` (a line's quantity, a list's total: never summed or negated); else beyond 15 digits."""
    if narrow:
        low, high, what = INT32_MIN, INT32_MAX, "in the signed 32-bit range"
    elif count:
        low, high, what = INT64_MIN, INT64_MAX, "in the signed 64-bit range"
    else:
        low, high, what = -MAX_AMOUNT, MAX_AMOUNT, "of at most 15 digits"
    if not low <= value <= high:
        raise ValidationError(f"expected an integer {what}, got {describe(value)}")
    return value


class Timestamp(StripeField):
    """Unix seconds, from 1970 to the end of year 9999."""

    expected = "a Unix timestamp"

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not int:
            self.fail(value)
        if not 0 <= value <= MAX_TIMESTAMP:
            raise ValidationError(f"expected a Unix timestamp up to year 9999, got {describe(value)}")
        return value


class Bool(StripeField):
    expected = "true or false"

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            self.fail(value)
        return value


class Text(StripeField):
    """Text without NUL characters, no longer than `column`'s width (or `max_length`)."""

    expected = "a string"

    def __init__(self, column=None, *, max_length: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.max_length = column_length(column) if column is not None else max_length

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            self.fail(value)
        return check_text(value, self.max_length)


def check_text(value: str, max_length: int | None) -> str:
    """Refuse a NUL (PostgreSQL text cannot hold one) or text longer than its column."""
    if "\x00" in value:
        raise ValidationError("expected text without NUL characters, got a string containing one")
    if max_length is not None and len(value) > max_length:
        raise ValidationError(f"expected at most {max_length} characters, got {len(value)}")
    return value


class Id(Text):
    """A Stripe object id (ids never exceed 255 characters). An empty string is "no id" where the
    field may be null: Stripe's schemas type ids as plain strings, and payloads of old API
    versions (third-party fixtures) carry `""` for an unset one (`subscription: ""`)."""

    expected = "an id"

    def __init__(self, column=None, **kwargs):
        super().__init__(column, max_length=255, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if value == "" and self.allow_none:
            return None
        if not isinstance(value, str) or not value:
            self.fail(value)
        return check_text(value, self.max_length)


class Expandable(Id):
    """An id that Stripe may expand into the object it names; read as the id either way."""

    expected = "an id or an object with an id"

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, Mapping):
            inner = value.get("id")
            if inner == "" and self.allow_none:
                return None
            if not isinstance(inner, str) or not inner:
                raise ValidationError({"id": [f"expected an id, got {describe(inner)}"]})
            return check_text(inner, self.max_length)
        return super()._deserialize(value, attr, data, **kwargs)


class Currency(StripeField):
    """A three-letter ISO currency code in lowercase, as Stripe writes it."""

    expected = "a three-letter currency code"

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
            self.fail(value)
        return value


class Choice(StripeField):
    """One of a fixed set of strings (a status, a type)."""

    def __init__(self, choices, **kwargs):
        self.choices = tuple(choices)
        self.expected = "one of " + ", ".join(self.choices)
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or value not in self.choices:
            self.fail(value)
        return value


class Obj(StripeField):
    """A nested object read by its own schema; errors keep the path inside it."""

    expected = "an object"

    def __init__(self, schema: type[Schema], **kwargs):
        super().__init__(**kwargs)
        self.schema = schema(unknown=EXCLUDE)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, Mapping):
            self.fail(value)
        return self.schema.load(value)


class ListOf(StripeField):
    """A JSON list whose items are all read by `item`; an error names the item's index."""

    expected = "a list"

    def __init__(self, item: StripeField, **kwargs):
        super().__init__(**kwargs)
        self.item = item

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            self.fail(value)
        out = []
        for index, element in enumerate(value):
            try:
                out.append(self.item.deserialize(element))
            except ValidationError as exc:
                raise ValidationError({index: exc.messages}) from None
        return out


class StringMap(StripeField):
    """`metadata`: an object; the values that are strings, as the handlers see it.

    Stripe stores metadata values as strings, but its early schemas (2017-08-15 to 2018-05-21)
    type metadata as any object, and third-party payloads carry booleans, numbers and nulls in
    keys the service never reads. A value that is not a string is left out (read as absent), so
    it never fails an event; the few keys the service uses are checked where they are used
    (handlers.customers checks the entity id like any mirrored text).
    """

    expected = "an object"

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, Mapping):
            self.fail(value)
        return {key: item for key, item in value.items() if isinstance(item, str)}


class Reading(Schema):
    """Base of every Stripe-facing schema: fields Stripe adds later are ignored, not refused."""

    class Meta:
        unknown = EXCLUDE


def items(reading: type[Schema], *, nullable: bool = False) -> ListOf:
    """A list of `reading` objects (a page's `data`, `refunds`, `total_taxes`): items are never
    null; the list is null only where a Stripe schema makes it `nullable`."""
    return ListOf(Obj(reading, allow_none=False), allow_none=nullable)


class Page(Reading):
    """One page of a Stripe list object embedded in a payload (an invoice's or credit note's
    `lines`, an invoice's `payments`): each list declares its `data` with `items`; `has_more`
    says the payload holds only the first page, which the worker completes (docs/design.md §7)."""

    has_more = Bool()


def first_error(messages, prefix: str = "") -> str:
    """`path: message` for the first error in marshmallow's nested messages."""
    if isinstance(messages, list):
        if messages and not isinstance(messages[0], str):
            return first_error(messages[0], prefix)
        return f"{prefix}: {messages[0] if messages else 'invalid'}"
    if isinstance(messages, Mapping) and messages:
        key = next(iter(messages))
        step = f"[{key}]" if isinstance(key, int) else (f".{key}" if prefix else str(key))
        return first_error(messages[key], prefix + step)
    return f"{prefix}: {messages}"


class Refused(Exception):
    """A value a reading does not accept; `str()` is `path: expected …, got …`."""


def compile_reading(schema: Schema) -> list[tuple]:
    """The schema's fields as a plan `load` can walk without marshmallow's per-object overhead
    (about ten times faster on an invoice with lines). The schema stays the one declaration:
    the plan calls each field's own checks, and `tests/handlers/test_readings.py` checks that
    both agree on every fixture."""
    plan = []
    for name, field in schema.fields.items():
        sub: tuple | None
        if isinstance(field, Obj):
            sub = ("object", compile_reading(field.schema))
        elif isinstance(field, ListOf) and isinstance(field.item, Obj):
            sub = ("list", (field.item, compile_reading(field.item.schema)))
        else:
            sub = None
        plan.append((name, field, sub))
    return plan


def load(plan: list[tuple], data: dict, path: str) -> dict:
    """Read `data` by `plan`; the first bad value raises Refused naming its path."""
    out: dict = {}
    for name, field, sub in plan:
        if name not in data:
            if field.required:
                raise Refused(f"{_at(path, name)}: {field.error_messages['required']}")
            continue
        value = data[name]
        if value is None:
            if not field.allow_none:
                raise Refused(f"{_at(path, name)}: {field.error_messages['null']}")
            out[name] = None
            continue
        try:
            if sub is None:
                out[name] = field._deserialize(value, name, data)
            elif sub[0] == "object":
                if type(value) is not dict:
                    field.fail(value)
                out[name] = load(sub[1], value, _at(path, name))
            else:
                if type(value) is not list:
                    field.fail(value)
                out[name] = _load_items(sub[1], value, _at(path, name))
        except ValidationError as exc:
            raise Refused(first_error(exc.messages, _at(path, name))) from None
    return out


def _load_items(item_and_plan: tuple, values: list, path: str) -> list:
    item, plan = item_and_plan
    items = []
    for index, element in enumerate(values):
        if type(element) is not dict:
            message = (
                item.error_messages["null"]
                if element is None
                else f"expected an object, got {describe(element)}"
            )
            raise Refused(f"{path}[{index}]: {message}")
        items.append(load(plan, element, f"{path}[{index}]"))
    return items


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
