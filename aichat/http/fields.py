"""Typed request body fields: one declaration gives both the check and the OpenAPI schema.

A field reads its value from a JSON object; a failure is a 400 whose message names the field and
the rule (the wording docs/api.md fixes, which the front end shows). `null` reads as absent
everywhere (a body may still ask which optional fields were null: `Body.nulls`). `Body` groups
the fields of one request: aichat.http.bodies declares them all.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from yarl import URL

from aichat.http.errors import ApiError
from aichat.http.schema import BOOL, ID, Schema, array, enum, integer, nullable, obj, text

MAX_SQL_INT = 2**63 - 1
MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Field:
    """One key of a JSON body. Subclasses give `check` (a present value) and `type_schema`."""

    required: bool = True  # absent or null: 400 "<name> is required"
    default: Any = None  # what an absent optional field reads as
    doc: str | None = None

    def read(self, name: str, body: dict[str, Any]) -> Any:
        value = body.get(name)
        if value is None:
            if self.required:
                raise ApiError(400, self.missing(name, body))
            return self.default
        return self.check(name, value)

    def missing(self, name: str, body: dict[str, Any]) -> str:
        return f"{name} is required"

    def check(self, name: str, value: Any) -> Any:
        raise NotImplementedError

    def finish(self, name: str, value: Any) -> None:
        """A rule run once every field has passed its own check (see Url)."""

    def type_schema(self) -> Schema:
        raise NotImplementedError

    def schema(self) -> Schema:
        schema = self.type_schema()
        if self.default is not None:
            schema["default"] = self.default
        if self.doc:
            schema["description"] = self.doc
        return schema


@dataclass(frozen=True)
class Id(Field):
    """A positive JSON integer (no strings, fractions or booleans)."""

    def check(self, name: str, value: Any) -> int:
        if type(value) is float and value.is_integer() and value > MAX_SQL_INT:
            return 0  # orjson reads integers past 64 bits as floats: too large to exist anyway
        if type(value) is not int or value < 1:
            raise ApiError(400, f"{name} must be a positive integer")
        return value if value <= MAX_SQL_INT else 0  # one too large to exist matches nothing

    def type_schema(self) -> Schema:
        return dict(ID)


@dataclass(frozen=True)
class Text(Field):
    """lo..hi characters and, unless `blank`, not only whitespace; `rule` may refuse more."""

    lo: int = 1
    hi: int | None = None
    blank: bool = False
    rule: Callable[[str], object] | None = None  # raises ValueError, whose text is the message
    typed: bool = True  # False: a non-string gets the length message (system settings' wording)

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) and self.typed:
            raise ApiError(400, f"{name} must be a string")
        if not isinstance(value, str) or len(value) < self.lo or (
                self.hi is not None and len(value) > self.hi) or (
                not self.blank and not value.strip()):
            span = f"{self.lo}-{self.hi}" if self.hi is not None else f"at least {self.lo}"
            raise ApiError(400, f"{name} must be {span} characters"
                                f"{'' if self.blank else ' and not blank'}")
        if self.rule is not None:
            try:
                self.rule(value)
            except ValueError as e:
                raise ApiError(400, f"{name}: {e}") from None
        return value

    def type_schema(self) -> Schema:
        return text(self.lo, self.hi, blank=self.blank)


@dataclass(frozen=True)
class Bool(Field):
    def check(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ApiError(400, f"{name} must be true or false")
        return value

    def type_schema(self) -> Schema:
        return dict(BOOL)


@dataclass(frozen=True)
class Int(Field):
    lo: int
    hi: int

    def check(self, name: str, value: Any) -> int:
        if type(value) is not int or not self.lo <= value <= self.hi:
            raise ApiError(400, f"{name} must be an integer from {self.lo} to {self.hi}")
        return value

    def type_schema(self) -> Schema:
        return integer(self.lo, self.hi)


@dataclass(frozen=True)
class Price(Field):
    """A price per million tokens: a JSON number from 0 to `hi`, at most 6 decimals (stored
    exactly, in millionths: store/prices.py)."""

    hi: int = 1_000_000

    def check(self, name: str, value: Any) -> float | int:
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or not 0 <= value <= self.hi
                or -Decimal(str(value)).normalize().as_tuple().exponent > 6):  # type: ignore[operator]
            raise ApiError(400, f"{name} must be a number from 0 to {self.hi} with at most "
                                "6 decimals")
        return value

    def type_schema(self) -> Schema:
        return {"type": "number", "minimum": 0, "maximum": self.hi}


@dataclass(frozen=True)
class Choice(Field):
    choices: tuple[str, ...]

    def check(self, name: str, value: Any) -> str:
        if value not in self.choices:
            raise ApiError(400, f"{name} must be one of: {', '.join(self.choices)}")
        return value

    def type_schema(self) -> Schema:
        return enum(self.choices)


@dataclass(frozen=True)
class Checked(Field):
    """A value judged whole by `rule`, absence included, so one message covers every fault
    (usernames and passwords: aichat.security.accounts)."""

    rule: Callable[[object], Any]
    spec: Schema

    def read(self, name: str, body: dict[str, Any]) -> Any:
        return self.rule(body.get(name))

    def type_schema(self) -> Schema:
        return dict(self.spec)


URL_RULE = "Invalid API URL format"


@dataclass(frozen=True)
class Url(Field):
    """An absolute http(s) URL without whitespace or control characters."""

    hi: int = 2048

    def missing(self, name: str, body: dict[str, Any]) -> str:
        return URL_RULE if name in body else f"{name} is required"

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, URL_RULE)
        return value

    def finish(self, name: str, value: str) -> None:
        # After the other fields, as it always was: a body with several faults names the same.
        if len(value) > self.hi or any(c.isspace() or ord(c) < 32 for c in value):
            raise ApiError(400, URL_RULE)
        try:
            url = URL(value)
        except ValueError:
            raise ApiError(400, URL_RULE) from None
        if url.scheme not in ("http", "https") or not url.host or not url.is_absolute():
            raise ApiError(400, URL_RULE)

    def type_schema(self) -> Schema:
        return {"type": "string", "maxLength": self.hi, "pattern": "^[Hh][Tt]{2}[Pp][Ss]?://[^/?#]"}


@dataclass(frozen=True)
class Content(Field):
    """A chat message's text, with the wording of docs/api.md §5.1."""

    hi: int

    def missing(self, name: str, body: dict[str, Any]) -> str:
        return f"{name} is required and must not be blank"

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, self.missing(name, {}))
        if len(value) > self.hi:
            raise ApiError(400, f"{name} must be at most {self.hi} characters")
        return value

    def type_schema(self) -> Schema:
        return text(1, self.hi)


_MIME = re.compile("image/[A-Za-z0-9][A-Za-z0-9.+-]{0,99}")
_BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


@dataclass(frozen=True)
class Images(Field):
    """Up to `max_items` {data: base64, mime: image/*} objects, each at most `max_bytes` decoded;
    reads as a list of those dicts ([] when absent)."""

    max_items: int
    max_bytes: int

    def read(self, name: str, body: dict[str, Any]) -> list[dict[str, str]]:
        raw = body.get(name)
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise ApiError(400, f"{name} must be a list")
        if len(raw) > self.max_items:
            raise ApiError(400, f"{name} may hold at most {self.max_items} items")
        return [self._image(f"{name}[{i}]", item) for i, item in enumerate(raw)]

    def _image(self, name: str, item: Any) -> dict[str, str]:
        if not isinstance(item, dict):
            raise ApiError(400, f"{name} must be an object with data and mime")
        data, mime = item.get("data"), item.get("mime")
        if not isinstance(mime, str) or not _MIME.fullmatch(mime):
            raise ApiError(400, f"{name}.mime must be image/<subtype>")
        if not isinstance(data, str) or not data or data.startswith("data:"):
            raise ApiError(400, f"{name}.data must be base64 without a data: prefix")
        too_large = f"{name} is larger than {self.max_bytes // MIB} MiB"
        if len(data) > (self.max_bytes // 3 + 1) * 4:  # refused before decoding it
            raise ApiError(400, too_large)
        try:
            size = len(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError):
            raise ApiError(400, f"{name}.data is not valid base64") from None
        if size > self.max_bytes:
            raise ApiError(400, too_large)
        return {"data": data, "mime": mime}

    def type_schema(self) -> Schema:
        image = obj({"data": {"type": "string", "minLength": 1, "pattern": _BASE64,
                              "description": "Base64 without a data: prefix, at most "
                                             f"{self.max_bytes // MIB} MiB decoded."},
                     "mime": {"type": "string", "pattern": f"^{_MIME.pattern}$"}}, closed=False)
        return array(image, maxItems=self.max_items)


class Body:
    """The fields of one request body, checked in order; unknown keys are ignored."""

    def __init__(self, component: str, doc: str | None = None, /, **fields: Field) -> None:
        self.component = component  # its OpenAPI schema's name
        self.doc = doc
        self.fields = fields

    def parse(self, body: dict[str, Any]) -> dict[str, Any]:
        """Every field's value (an absent optional one: its default); 400 on the first fault."""
        values = {name: field.read(name, body) for name, field in self.fields.items()}
        for name, field in self.fields.items():
            if values[name] is not None:
                field.finish(name, values[name])
        return values

    def nulls(self, body: dict[str, Any]) -> list[str]:
        """The optional fields sent as null: absent to `parse`, but a body that gives them a
        meaning of their own (PUT /api/settings/system: back to the default) reads them here."""
        return [name for name, field in self.fields.items()
                if not field.required and name in body and body[name] is None]

    def schema(self) -> Schema:
        """Open, like the server, and null allowed on every optional field."""
        schema = obj({name: field.schema() if field.required else nullable(field.schema())
                      for name, field in self.fields.items()},
                     [name for name, field in self.fields.items() if field.required],
                     closed=False)
        if self.doc:
            schema["description"] = self.doc
        return schema
