"""Reading Prometheus text exposition with prometheus-client's parser, keeping only the
families asked for. Pages of inference servers are large (histograms); dropping unwanted
lines before parsing is what keeps a sidecar cycle cheap.

The parser renames counters: `foo_total` declared as a counter comes back as family `foo`
with samples `foo_total`, and a counter declared without `_total` (DCGM's energy counter)
comes back with `_total` appended to its sample names. Names are therefore compared without
a trailing `_total`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.parser import text_string_to_metric_families

Row = tuple[str, dict[str, str], float]  # (name without _total, labels, value)


def base_name(name: str) -> str:
    return name.removesuffix("_total")


def _line_name(line: str) -> str:
    if line.startswith("#"):
        parts = line.split(None, 3)
        return parts[2] if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") else ""
    end = len(line)
    for stop in ("{", " ", "\t"):
        index = line.find(stop)
        if index != -1:
            end = min(end, index)
    return line[:end]


def filter_lines(text: str, wanted: frozenset[str]) -> str:
    """Only the HELP, TYPE and sample lines of the wanted families."""
    kept = [line for line in text.splitlines() if line and base_name(_line_name(line)) in wanted]
    return "\n".join(kept) + "\n" if kept else ""


def parse(text: str, names: Iterable[str]) -> Iterator[Row]:
    """Samples of the named metrics (names with or without `_total`). Raises ValueError on
    text the parser cannot read."""
    wanted = frozenset(base_name(n) for n in names)
    for family in text_string_to_metric_families(filter_lines(text, wanted)):
        for sample in family.samples:
            name = base_name(sample.name)
            if name in wanted:
                yield name, dict(sample.labels), float(sample.value)
