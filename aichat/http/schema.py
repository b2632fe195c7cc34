"""JSON Schema building blocks, shared by the request field declarations (aichat.http.fields) and
the OpenAPI document (aichat.http.openapi)."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def obj(properties: dict[str, Schema], required: list[str] | None = None, *,
        closed: bool = True) -> Schema:
    """An object; `required` defaults to every property (responses always carry them all)."""
    required = list(properties) if required is None else required
    schema: Schema = {"type": "object", **({"required": required} if required else {}),
                      "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


def extend(base: Schema, **fields: Schema) -> Schema:
    """`base` plus more required fields, still closed (allOf cannot extend a closed object)."""
    return obj({**base["properties"], **fields})


def nullable(schema: Schema) -> Schema:
    """`schema` or null: a type list when there is a type, else anyOf."""
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return {**schema, "type": [*types, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def integer(lo: int | None = None, hi: int | None = None, **extra: Any) -> Schema:
    bounds = {"minimum": lo, "maximum": hi}
    return {"type": "integer", **{k: v for k, v in bounds.items() if v is not None}, **extra}


def text(lo: int = 1, hi: int | None = None, *, blank: bool = False, **extra: Any) -> Schema:
    """lo..hi characters and, unless `blank`, not only whitespace (the server's strip())."""
    schema: Schema = {"type": "string"}
    if lo > 0:
        schema["minLength"] = lo
    if hi is not None:
        schema["maxLength"] = hi
    if not blank and lo > 0:
        schema["pattern"] = r"\S"
    return {**schema, **extra}


def enum(values: tuple[str, ...] | list[str]) -> Schema:
    return {"enum": list(values)}


STRING: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
NULL: Schema = {"type": "null"}
COUNT: Schema = integer(0)
ID: Schema = integer(1)
