"""The landing page explains itself: why figures are not current, the grid region of each
model, why a figure surprises, and when the embedded NRP defaults describe the wrong site.
(Its rendering in a real browser: tests/integration/test_landing_page.py.)"""

from __future__ import annotations

import html
import re
import time

from exporter.config import load
from exporter.engine import Engine
from exporter.exposition.landing import landing_page
from exporter.model.observations import ENERGY_COUNTER, Observation, PodGpus, PodTokens
from exporter.model.problems import CONNECT, INVALID_VALUE, Problem, UpstreamError
from tests.scripted import Script

SDSC = "gpu-a.sdsc.optiputer.net"
ELSEWHERE = "gpu-7.example.org"
H200 = "NVIDIA H200"


def kimi(node: str = SDSC, problems: tuple[Problem, ...] = (), watts: float = 928.0) -> Observation:
    """Kimi-K2.5 as the NRP review saw it: 928 W on 8 x H200 for 158 tok/s."""
    return Observation(
        time.time(),
        (PodGpus("nrp-llm", "kimi", node, H200, 8, watts, ENERGY_COUNTER),),
        (PodTokens("nrp-llm", "kimi", "moonshotai/Kimi-K2.5", 150.0, 8.0),),
        problems=problems,
    )


def raw(*items: object, **overrides: object) -> str:
    engine = Engine(load(overrides=overrides), Script(*items))
    for _ in items:
        engine.run_cycle()
    return landing_page(engine)


def page(*items: object, **overrides: object) -> str:
    """The page's text, on one line."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", raw(*items, **overrides))).split())


def test_a_failed_cycle_says_why_and_points_to_diagnose() -> None:
    refused = UpstreamError(CONNECT, "cannot connect to http://prom:9090/api/v1/query: refused")
    assert '<span id="status">not current</span>' in raw(kimi(), refused)
    text = page(kimi(), refused)
    assert "prometheus: cannot connect to http://prom:9090/api/v1/query: refused" in text
    assert "llm-carbon-exporter diagnose" in text and "troubleshooting" in text


def test_a_current_page_has_no_reason_block_and_lists_the_cycles_problems() -> None:
    bad = Problem("prometheus", INVALID_VALUE, "query busy: NaN for nrp-llm/kimi")
    assert '<span id="status">current</span>' in raw(kimi(problems=(bad,)))
    text = page(kimi(problems=(bad,)))
    assert "the last attempt" not in text
    assert "1 upstream problem(s) in the last cycle" in text and "NaN for nrp-llm/kimi" in text


def test_each_model_shows_its_grid_region_and_why_its_figures_surprise() -> None:
    text = page(kimi())
    assert "region" in text and "CAMX" in text
    # 8 x 127 W loaded idle from the GPU table is above the 928 W measured.
    assert "J/tok marg. 0: its idle floor, 1016 W (GPU table), is at or above its 928 W" in text
    assert "underutilized: its idle floor is at or above its power" in text
    # Drawing more, the floor is a share of the power; a second cycle at the same throughput
    # reaches the observed peak, which says nothing of what the GPUs could do.
    text = page(kimi(watts=1600.0), kimi(watts=1600.0))
    assert "J/tok marg. 0" not in text and "its idle floor is 64% of its power" in text
    assert "utilization 1.00: capacity is its own highest throughput seen so far" in text


def test_the_nrp_defaults_outside_the_nrp_raise_a_banner() -> None:
    banner = "The embedded defaults describe the National Research Platform"
    outside = page(kimi(ELSEWHERE))
    assert banner in outside and "default region CAMX, with the NRP's PUE 1.4" in outside
    assert banner not in page(kimi(SDSC))  # at the NRP, its defaults fit
    assert banner not in page(kimi(ELSEWHERE), **{"grid.nodes": [], "grid.default_region": "US"})
