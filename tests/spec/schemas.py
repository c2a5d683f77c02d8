"""Stripe's published schemas of every API version, in one JSON-schema shape.

Two sources: the OpenAPI spec Stripe published for 2017-08-15 to 2020-08-27 (tests/spec/openapi),
and, for later eras, the resource classes of stripe-python releases (fetch_stripe_wheels.py),
read with `ast` from the wheel, never imported. A class becomes what the OpenAPI spec would say:
`Optional[X]` is `nullable`, `Literal[...]` is an `enum` (also inside `Union[Literal[...], str]`,
the SDK's way to stay open to values added later), `ExpandableField[X]` is an id or the object,
`ListObject[X]` a list page. Every version is a `Version(name, roots, schemas)`; a schema's
`$ref` names another schema of the same version, or a resource neither source describes here.
"""

from __future__ import annotations

import ast
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.spec.fetch_stripe_wheels import RELEASES, wheel_path

OPENAPI = Path(__file__).resolve().parent / "openapi"
#: The reading families and the schema each source names them by.
OPENAPI_ROOTS = {"invoice": "invoice", "credit_note": "credit_note", "customer": "customer"}
SDK_ROOTS = {
    "invoice": "Invoice",
    "credit_note": "CreditNote",
    "customer": "Customer",
    "invoice_payment": "InvoicePayment",
}
#: The wheel modules holding those resources and the ones they embed (lines, prices, plans).
SDK_MODULES = (
    "_invoice.py", "_credit_note.py", "_customer.py", "_invoice_line_item.py", "_credit_note_line_item.py",
    "_invoice_payment.py", "_price.py", "_plan.py",
)  # fmt: skip
_REF = "#/components/schemas/"


@dataclass(frozen=True)
class Version:
    """One API version's schemas: `roots` maps a reading family to its schema's name."""

    name: str
    source: str
    roots: dict[str, str]
    schemas: dict[str, dict]

    def resolve(self, schema: dict) -> dict | None:
        """The schema a `$ref` names (None for a resource not described here); others unchanged."""
        ref = schema.get("$ref")
        if ref is None:
            return schema
        return self.schemas.get(ref.removeprefix(_REF))


def openapi_versions() -> list[Version]:
    """Stripe's OpenAPI spec of each published version, 2017-08-15 to 2020-08-27."""
    versions = []
    for path in sorted(OPENAPI.glob("*.json")):
        spec = json.loads(path.read_text())
        roots = {family: name for family, name in OPENAPI_ROOTS.items() if name in spec["schemas"]}
        versions.append(Version(spec["api_version"], "openapi", roots, spec["schemas"]))
    return versions


def sdk_versions() -> list[Version]:
    """The API version each pinned stripe-python release was generated from.

    :raises FileNotFoundError: a wheel is not downloaded (fetch_stripe_wheels.py).
    """
    versions = []
    for release in RELEASES:
        wheel = wheel_path(release)
        if wheel is None:
            raise FileNotFoundError(f"stripe=={release} is not in the wheel cache")
        versions.append(read_wheel(wheel, release))
    return versions


def read_wheel(wheel: Path, release: str) -> Version:
    """The schemas of one wheel's resource classes."""
    classes: dict[str, ast.ClassDef] = {}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        api_version = _api_version(archive.read("stripe/_api_version.py").decode())
        for module in SDK_MODULES:
            if f"stripe/{module}" in names:
                tree = ast.parse(archive.read(f"stripe/{module}").decode())
                for node in tree.body:
                    if isinstance(node, ast.ClassDef):
                        _collect(node, node.name, classes)
    schemas = {name: _class_schema(node, name, classes) for name, node in classes.items()}
    roots = {family: name for family, name in SDK_ROOTS.items() if name in schemas}
    return Version(api_version, f"stripe=={release}", roots, schemas)


def _api_version(source: str) -> str:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if any(isinstance(t, ast.Name) and t.id == "CURRENT" for t in node.targets):
                return str(node.value.value)
    raise ValueError("no CURRENT in stripe/_api_version.py")


def _collect(node: ast.ClassDef, path: str, classes: dict[str, ast.ClassDef]) -> None:
    """Every class, nested ones as `Outer.Inner`; request parameter classes are not objects."""
    bases = {_name(base) for base in node.bases}
    if path.endswith("Params") or bases & {"TypedDict", "RequestOptions", "APIResourceTestHelpers"}:
        return
    classes[path] = node
    for child in node.body:
        if isinstance(child, ast.ClassDef):
            _collect(child, f"{path}.{child.name}", classes)


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return _name(node.value)
    return ""


def _class_schema(node: ast.ClassDef, path: str, classes: dict[str, ast.ClassDef]) -> dict:
    properties: dict[str, dict] = {}
    body = node.body
    for index, child in enumerate(body):
        if not (isinstance(child, ast.AnnAssign) and isinstance(child.target, ast.Name)):
            continue
        if _name(child.annotation) == "ClassVar":
            continue
        schema = _annotation(child.annotation, path, classes)
        following = body[index + 1] if index + 1 < len(body) else None
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            schema["description"] = str(following.value.value)
        properties[child.target.id] = schema
    # An SDK object carries every attribute its class declares (null where Optional).
    return {"type": "object", "properties": properties, "required": sorted(properties)}


def _ref(name: str, scope: str, classes: dict[str, ast.ClassDef]) -> dict:
    """A class named inside `scope`: the innermost enclosing class that defines it wins."""
    parts = scope.split(".")
    while parts:
        candidate = ".".join([*parts, name])
        if candidate in classes:
            return {"$ref": _REF + candidate}
        parts.pop()
    return {"$ref": _REF + name}


_SCALARS = {"str": "string", "int": "integer", "bool": "boolean", "float": "number", "Decimal": "string"}


def _annotation(node: ast.expr, scope: str, classes: dict[str, ast.ClassDef]) -> dict:
    """The JSON schema an annotation stands for."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a forward reference
        return _annotation(ast.parse(node.value, mode="eval").body, scope, classes)
    if isinstance(node, ast.Constant) and node.value is None:
        return {"nullable": True}
    if isinstance(node, ast.Name):
        if node.id in _SCALARS:
            return {"type": _SCALARS[node.id]}
        if node.id in ("Any", "object"):
            return {}
        if node.id in ("UntypedStripeObject", "StripeObject", "Dict"):
            return {"type": "object"}
        return _ref(node.id, scope, classes)
    if isinstance(node, ast.Subscript):
        outer = _name(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer == "Optional":
            return {**_annotation(args[0], scope, classes), "nullable": True}
        if outer == "Literal":
            values = [a.value for a in args if isinstance(a, ast.Constant)]
            kind = "boolean" if all(isinstance(v, bool) for v in values) else "string"
            return {"type": kind, "enum": values}
        if outer == "Union":
            return _union([_annotation(a, scope, classes) for a in args])
        if outer == "List":
            return {"type": "array", "items": _annotation(args[0], scope, classes)}
        if outer in ("Dict", "UntypedStripeObject"):
            return {"type": "object", "additionalProperties": _annotation(args[-1], scope, classes)}
        if outer == "ExpandableField":
            return {"anyOf": [{"type": "string"}, _annotation(args[0], scope, classes)]}
        if outer == "ListObject":
            item = _annotation(args[0], scope, classes)
            return {
                "type": "object",
                "properties": {
                    "object": {"type": "string", "enum": ["list"]},
                    "data": {"type": "array", "items": item},
                    "has_more": {"type": "boolean"},
                    "url": {"type": "string"},
                },
                "required": ["data", "has_more", "object", "url"],
            }
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([_annotation(node.left, scope, classes), _annotation(node.right, scope, classes)])
    raise ValueError(f"unknown annotation {ast.unparse(node)} in {scope}")


def _union(variants: list[dict]) -> dict:
    nullable = any(v == {"nullable": True} for v in variants)
    variants = [v for v in variants if v != {"nullable": True}]
    enums = [v for v in variants if "enum" in v and v.get("type") == "string"]
    if enums and all(v == {"type": "string"} or v in enums for v in variants):
        # Union[Literal[...], str]: the listed values, open to ones added later.
        schema: dict = {"type": "string", "enum": [x for v in enums for x in v["enum"]]}
    elif len(variants) == 1:
        schema = dict(variants[0])
    else:
        schema = {"anyOf": variants}
    if nullable:
        schema["nullable"] = True
    return schema


#: "one of `draft`, `open`, `paid`, `uncollectible`, or `void`": how a description lists the values
#: of a string the schema gives no `enum` (2018-11-08's invoice status, InvoicePayment.status).
_PROSE_ENUM = re.compile(r"\bone of ((?:`[a-z_]+`,? (?:or )?)+`?[a-z_]*`?)")


def enum_of(shape: dict) -> list | None:
    """The values a string may take: the schema's `enum`, or those its description lists."""
    if shape.get("enum") is not None:
        return list(shape["enum"])
    found = _PROSE_ENUM.search(shape.get("description") or "")
    return re.findall(r"`([a-z_]+)`", found.group(1)) if found else None


def is_timestamp(shape: dict) -> bool:
    """Whether an integer is a time in Unix seconds, as the schema or its description says."""
    text = (shape.get("description") or "").lower()
    return shape.get("format") == "unix-time" or any(word in text for word in _TIME_WORDS)


_TIME_WORDS = ("unix epoch", "timestamp", "time at which", "the time that", "date when", "seconds since")


def all_versions() -> list[Version]:
    """Every version, oldest first: the OpenAPI ones, then the SDK releases'."""
    return openapi_versions() + sdk_versions()


def variants(version: Version, prop: dict) -> tuple[bool, list[dict]]:
    """Whether `prop` may be null, and the non-null shapes it may take (refs resolved where
    this version describes them; an undescribed resource stays `{"$ref": ...}`)."""
    nullable = bool(prop.get("nullable"))
    shapes: list[dict] = []
    for option in prop.get("anyOf", [prop]):
        if option.get("nullable"):
            nullable = True
        option = {k: v for k, v in option.items() if k != "nullable"}
        if "description" in prop and "description" not in option:
            option["description"] = prop["description"]
        if not {k: v for k, v in option.items() if k != "description"}:  # any value at all
            shapes.append({})
            continue
        resolved = version.resolve(option)
        if resolved is not None and resolved is not option and resolved.get("anyOf"):
            inner_nullable, inner = variants(version, resolved)
            nullable = nullable or inner_nullable
            shapes.extend(inner)
        else:
            shapes.append(resolved if resolved is not None else option)
    return nullable, shapes
