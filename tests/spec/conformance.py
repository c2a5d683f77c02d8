"""Where a declared reading is stricter than one API version's published schema.

`problems(version, family)` walks the family's reading (handlers/readings) beside that version's
schema, field by field and into nested readings (a nested reading follows the schema's own
reference: `lines.data[]` to the line item's, `status_transitions` to its helper schema), and
names every field that would refuse something the schema allows:
- null, where the schema makes the field nullable;
- a value of a type the schema allows (an id where the reading wants an object, ...);
- an enum value the schema lists, or any string where the schema lists none;
- absence, where the reading requires a field the schema does not (or does not always) carry.
"""

from __future__ import annotations

from marshmallow import Schema

from handlers.readings import OBJECT_READINGS, fields
from handlers.readings.customer import CreditMap
from tests.spec.schemas import Version, enum_of, is_timestamp, variants


def kind(field) -> str:
    """The JSON type a reading's field reads; `ref` is an id string or an expanded object."""
    if isinstance(field, fields.Int | fields.Timestamp):
        return "integer"
    if isinstance(field, fields.Bool):
        return "boolean"
    if isinstance(field, fields.Expandable):
        return "ref"
    if isinstance(field, fields.Text | fields.Currency | fields.Choice):
        return "string"
    if isinstance(field, fields.ListOf):
        return "array"
    if isinstance(field, fields.Obj | fields.StringMap | CreditMap):
        return "object"
    raise TypeError(f"no kind for {type(field).__name__}")


def shape_type(version: Version, shape: dict) -> str:
    """The JSON type of one non-null shape a schema allows (`any` when it does not say)."""
    if "$ref" in shape:  # a resource this version does not describe: an object
        return "object"
    if shape.get("type"):
        return shape["type"]
    if "properties" in shape:
        return "object"
    return "any"


#: Every integer's path that some version's schema says is a time in Unix seconds (filled by
#: `problems`): what tests/spec/payloads.py draws as timestamps in every version.
_TIMES: set[str] = set()


def time_paths(versions: list[Version]) -> frozenset[str]:
    """The integer fields that any of `versions` documents as Unix times."""
    for version in versions:
        for family in version.roots:
            problems(version, family)
    return frozenset(_TIMES)


def problems(version: Version, family: str) -> list[str]:
    root = version.schemas[version.roots[family]]
    return list(_walk(version, OBJECT_READINGS[family](), root, family))


def _walk(version: Version, reading: Schema, schema: dict, path: str):
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    for name, field in reading.fields.items():
        at = f"{path}.{name}"
        prop = properties.get(name)
        if prop is None:
            if field.required and properties:
                yield f"{at}: required by the reading, absent from the schema"
            continue
        if field.required and name not in required:
            yield f"{at}: required by the reading, optional in the schema"
        nullable, shapes = variants(version, prop)
        if nullable and not field.allow_none:
            yield f"{at}: the schema allows null, the reading refuses it"
        for shape in shapes:
            yield from _shape(version, field, shape, at)


def _shape(version: Version, field, shape: dict, at: str):
    got = shape_type(version, shape)
    want = kind(field)
    if got == "any":
        yield f"{at}: the schema allows any value, the reading wants {want}"
        return
    accepted = {"ref": ("string", "object")}.get(want, (want,))
    if got not in accepted:
        yield f"{at}: the schema allows {got}, the reading wants {want}"
        return
    if got == "integer" and is_timestamp(shape):
        _TIMES.add(at)
    if isinstance(field, fields.Choice):
        enum = enum_of(shape)
        if enum is None:
            yield f"{at}: the schema allows any string, the reading only {', '.join(field.choices)}"
        else:
            missing = [value for value in enum if value not in field.choices]
            if missing:
                yield f"{at}: the schema lists {', '.join(map(str, missing))}, the reading refuses"
    if isinstance(field, fields.Obj) and "$ref" not in shape:
        yield from _walk(version, field.schema, shape, at)
    if isinstance(field, fields.ListOf):
        item_nullable, items = variants(version, shape.get("items") or {})
        if item_nullable and not field.item.allow_none:
            yield f"{at}[]: the schema allows null items, the reading refuses them"
        for item in items:
            yield from _shape(version, field.item, item, f"{at}[]")
