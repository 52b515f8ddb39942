"""Reading exposition text with prometheus-client's parser: its renames, and the line filter."""

from __future__ import annotations

import pytest

from exporter.demo.nrp import nrp_cluster
from exporter.demo.simulation import page, targets
from exporter.sources.page_parser import filter_lines, parse

DCGM = """# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).
# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="GPU-1",pod="p"} 126272101025
# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-1",pod="p"} 512.345000
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-1",pod="p"} 70000
"""

VLLM = """# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 1.873442e+06
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7640912e+09
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.025",model_name="m"} 388812.0
"""

TGI = """# TYPE tgi_request_input_length histogram
tgi_request_input_length_bucket{le="10"} 3
tgi_request_input_length_sum 12345
tgi_request_input_length_count 40
# TYPE tgi_request_generated_tokens histogram
tgi_request_generated_tokens_sum 678
"""


def test_counter_without_total_is_matched_despite_the_parser_renaming_it() -> None:
    rows = list(parse(DCGM, ["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_POWER_USAGE"]))
    assert rows == [
        (
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            {"gpu": "0", "UUID": "GPU-1", "pod": "p"},
            126272101025.0,
        ),
        ("DCGM_FI_DEV_POWER_USAGE", {"gpu": "0", "UUID": "GPU-1", "pod": "p"}, 512.345),
    ]


def test_counter_with_total_and_created_lines() -> None:
    rows = list(parse(VLLM, ["vllm:prompt_tokens_total"]))
    assert rows == [("vllm:prompt_tokens", {"engine": "0", "model_name": "m"}, 1873442.0)]


def test_histogram_sums_serve_as_token_counters() -> None:
    rows = list(parse(TGI, ["tgi_request_input_length_sum", "tgi_request_generated_tokens_sum"]))
    assert [(name, value) for name, _, value in rows] == [
        ("tgi_request_input_length_sum", 12345.0),
        ("tgi_request_generated_tokens_sum", 678.0),
    ]


def test_filter_keeps_only_wanted_families() -> None:
    kept = filter_lines(DCGM + VLLM, frozenset({"DCGM_FI_DEV_POWER_USAGE"}))
    assert kept.count("\n") == 3 and "FB_USED" not in kept and "vllm" not in kept


def test_garbage_is_an_error() -> None:
    with pytest.raises(ValueError):
        list(parse('DCGM_FI_DEV_POWER_USAGE{gpu="0" 1\n', ["DCGM_FI_DEV_POWER_USAGE"]))


def test_simulated_pages_round_trip() -> None:
    cluster = nrp_cluster()
    for target in targets(cluster):
        text = page(cluster, target, 1.8e9)
        names = ["vllm:prompt_tokens_total", "DCGM_FI_DEV_POWER_USAGE"]
        assert list(parse(text, names)), target.path
