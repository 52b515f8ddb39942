"""The landing page at `/`: the per-model table, whether it is current and, when it is not,
why; the notes that explain surprising figures, and the assumptions behind every figure."""

from __future__ import annotations

import html

from exporter import PROG, __version__
from exporter.config import site_defaults_in_force
from exporter.engine import Engine, EngineState
from exporter.exposition.report import html_table

METHODOLOGY_PATH = "/methodology"
TROUBLESHOOTING_PATH = "/troubleshooting"
MAX_PROBLEMS = 20  # upstream problems listed on the page; the rest are counted


def landing_page(engine: Engine) -> str:
    state = engine.state
    stale = engine.is_stale(state)
    status, reasons = _status(engine, state, stale)
    return LANDING.format(
        version=html.escape(__version__),
        upstream=html.escape(engine.source.name),
        status=html.escape(status),
        reasons=reasons,
        banner=_nrp_banner(engine, state),
        refresh=max(5, round(engine.config.exporter.interval)),
        assumptions=html.escape(_assumptions(engine)),
        docs=_docs_link(engine.config.exporter.docs_url),
        troubleshooting=TROUBLESHOOTING_PATH,
        diagnose=DIAGNOSE,
        table=html_table(None if stale else state.snapshot, engine.settings),
        problems=_problems(state),
    )


DIAGNOSE = (
    f"<code>{PROG} diagnose</code>, run with this exporter's configuration and flags, checks "
    "what the figures need from the upstream, one line per check"
)

LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llm-carbon-exporter</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem;color:#222}}
table{{border-collapse:collapse;font-size:.9rem}}
th,td{{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}}
th:nth-child(-n+3),td:nth-child(-n+3),th:last-child,td:last-child{{text-align:left}}
h2{{font-size:1rem}}
.why,.problems{{font-size:.9rem}}
.reason{{background:#fff4e5;border-left:4px solid #e08a00;padding:.5rem 1rem}}
.banner{{background:#eef4ff;border-left:4px solid #3b6fd8;padding:.5rem 1rem}}
.assumptions{{color:#333;font-size:.9rem}}
.legend{{color:#555;font-size:.85rem;max-width:60rem}}
</style></head><body>
<h1>llm-carbon-exporter</h1>
<p>Energy and carbon per served LLM, with the context that explains the numbers.
Version {version}. Source: {upstream} (<span id="status">{status}</span>).</p>
{reasons}{banner}
<p class="assumptions">{assumptions}</p>
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a> &middot;
<a href="/readyz">/readyz</a> &middot; {docs} &middot;
<a href="{troubleshooting}">troubleshooting</a></p>
{table}
{problems}
<p class="legend">Figures missing or wrong? {diagnose}; the
<a href="{troubleshooting}">troubleshooting guide</a> goes from symptom to fix.</p>
</body></html>
"""


def _status(engine: Engine, state: EngineState, stale: bool) -> tuple[str, str]:
    """(status word, the reasons block): why figures are not current, in the upstream's
    words (the sources keep credentials out of them)."""
    if state.last_attempt_at is None:
        return "starting", ""
    if state.failure:
        lines = [f"{p.upstream}: {p.message}" for p in state.failure]
        why = "the last attempt to read the upstream failed"
    elif stale:
        since = state.last_success_at
        age = f"for {engine.clock() - since:.0f} s" if since is not None else "yet"
        lines = [f"no cycle has read the upstream {age}"]
        why = "figures are withdrawn"
    else:
        down = {u for u, ok in state.up.items() if not ok}
        lines = [f"{p.upstream}: {p.message}" for p in state.problems if p.upstream in down]
        if not lines:
            return "current", ""
        why = "the upstream answered without the series the figures need"
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    status = "current, with problems" if not (state.failure or stale) else "not current"
    block = (
        f'<div class="reason" id="reason"><p><b>{html.escape(why.capitalize())}:</b></p>'
        f"<ul>{items}</ul><p>{DIAGNOSE}; see the "
        f'<a href="{TROUBLESHOOTING_PATH}">troubleshooting guide</a>.</p></div>'
    )
    return status, block


def _nrp_banner(engine: Engine, state: EngineState) -> str:
    """Said when the embedded NRP grid mapping is in force and no node matched it: every
    node then counts in the NRP's default region, with the NRP's facility factors."""
    snapshot = state.snapshot
    in_force = site_defaults_in_force(engine.config)
    if snapshot is None or "grid.nodes" not in in_force or not snapshot.nodes:
        return ""
    if snapshot.unmapped_nodes < snapshot.nodes:
        return ""
    s = engine.settings
    facility = {
        "facility.pue": f"PUE {s.pue:g}",
        "facility.host_overhead": f"host overhead {s.host_overhead:g}",
    }
    also = " and ".join(text for key, text in facility.items() if key in in_force)
    text = (
        f"The embedded defaults describe the National Research Platform, and none of this "
        f"cluster's {snapshot.nodes} node(s) matched their grid.nodes patterns: every node counts "
        f"in the default region {s.node_regions.default}"
        + (f", with the NRP's {also}" if also else "")
        + ". Set grid.default_region, grid.nodes and facility for your site."
    )
    return f'<p class="banner" id="nrp-defaults">{html.escape(text)}</p>'


def _problems(state: EngineState) -> str:
    if not state.problems:
        return ""
    shown = state.problems[:MAX_PROBLEMS]
    items = "".join(f"<li>{html.escape(f'{p.upstream}: {p.message}')}</li>" for p in shown)
    more = len(state.problems) - len(shown)
    if more:
        items += f"<li>and {more} more (see the log)</li>"
    return (
        f'<details class="problems"><summary>{len(state.problems)} upstream problem(s) in the '
        f"last cycle</summary><ul>{items}</ul></details>"
    )


def _assumptions(engine: Engine) -> str:
    s = engine.settings
    share = s.preset_share(s.default_preset)
    live = engine.grid.upstreams if engine.grid is not None else ()
    grid = f"live ({', '.join(live)}, annual while stale)" if live else "annual"
    return (
        f"Assumptions: facility scope = GPU power x host overhead {s.host_overhead:g} x PUE "
        f"{s.pue:g}; location-based {grid} grid intensity by node (default region "
        f"{s.node_regions.default}); means over {engine.source.window:g} s; per-token figures "
        f"only at {s.min_tokens_per_second:g} tok/s or more; commercial estimates at the "
        f"{s.default_preset} preset's {100 * share:.1f} % prompt share."
    )


def _docs_link(url: str) -> str:
    """The methodology document: `exporter.docs_url` where set, else the copy this exporter
    serves itself (docs/methodology.md, packaged)."""
    return f'<a href="{html.escape(url or METHODOLOGY_PATH)}">methodology</a>'
