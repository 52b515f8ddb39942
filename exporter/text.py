"""Text that leaves the process (log lines, error messages): on one line, without secrets."""

from __future__ import annotations

import re
import reprlib


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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def plural(count: int, word: str, words: str = "") -> str:
    """`count` and the word in its number: "1 GPU", "3 GPUs"."""
    return f"{count} {word if count == 1 else words or word + 's'}"


def short_repr(value: object, limit: int = 40) -> str:
    """A value as it may appear in a message: bounded however large or deep it is."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
