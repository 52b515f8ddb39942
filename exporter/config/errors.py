"""Turning validation failures into what the user reads: every error in a document, one line
each, key path first (`prometheus.timeout: invalid duration 'soon' ...`), never a secret.

msgspec stops at the first error of a conversion, so a document that fails is converted again
part by part (each section, each mapping entry, each list item) to find them all. Its message
format (`... - at `$.a.b[0]``, "Object contains unknown field `x`", "Expected `int`, got
`str`") is what the rendering reads; tests pin it.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from msgspec import Struct

from exporter.config.values import decode_hook, short

MAX_LINE = 300  # characters per error line: a value echoed back must not flood a terminal


class ConfigError(Exception):
    """A configuration or command-line problem: one line per problem, each fit for the user;
    str() is the lines joined."""

    def __init__(self, *lines: str) -> None:
        self.lines = tuple(cap(line) for line in lines)
        super().__init__("\n".join(self.lines))


def cap(line: str) -> str:
    """`line` on one line and at most MAX_LINE characters."""
    text = " ".join(line.split())
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


def convert(document: object, kind: Any) -> Any:
    return msgspec.convert(document, kind, strict=False, dec_hook=decode_hook)


def validation_errors(document: object, kind: Any, path: str = "") -> list[str]:
    """Every error in `document` as `kind`, one line each; [] when it converts."""
    try:
        convert(document, kind)
        return []
    except msgspec.ValidationError as exc:
        first = describe(exc, document, kind, path)
    return _inner_errors(document, kind, path) or [first]


def _inner_errors(document: object, kind: Any, path: str) -> list[str]:
    """The errors of each part of a document that failed as a whole: struct fields (and
    unknown or missing keys), mapping entries, list items. [] where the failure belongs to
    the whole (a wrong type, a list too short, a check across the struct's own fields)."""
    kind = _branch(_bare(kind), "" if isinstance(document, Mapping) else "[")
    if _is_struct(kind) and isinstance(document, Mapping):
        fields = {f.name: f for f in msgspec.structs.fields(kind)}
        hints = typing.get_type_hints(kind, include_extras=True)
        out = [_line(f"{path}.{key}", "unknown key") for key in document if key not in fields]
        for name, info in fields.items():
            where = f"{path}.{name}"
            if name in document:
                out += validation_errors(document[name], hints[name], where)
            elif info.required:
                out.append(_line(where, "required key is missing"))
        return out
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is dict and isinstance(document, Mapping):
        return [
            e for k, v in document.items() for e in validation_errors(v, args[1], f"{path}.{k}")
        ]
    if origin is list and isinstance(document, list):
        return [
            e for i, v in enumerate(document) for e in validation_errors(v, args[0], f"{path}[{i}]")
        ]
    return []


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_TYPES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
_SECRET = re.compile(r"headers|auth|token|password")  # never echo those values


def describe(exc: msgspec.ValidationError, document: object, kind: Any, prefix: str = "") -> str:
    """A msgspec error as one line, `key.path: what is wrong`, for `document` converted as
    `kind` at `prefix`."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    message, relative = match["message"], match["path"] or ""
    path = prefix + relative
    field = re.fullmatch(r"Object (contains unknown|missing required) field `(.+)`", message)
    if field:
        path = f"{path}.{field[2]}"
        message = "unknown key" if field[1] == "contains unknown" else "required key is missing"
    else:
        message = re.sub(
            r"`(\w+(?: \| \w+)*)`",
            lambda m: " or ".join(_TYPES.get(t, t) for t in m[1].split(" | ")),
            message,
        )
        message = message.replace("Expected ", "expected ").replace("Invalid ", "invalid ")
        choices = _literal_choices(kind, relative)
        boolean = message == "expected a string, got a boolean"
        if boolean and choices:
            message = f"expected {' or '.join(map(repr, choices))}, got a boolean"
        if re.search(r", got an? \w+$", message) and not _SECRET.search(path):
            message += f" {short(_value_at(document, relative))}"
        if boolean:
            message += " (YAML reads an unquoted on, off, yes or no as a boolean: quote it)"
        if message.startswith("invalid enum value") and choices:
            message += f" (one of: {', '.join(map(str, choices))})"
    return _line(path, message)


def _line(path: str, message: str) -> str:
    where = path.lstrip(".")
    return cap(f"{where}: {message}" if where else message)


def _value_at(document: object, path: str) -> object:
    """The raw value at `path` (`.a.b[0].c`) in a document."""
    for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        if name and isinstance(document, Mapping):
            document = document.get(name)
        elif index and isinstance(document, list) and int(index) < len(document):
            document = document[int(index)]
        else:
            return None
    return document


def _literal_choices(kind: object, path: str) -> tuple[object, ...]:
    """The values a Literal field allows, found by following `path` (`.a.b[0].c`) from
    `kind`; () where the path leads elsewhere."""
    for name, _ in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        kind = _branch(_bare(kind), "" if name else "[")
        if name:
            kind = typing.get_type_hints(kind).get(name) if _is_struct(kind) else None
        else:
            args = typing.get_args(kind)
            kind = args[0] if typing.get_origin(kind) is list and args else None
    kind = _bare(kind)
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else ()


def _bare(kind: object) -> object:
    """`X` for an optional `X | None` or an `Annotated[X, ...]`, else the type itself."""
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if type(None) in typing.get_args(kind) and len(args) == 1:
        return _bare(args[0])
    return kind


def _branch(kind: object, step: str) -> object:
    """The member of a union (`LiveGrid | list[LiveGrid]`) that a mapping (`step` "") or a
    list (`step` "[") is read as; any other type as it is."""
    members = [_bare(m) for m in typing.get_args(kind)] if _is_union(kind) else []
    for member in members:
        as_list = typing.get_origin(member) is list
        if as_list == (step == "[") and (as_list or _is_struct(member)):
            return member
    return kind


def _is_union(kind: object) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _is_struct(kind: object) -> bool:
    return isinstance(kind, type) and issubclass(kind, Struct)
