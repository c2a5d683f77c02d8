"""Hypothesis strategies for the payloads one API version's schema allows.

`objects(version, family, times)` draws a `data.object` of the family as that version's schema
describes it: every field the family's reading declares that the version has (present when the
schema requires it, else present or absent), of a type the schema allows, null where it is
nullable, any value of an enum, any metadata value the schema allows (up to its longest, under
the keys the service reads and others; anything at all where it types metadata as a bare
object, 2017-08-15 to 2018-05-21), and an empty string wherever a
string or an id may be one. Fields the reading does not declare are left out: the reading drops
them before any handler runs (tests/handlers/test_readings.py).

Where the schema leaves a value's range open, the strategy keeps to what Stripe sends and what
SPEC.md requires the readings to refuse otherwise: integers documented as times (in any version:
`conformance.time_paths`) are Unix seconds up to year 9999, counts fit their 32-bit column,
other integers are amounts within ±10^12 (Stripe's largest charge is eight digits); text is at
most its column's width and has no NUL; a currency is a three-letter lowercase code (what the
schema's description says); the object's own id and the ids that name its parts (lines,
payments) are never empty.
"""

from __future__ import annotations

from hypothesis import strategies as st

from handlers.readings import OBJECT_READINGS, fields
from handlers.readings.customer import CreditMap
from handlers.readings.fields import MAX_TIMESTAMP
from handlers.settings import DEFAULT_SETTINGS
from tests.spec.conformance import shape_type
from tests.spec.schemas import Version, enum_of, variants

CURRENCIES = ("usd", "eur", "gbp", "jpy", "chf")
#: The metadata keys the service reads (by default).
METADATA_KEYS = (DEFAULT_SETTINGS.entity_id_key, DEFAULT_SETTINGS.entity_type_key)
_ALPHABET = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)


def ids(prefix: str = "x") -> st.SearchStrategy[str]:
    return st.text(_ID_CHARS, min_size=6, max_size=24).map(lambda tail: f"{prefix}_{tail}")


def objects(version: Version, family: str, times: frozenset[str]) -> st.SearchStrategy[dict]:
    """A `data.object` of `family` as `version` describes it."""
    schema = version.schemas[version.roots[family]]
    return _object(version, OBJECT_READINGS[family](), schema, family, times)


def _object(version: Version, reading, schema: dict, path: str, times) -> st.SearchStrategy[dict]:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    members: dict[str, st.SearchStrategy] = {}
    optional: dict[str, st.SearchStrategy] = {}
    for name, field in reading.fields.items():
        prop = properties.get(name)
        if prop is None:
            continue
        value = _value(version, field, prop, f"{path}.{name}", times)
        (members if name in required or field.required else optional)[name] = value
    return st.fixed_dictionaries(members, optional=optional)


def _value(version: Version, field, prop: dict, path: str, times) -> st.SearchStrategy:
    if isinstance(field, fields.Id) and field.required:
        # The object's identity (its id, a line's): only a preview invoice has none, and the
        # receiver records an event whose object has no id as ignored (invoice.upcoming).
        return ids()
    nullable, shapes = variants(version, prop)
    options = [_shape(version, field, shape, path, times) for shape in shapes]
    if nullable:
        options.append(st.none())
    return st.one_of(options)


def _shape(version: Version, field, shape: dict, path: str, times) -> st.SearchStrategy:
    kind = shape_type(version, shape)
    if kind == "object":
        return _object_shape(version, field, shape, path, times)
    if kind == "string":
        return _string(field, shape)
    if kind == "integer":
        if path in times:
            return st.integers(0, MAX_TIMESTAMP)
        if getattr(field, "narrow", False):  # a count stored in a 32-bit column
            return st.integers(0, 2**31 - 1)
        return st.integers(-(10**12), 10**12)
    if kind == "boolean":
        return st.sampled_from(shape["enum"]) if shape.get("enum") else st.booleans()
    if kind == "array":
        item = field.item if isinstance(field, fields.ListOf) else field
        item_nullable, items = variants(version, shape.get("items") or {})
        if isinstance(item, fields.Obj):  # items of a kind this version does not describe: none
            items = [i for i in items if "$ref" not in i]
        if not items:
            return st.just([])
        element = st.one_of([_shape(version, item, i, f"{path}[]", times) for i in items])
        return st.lists(element | st.none() if item_nullable else element, max_size=3)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    return _ANY_JSON


def _object_shape(version: Version, field, shape: dict, path: str, times) -> st.SearchStrategy:
    if isinstance(field, fields.StringMap):
        values = shape.get("additionalProperties")
        if values is None:
            return st.dictionaries(st.text(_ALPHABET, max_size=10), _ANY_JSON, max_size=4)
        # The keys the service reads among others, with values up to the schema's longest.
        longest = values.get("maxLength") or 500
        value = _string(None, values) | st.text(_ALPHABET, min_size=longest, max_size=longest)
        keys = st.sampled_from(METADATA_KEYS) | st.text(_ALPHABET, max_size=10)
        return st.dictionaries(keys, value, max_size=4)
    if isinstance(field, CreditMap):
        return st.dictionaries(st.sampled_from(CURRENCIES), st.integers(-(10**12), 10**12), max_size=3)
    if "$ref" in shape or not isinstance(field, fields.Obj):
        # An expanded resource (or one this version does not describe): the reading takes its id.
        return st.fixed_dictionaries({"id": ids()})
    return _object(version, field.schema, shape, path, times)


def _string(field, shape: dict) -> st.SearchStrategy[str]:
    enum = enum_of(shape)
    if enum is not None:
        return st.sampled_from(enum)
    if isinstance(field, fields.Currency) or "currency code" in (shape.get("description") or "").lower():
        return st.sampled_from(CURRENCIES)
    if isinstance(field, fields.Id):  # Expandable too: an id string, or "" (no id)
        return ids() if field.required else ids() | st.just("")
    width = getattr(field, "max_length", None) or 40
    return st.text(_ALPHABET, max_size=min(width, 40))
