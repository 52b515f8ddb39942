"""Human and machine views of one snapshot: the table `report` prints (and the landing page
shows), and the JSON document `report --format json` prints."""

from __future__ import annotations

import html
from typing import Any

from exporter.exposition.catalogue import json_model
from exporter.exposition.notes import why
from exporter.model.figures import ModelFigures
from exporter.model.settings import FigureSettings
from exporter.model.snapshot import Snapshot

COLUMNS = (
    ("namespace", "namespace"),
    ("model", "model"),
    ("region", "region"),
    ("gpus", "GPUs"),
    ("power", "power W"),
    ("tps", "tok/s"),
    ("prompt", "prompt %"),
    ("jpt", "J/tok"),
    ("jpt_marginal", "J/tok marg."),
    ("co2", "gCO2/tok"),
    ("wh_request", "Wh/req"),
    ("sci", "SCI g/tok"),
    ("nrp_mid", "nrp mid"),
    ("scale_mid", "scale mid"),
    ("notes", "notes"),
)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def scale_baseline(f: ModelFigures) -> str | None:
    size = f.info_value("size_class")
    return size if any(key[0] == size for key in f.commercial) else None


def row(f: ModelFigures) -> dict[str, str]:
    """One model as display strings, keyed by COLUMNS."""
    notes = []
    if not f.active:
        notes.append("inactive")
    if f.underutilized:
        notes.append("underutilized")
    source = f.info_value("power_source")
    if source in ("missing", "incomplete"):
        notes.append(f"power {source}")
    elif source != "energy_counter":  # the preferred reading goes unsaid
        notes.append(f"power from {'the power gauge' if source == 'power_gauge' else source}")
    if f.info_value("attribution") != "exclusive":
        notes.append(f.info_value("attribution"))
    scale = scale_baseline(f)
    return {
        "namespace": f.namespace,
        "model": f.model,
        "region": ",".join(f.regions) or "-",
        "gpus": "-" if f.gpus is None else str(f.gpus),
        "power": _fmt(f.power_w.get("gpu"), ".0f"),
        "tps": _fmt(f.total_tokens_per_second, ".0f"),
        "prompt": _fmt(None if f.prompt_token_ratio is None else 100 * f.prompt_token_ratio, ".1f"),
        "jpt": _fmt(f.joules_per_token.get(("gpu", "amortized")), ".2f"),
        "jpt_marginal": _fmt(f.joules_per_token.get(("gpu", "marginal")), ".2f"),
        "co2": _fmt(f.co2_grams_per_token.get(("gpu", "location")), ".2e"),
        "wh_request": _fmt(wh_per_request(f), ".3g"),
        "sci": _fmt(f.footprint.sci_grams_per_token, ".2e"),
        "nrp_mid": _fmt(f.commercial.get(("nrp-envelope", "mid", "preset")), ".2f"),
        "scale_mid": _fmt(f.commercial.get((scale, "mid", "preset")) if scale else None, ".2f"),
        "notes": ", ".join(notes),
    }


LEGEND = (
    "region: the grid region(s) of the model's nodes. "
    "Power: DCGM's energy counter unless a note says otherwise. "
    "J/tok: GPU power / (prompt + generation) tokens per second, idle included; marg.: above "
    "the idle floor. gCO2/tok: GPU scope, location basis (live where configured). Wh/req: "
    "facility energy per finished request, to read beside published per-prompt figures (Google: "
    "0.24 Wh for a median Gemini prompt). SCI g/tok: facility CO2 on the location basis plus the "
    "hardware's embodied emissions, per token. nrp mid / "
    "scale mid: commercial mid estimate (facility scope) of the nrp-envelope and of the "
    "size-matched baseline, at the preset's prompt share."
)


NUMERIC = {
    "gpus",
    "power",
    "tps",
    "prompt",
    "jpt",
    "jpt_marginal",
    "co2",
    "wh_request",
    "sci",
    "nrp_mid",
    "scale_mid",
}


def wh_per_request(f: ModelFigures) -> float | None:
    joules = f.per_request.joules_per_request.get(("facility", "amortized"))
    return None if joules is None else joules / 3600


def notes_of(snapshot: Snapshot, settings: FigureSettings) -> list[tuple[str, list[str]]]:
    """(model, its notes) for every model with a figure that needs explaining."""
    notes = [(f.model, why(f, settings)) for f in snapshot.models]
    return [(model, said) for model, said in notes if said]


def table(snapshot: Snapshot, settings: FigureSettings, legend: bool = True) -> str:
    """The per-model table as text, the notes that explain it, and (by default) the legend."""
    rows = [row(f) for f in snapshot.models]
    headers = [title for _, title in COLUMNS]
    widths = [max([len(title), *(len(r[key]) for r in rows)]) for (key, title) in COLUMNS]

    def line(cells: list[str]) -> str:
        out = []
        for (key, _), cell, width in zip(COLUMNS, cells, widths, strict=True):
            out.append(cell.rjust(width) if key in NUMERIC else cell.ljust(width))
        return "  ".join(out).rstrip()

    lines = [line(headers), line(["-" * w for w in widths])]
    lines += [line([r[key] for key, _ in COLUMNS]) for r in rows]
    if not rows:
        lines.append("(no served models found upstream)")
    notes = notes_of(snapshot, settings)
    if notes:
        lines += ["", "Why:"] + [f"  {model}: {'; '.join(said)}" for model, said in notes]
    if legend:
        lines += ["", LEGEND]
    return "\n".join(lines)


def html_table(snapshot: Snapshot | None, settings: FigureSettings) -> str:
    if snapshot is None:
        return "<p>No figures yet: waiting for the first successful cycle.</p>"
    rows = [row(f) for f in snapshot.models]
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in COLUMNS)
    body = (
        "".join(
            "<tr>" + "".join(f"<td>{html.escape(r[key])}</td>" for key, _ in COLUMNS) + "</tr>"
            for r in rows
        )
        or f'<tr><td colspan="{len(COLUMNS)}">No served models found upstream.</td></tr>'
    )
    notes = "".join(
        f"<li><b>{html.escape(model)}</b>: {html.escape('; '.join(said))}</li>"
        for model, said in notes_of(snapshot, settings)
    )
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        + (f'<h2>Why</h2><ul class="why">{notes}</ul>' if notes else "")
        + f"<p class=legend>{html.escape(LEGEND)}</p>"
    )


def to_dict(snapshot: Snapshot, settings: FigureSettings) -> dict[str, Any]:
    """The JSON report: the assumptions, and every model's per-model metrics (see
    `catalogue.json_model`)."""
    return {
        "taken_at": snapshot.taken_at,
        "assumptions": {
            "pue": settings.pue,
            "host_overhead": settings.host_overhead,
            "min_tokens_per_second": settings.min_tokens_per_second,
            "default_region": settings.node_regions.default,
            "default_preset": settings.default_preset,
        },
        "models": [json_model(f, snapshot) for f in snapshot.models],
    }
