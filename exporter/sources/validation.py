"""What a sample must be before it is used: checks shared by the sources."""

from __future__ import annotations

import math


def is_count(value: float) -> bool:
    """A finite, non-negative whole number: what a GPU count must be."""
    return is_valid_value(value) and value == int(value)


def is_valid_value(value: float) -> bool:
    """Finite and not negative: what a power or rate sample must be."""
    return math.isfinite(value) and value >= 0


def describe_invalid(value: float) -> str:
    """What is wrong with a sample that is not valid, in words that stay the same while the
    fault lasts (a log line is written once per distinct message)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "negative"
