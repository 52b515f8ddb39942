"""The inference servers whose token counters the exporter knows by name: which server a
token metric belongs to, and the names to look for when the configured ones are missing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Server:
    name: str  # the `upstream` label value and the log name
    title: str
    prompt_tokens: str
    generation_tokens: str
    prefixes: tuple[str, ...]


SERVERS = (
    Server("vllm", "vLLM", "vllm:prompt_tokens_total", "vllm:generation_tokens_total", ("vllm:",)),
    Server(
        "sglang",
        "SGLang",
        "sglang:prompt_tokens_total",
        "sglang:generation_tokens_total",
        ("sglang:", "sglang_"),
    ),
    Server(
        "tgi",
        "TGI",
        "tgi_request_input_length_sum",
        "tgi_request_generated_tokens_sum",
        ("tgi_",),
    ),
)


def server_name(token_metric: str) -> str:
    """The inference server a token metric belongs to, by its prefix."""
    for server in SERVERS:
        if token_metric.startswith(server.prefixes):
            return server.name
    return "inference_server"


def server_title(token_metric: str) -> str:
    """The server's name as people write it (vLLM, SGLang, TGI), by its token metric."""
    name = server_name(token_metric)
    return next((s.title for s in SERVERS if s.name == name), "inference server")
