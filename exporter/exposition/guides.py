"""The guides that ship inside the package (docs/<name>.md of the source, linked into
exporter/docs/): served at /methodology and /troubleshooting, printed by `docs`, so a pip
install or a container has them without the source tree."""

from __future__ import annotations

from functools import cache
from importlib import resources

from exporter import PROG, __version__

# Each packaged guide: what an operator opens it for.
GUIDES = {
    "troubleshooting": "symptom, cause, the diagnose line that finds it, and the fix",
    "configuration": "every configuration key, its default and the flag or variable that sets it",
    "metrics": "every metric the exporter serves, with its labels and how it is computed",
    "methodology": "every formula and default, with its sources",
}


@cache
def packaged(topic: str) -> bytes:
    """docs/<topic>.md as packaged, under a line that says where its relative links lead."""
    note = (
        f"<!-- docs/{topic}.md of llm-carbon-exporter {__version__}, as packaged: its relative "
        "links name files in the docs/ folder of the exporter's source. -->\n\n"
    )
    return note.encode() + resources.files("exporter").joinpath(f"docs/{topic}.md").read_bytes()


def text(topic: str) -> str:
    """The guide `topic` (a key of GUIDES) as text."""
    return packaged(topic).decode("utf-8")


def listing() -> str:
    """The guides, one line each, and how to print one."""
    width = max(map(len, GUIDES))
    lines = [f"  {name.ljust(width)}  {what}" for name, what in GUIDES.items()]
    return "\n".join([f"Guides ({PROG} docs TOPIC prints one, in Markdown):", *lines])
