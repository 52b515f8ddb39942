"""The exporter's own /metrics page in Prometheus text format 0.0.4 and OpenMetrics 1.0, written
straight from rows of (label values, value).

prometheus_client's encoders build a Sample with a label dict per series and re-check every
name character by character on every render: about 12 µs per series, seconds per cycle at
thousands of models. Here each family's label names are sorted once and each label value is
escaped once per render. The output is byte for byte what prometheus_client writes for the
same families (tests compare the two) for every content type whose escaping leaves legal
names unchanged, which is all but `escaping=dots`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client.utils import floatToGoString as _float_to_go_string

# prometheus_client leaves this helper unannotated; its contract is float -> str.
floatToGoString: Callable[[float], str] = _float_to_go_string

Row = tuple[Sequence[str], float]


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class Encoded:
    """Families with their sample lines written once: the lines are the same in both formats
    (counter samples end in `_total` in both), only the family headers and the end differ, so
    one render serves text and OpenMetrics alike."""

    def __init__(
        self, families: Iterable[tuple[str, str, str, Sequence[str], Sequence[Row]]]
    ) -> None:
        """Families as (name without `_total`, type gauge|counter, HELP, label names, rows)."""
        self._families: list[tuple[str, str, str, str]] = []  # name, kind, HELP, sample lines
        escaped: dict[str, str] = {}
        for name, kind, help_text, labels, rows in families:
            sample = f"{name}_total" if kind == "counter" else name
            order = sorted(range(len(labels)), key=lambda i: labels[i])
            keys = [(i, f'{labels[i]}="') for i in order]
            out: list[str] = []
            for values, value in rows:
                if keys:
                    parts = []
                    for i, key in keys:
                        text = values[i]
                        esc = escaped.get(text)
                        if esc is None:
                            esc = escaped[text] = escape_label_value(text)
                        parts.append(key + esc + '"')
                    out.append(f"{sample}{{{','.join(parts)}}} {floatToGoString(value)}\n")
                else:
                    out.append(f"{sample} {floatToGoString(value)}\n")
            self._families.append((name, kind, help_text, "".join(out)))

    def body(self, openmetrics: bool) -> bytes:
        """The page in OpenMetrics 1.0 or, if not, text format 0.0.4."""
        out: list[str] = []
        for name, kind, help_text, lines in self._families:
            header = f"{name}_total" if kind == "counter" and not openmetrics else name
            doc = help_text.replace("\\", r"\\").replace("\n", r"\n")
            if openmetrics:
                doc = doc.replace('"', r"\"")
            out.append(f"# HELP {header} {doc}\n# TYPE {header} {kind}\n")
            out.append(lines)
        if openmetrics:
            out.append("# EOF\n")
        return "".join(out).encode("utf-8")
