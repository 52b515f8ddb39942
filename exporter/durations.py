"""Durations as they appear in config and flags ("30s", "5m", "1h30m", "7d", or a number of
seconds) and the PromQL spelling of a window."""

from __future__ import annotations

import re

from exporter.text import short_repr

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """Seconds in `value`; raises ValueError with a message fit for one error line."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {short_repr(value)} (use e.g. 30s, 5m, 1h, 7d)")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"invalid duration {short_repr(value)} (use e.g. 30s, 5m, 1h, 7d)"
                ) from None
    else:
        raise ValueError(f"invalid duration {short_repr(value)} (use e.g. 30s, 5m, 1h, 7d)")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"duration must be positive, got {short_repr(value)}")
    return seconds


def promql_duration(seconds: float) -> str:
    """A PromQL range such as `300s`; sub-second windows are not meaningful upstream."""
    whole = round(seconds)
    if whole < 1:
        raise ValueError(f"window must be at least 1s, got {seconds}s")
    return f"{whole}s"
