"""The built-in GPU and model tables: real names find the right entry, near names find none
(an unknown GPU or model gives no MFU, never a wrong one), and the docs list every entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.model.catalog import Catalog, builtin_gpu_entries, builtin_model_entries

DOCS = Path(__file__).resolve().parents[2] / "docs" / "methodology.md"

# dcgm-exporter's modelName is NVML's product name.
GPU_NAMES = {
    "NVIDIA H100 80GB HBM3": "H100 SXM",
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H100 NVL": "H100 NVL",
    "NVIDIA H200": "H200 SXM",
    "NVIDIA H200 NVL": "H200 NVL",
    "NVIDIA GH200 480GB": "GH200",
    "NVIDIA B200": "B200",
    "NVIDIA A100-SXM4-80GB": "A100 80GB SXM4",
    "NVIDIA A100-SXM4-40GB": "A100 40GB SXM4",
    "NVIDIA A100-PCIE-40GB": "A100 40GB PCIe",
    "NVIDIA A100 80GB PCIe": "A100 80GB PCIe",
    "NVIDIA L40S": "L40S",
    "NVIDIA L40": "L40",
    "NVIDIA L4": "L4",
    "NVIDIA A40": "A40",
    "NVIDIA A10": "A10",
    "NVIDIA RTX A6000": "RTX A6000",
    "Quadro RTX 8000": "Quadro RTX 8000",
    "Tesla V100-SXM2-32GB": "V100 SXM2",
    "Tesla V100-PCIE-16GB": "V100 PCIe",
    "NVIDIA A30": "A30",
}
NOT_IN_THE_GPU_TABLE = [
    "NVIDIA RTX A4000",
    "NVIDIA RTX A4500",
    "NVIDIA GB200",
    "NVIDIA A10G",
    "NVIDIA H20",
    "NVIDIA H800",
    "NVIDIA A30X",
    "NVIDIA RTX 6000 Ada Generation",
    "NVIDIA GeForce RTX 4090",
]

# served name -> (total B, active B, precision)
MODEL_NAMES = {
    "zai-org/GLM-4.7-FP8": (355, 32, "fp8"),
    "zai-org/GLM-4.6": (355, 32, "bf16"),
    "zai-org/GLM-4.5-Air-FP8": (106, 12, "fp8"),
    "zai-org/GLM-4.5V": (106, 12, "bf16"),
    "zai-org/GLM-4.6V-FP8": (106, 12, "fp8"),
    "zai-org/GLM-4.6V-Flash": (9, 9, "bf16"),
    "zai-org/GLM-4.7-Flash": (30, 3, "bf16"),
    "Qwen/Qwen3.5-397B-A17B-FP8": (397, 17, "fp8"),
    "Qwen/Qwen3-235B-A22B-Instruct-2507": (235, 22, "bf16"),
    "Qwen/Qwen3-30B-A3B": (30.5, 3.3, "bf16"),
    "Qwen/Qwen3-Coder-30B-A3B-Instruct": (30.5, 3.3, "bf16"),
    "openai/gpt-oss-120b": (117, 5.1, "bf16"),
    "moonshotai/Kimi-K2.5": (1040, 32, "bf16"),
    "moonshotai/Kimi-K2-Thinking": (1040, 32, "bf16"),
    "moonshotai/Kimi-K2-Instruct-0905": (1040, 32, "fp8"),
    "MiniMaxAI/MiniMax-M2.5": (230, 10, "fp8"),
    "deepseek-ai/DeepSeek-R1-0528": (671, 37, "fp8"),
    "deepseek-ai/DeepSeek-V3.2": (671, 37, "fp8"),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": (1.78, 1.78, "bf16"),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": (70.6, 70.6, "bf16"),
    "RedHatAI/DeepSeek-R1-Distill-Qwen-32B-FP8-dynamic": (32.8, 32.8, "fp8"),
    "meta-llama/Llama-3.1-405B-Instruct-FP8": (405, 405, "fp8"),
    "nvidia/Llama-3.3-70B-Instruct-FP8": (70.6, 70.6, "fp8"),
    "meta-llama/Llama-3.1-8B-Instruct": (8, 8, "bf16"),
    "mistralai/Mistral-Large-3-675B-Instruct-2512": (675, 41, "bf16"),
    "mistralai/Mistral-Large-Instruct-2411": (123, 123, "bf16"),
}
NOT_IN_THE_MODEL_TABLE = [
    "my-finetune",
    "google/gemma-3-27b-it",
    "Qwen/Qwen2.5-72B-Instruct",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-3B",  # no such distillation: no entry, not the 671B
]


@pytest.mark.parametrize(("name", "expected"), GPU_NAMES.items())
def test_gpu_names_find_their_entry(name: str, expected: str) -> None:
    spec = Catalog([], []).gpu(name)
    assert spec is not None and spec.name == expected


@pytest.mark.parametrize("name", NOT_IN_THE_GPU_TABLE)
def test_near_gpu_names_find_no_entry(name: str) -> None:
    assert Catalog([], []).gpu(name) is None


@pytest.mark.parametrize(("name", "expected"), MODEL_NAMES.items())
def test_model_names_find_their_entry(name: str, expected: tuple[float, float, str]) -> None:
    spec = Catalog([], []).model(name)
    assert spec is not None
    assert (spec.total_params_b, spec.active_params_b, spec.precision) == expected


@pytest.mark.parametrize("name", NOT_IN_THE_MODEL_TABLE)
def test_unknown_models_find_no_entry(name: str) -> None:
    assert Catalog([], []).model(name) is None


def test_a_configured_precision_wins_over_the_name() -> None:
    entry = {"pattern": "house-model", "total_params_b": 8, "active_params_b": 8}
    catalog = Catalog([], [{**entry, "precision": "bf16"}])
    assert catalog.model("house-model-FP8").precision == "bf16"  # type: ignore[union-attr]
    assert Catalog([], [entry]).model("house-model-FP8").precision == "fp8"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "entries", [builtin_gpu_entries(), builtin_model_entries()], ids=["gpus", "models"]
)
def test_docs_list_every_entry(entries: tuple[dict, ...]) -> None:
    text = DOCS.read_text("utf-8")
    for entry in entries:
        assert f"| `{entry['pattern'].replace('|', chr(92) + '|')}` |" in text, entry["pattern"]
