"""Text that leaves the process (log lines, error messages): on one line, without secrets."""

from __future__ import annotations

import re


def one_line(text: str) -> str:
    """`text` on one line: upstream error texts may contain line breaks."""
    return " ".join(text.split())


_SECRET_PARAMETER = re.compile(
    r"([?&](?:[\w.-]*(?:token|key|secret|password|passwd|auth|signature|sig))=)[^&#\s'\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` without the user:password part of any URL in it, nor the values of query
    parameters named like credentials (token, key, secret, password, auth, signature)."""
    text = re.sub(r"//[^/@\s]*@", "//<redacted>@", text)
    return _SECRET_PARAMETER.sub(r"\1<redacted>", text)
