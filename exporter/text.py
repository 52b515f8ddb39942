"""Text that leaves the process (log lines, error messages): on one line, without secrets."""

from __future__ import annotations

import re


def one_line(text: str) -> str:
    """`text` on one line: upstream error texts may contain line breaks."""
    return " ".join(text.split())


def redact(text: str) -> str:
    """`text` without the user:password part of any URL in it."""
    return re.sub(r"//[^/@\s]*@", "//<redacted>@", text)
