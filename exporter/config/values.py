"""Checked configuration values. msgspec hands these classes to `decode_hook`, which checks the
raw YAML value and returns an instance (a str or float, so the rest of the code sees plain
values); and the checks of values that only make sense together with others (PromQL
selectors, HTTP header names)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from exporter.durations import parse_duration
from exporter.text import redact, short_repr


class Duration(float):
    """Seconds, from "30s", "5m", "1h30m", "7d" or a number of seconds."""


class PositiveNumber(float):
    """A finite number > 0."""


class NonNegativeNumber(float):
    """A finite number >= 0."""


class Factor(float):
    """A finite multiplier >= 1 (PUE, host overhead)."""


class Ratio(float):
    """A number in [0, 1]."""


class Regex(str):
    """A Python regular expression."""


class Url(str):
    """An http(s) URL, stored without a trailing slash."""


class ListenAddress(str):
    """HOST:PORT or :PORT."""


class LabelName(str):
    """A Prometheus label name."""


class MetricName(str):
    """A Prometheus metric name."""


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {kind_name(value)} {short(value)}")
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return float(value)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {kind_name(value)} {short(value)}")
    return value


def _in_range(value: object, low: float, high: float, what: str) -> float:
    number = _number(value)
    if not low <= number <= high:
        raise ValueError(f"must be {what}, got {number:g}")
    return number


# Numbers in the configuration are physical quantities (W, g/kWh, J/token, TFLOP/s, tokens per
# second, billions of parameters): none is anywhere near these bounds, and within them every
# figure computed from them stays finite.
LARGEST = 1e12
SMALLEST = 1e-9


def _positive(value: object) -> float:
    number = _number(value)
    if not number > 0:
        raise ValueError(f"must be greater than 0, got {number:g}")
    if not SMALLEST <= number <= LARGEST:
        raise ValueError(f"must be between {SMALLEST:g} and {LARGEST:g}, got {number:g}")
    return number


def _regex(value: object) -> str:
    text = _string(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {text!r}: {exc}") from None
    return text


def _listen(value: object) -> str:
    text = _string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid listen address {text!r} (use HOST:PORT or :PORT)")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"invalid listen address {text!r} (bracket IPv6 hosts: [::1]:29877)")
    return text


def _url(value: object) -> str:
    text = _string(value)
    shown = repr(redact(text.split("?")[0].split("#")[0]))
    problem = _url_problem(text)
    if problem:
        raise ValueError(f"invalid URL {shown}: {problem}")
    if re.search(r"[?#]", text):
        raise ValueError(
            f"URL {shown} carries a query or fragment: paths are appended to it, and "
            "credentials belong in bearer_token_file or basic_auth"
        )
    return text.rstrip("/")


def _url_problem(text: str) -> str:
    """What is wrong with an http(s) URL, in a few words, or ""."""
    if not text.strip():
        return "empty"
    if any(ch.isspace() for ch in text):
        return "contains whitespace"
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not text.lower().startswith(
        f"{parts.scheme.lower()}://"
    ):
        return "want http:// or https:// before the host (e.g. http://prometheus:9090)"
    if not parts.hostname:
        return "no host"
    try:
        port = parts.port
    except ValueError:
        port = 0
    return "" if port != 0 else "the port is not a number from 1 to 65535"


def _prometheus_name(pattern: str, what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _string(value)
        if not re.fullmatch(pattern, text):
            raise ValueError(f"invalid Prometheus {what} {text!r}")
        return text

    return check


_label_name = _prometheus_name(r"[a-zA-Z_][a-zA-Z0-9_]*", "label name")
_metric_name = _prometheus_name(r"[a-zA-Z_:][a-zA-Z0-9_:]*", "metric name")


_CHECKS: dict[type, Callable[[object], Any]] = {
    Duration: parse_duration,
    PositiveNumber: _positive,
    NonNegativeNumber: lambda v: _in_range(v, 0.0, LARGEST, f"between 0 and {LARGEST:g}"),
    Factor: lambda v: _in_range(v, 1.0, 100.0, "between 1 and 100"),
    Ratio: lambda v: _in_range(v, 0.0, 1.0, "between 0 and 1"),
    Regex: _regex,
    Url: _url,
    ListenAddress: _listen,
    LabelName: _label_name,
    MetricName: _metric_name,
}


def decode_hook(kind: type, value: object) -> Any:
    """msgspec's hook for the checked classes: the checked value as an instance of `kind`."""
    check = _CHECKS.get(kind)
    if check is None:
        raise NotImplementedError(kind)
    return kind(check(value))


HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = r'(?:"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)'  # PromQL strings
_MATCHER = rf"\s*(?:[a-zA-Z_][a-zA-Z0-9_]*|{_QUOTED})\s*(?:=~|!~|!=|=)\s*{_QUOTED}\s*"
_MATCHERS = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*,?\s*")


def selector_problem(selector: str) -> str:
    """Why `selector` (PromQL label matchers, with or without braces) is not one, or ""."""
    text = selector.strip()
    if text.startswith("{") != text.endswith("}"):
        return f"unbalanced braces in {selector!r}"
    text = text.strip("{}").strip()
    if not text or _MATCHERS.fullmatch(text):
        return ""
    return f'{text!r} is not a list of label matchers (label="value", =~, != or !~)'


# What PromQL's regular expressions (RE2) refuse that Python's accept: checked after Python
# has compiled the pattern, so the syntax is otherwise sound.
_RE2_LACKS = {
    "(?=": "a lookahead",
    "(?!": "a negative lookahead",
    "(?<=": "a lookbehind",
    "(?<!": "a negative lookbehind",
    "(?P=": "a named backreference",
    "(?(": "a conditional group",
    "(?>": "an atomic group",
}


def _unsupported_by_re2(pattern: str) -> str:
    """The first construct of `pattern` that RE2 does not support, or ""."""
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            escaped = pattern[i + 1 : i + 2]
            if not in_class and escaped and escaped in "123456789":
                return f"a backreference (\\{escaped})"
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 1
            i += pattern.startswith("^", i)
            i += pattern.startswith("]", i)  # a "]" first in a class is literal
            continue
        elif c in "*+?}" and pattern.startswith("+", i + 1):
            return "a possessive quantifier"
        else:
            found = next((name for t, name in _RE2_LACKS.items() if pattern.startswith(t, i)), "")
            if found:
                return found
        i += 1
    return ""


def regex_problem(pattern: str) -> str:
    """Why `pattern` is not a regular expression that PromQL can match label values with,
    or "". PromQL's expressions are RE2: Python's syntax less a few constructs."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{pattern!r} is not a regular expression: {exc}"
    if any(c in pattern for c in "\n\r\0"):
        return "the expression contains a line break"
    lacking = _unsupported_by_re2(pattern)
    if lacking:
        return f"{pattern!r} uses {lacking}, which PromQL's regular expressions (RE2) lack"
    return ""


def kind_name(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def short(value: Any) -> str:
    """A value as it may appear in an error line: bounded however large or deep it is."""
    return short_repr(value)
