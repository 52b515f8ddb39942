"""The landing page at `/`: the per-model table, whether it is current, and the assumptions
behind every figure."""

from __future__ import annotations

import html

from exporter import __version__
from exporter.engine import Engine
from exporter.exposition.report import html_table

METHODOLOGY_PATH = "/methodology"


def landing_page(engine: Engine) -> str:
    state = engine.state
    stale = engine.is_stale(state)
    return LANDING.format(
        version=html.escape(__version__),
        upstream=html.escape(engine.source.name),
        status="current" if state.last_cycle_ok and not stale else "not current",
        refresh=max(5, round(engine.config.exporter.interval)),
        assumptions=html.escape(_assumptions(engine)),
        docs=_docs_link(engine.config.exporter.docs_url),
        table=html_table(None if stale else state.snapshot),
    )


LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llm-carbon-exporter</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem;color:#222}}
table{{border-collapse:collapse;font-size:.9rem}}
th,td{{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}}
th:nth-child(-n+2),td:nth-child(-n+2),th:last-child,td:last-child{{text-align:left}}
.assumptions{{color:#333;font-size:.9rem}}
.legend{{color:#555;font-size:.85rem;max-width:60rem}}
</style></head><body>
<h1>llm-carbon-exporter</h1>
<p>Energy and carbon per served LLM, with the context that explains the numbers.
Version {version}. Source: {upstream} ({status}).</p>
<p class="assumptions">{assumptions}</p>
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a> &middot;
<a href="/readyz">/readyz</a> &middot; {docs}</p>
{table}
</body></html>
"""


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
