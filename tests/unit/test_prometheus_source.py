"""The Prometheus source on answers given in memory: what it makes of tagged rows when the
follow-up that would explain them fails."""

from __future__ import annotations

from exporter.config import build, default_document, merge
from exporter.model.problems import HTTP_STATUS, UpstreamError
from exporter.sources.prometheus import PrometheusSource
from exporter.sources.prometheus_api import Sample
from exporter.sources.promql import PHASE, RESETS

H100 = "NVIDIA H100 80GB HBM3"
POD = {"lce_namespace": "ns", "lce_pod": "vllm-0"}
GPU = {**POD, "lce_node": "gpu-a.sdsc.optiputer.net", "lce_gpu_model": H100}
TOKENS = {**POD, "lce_model": "org/model"}


class Answers:
    """The query API as the source calls it: per-cycle queries answered by name, anything
    else (the follow-up, the look-back) failing with HTTP 500."""

    requests_made = 0

    def __init__(self, source: PrometheusSource, rows: dict[str, list[Sample]]) -> None:
        self.names = {promql: name for name, promql in source.queries.per_cycle().items()}
        self.rows = rows

    def query(self, promql: str, at: float) -> list[Sample]:
        name = self.names.get(promql)
        if name is None:
            raise UpstreamError(HTTP_STATUS, "HTTP 500 from the stand-in", status=500)
        return list(self.rows.get(name, []))

    def close(self) -> None:
        pass


def source_answering(rows: dict[str, list[Sample]]) -> PrometheusSource:
    config = build(merge(default_document(), {"prometheus": {"url": "http://127.0.0.1:9"}}))
    source = PrometheusSource(config, clock=lambda: 1_700_000_000.0)
    source.client = Answers(source, rows)  # type: ignore[assignment]
    return source


def steady_pod(prompt: float = 333.0) -> dict[str, list[Sample]]:
    return {
        "power_energy": [Sample(GPU, 400.0)],
        "gpu_count": [Sample({**GPU, "lce_host": GPU["lce_node"]}, 1.0)],
        "tokens": [
            Sample({**TOKENS, PHASE: "prompt"}, prompt),
            Sample({**TOKENS, PHASE: "generation"}, 50.0),
        ],
    }


def test_tokens_are_kept_when_no_counter_went_backwards() -> None:
    observation = source_answering(steady_pod()).fetch()
    [tokens] = observation.tokens
    assert (tokens.prompt_tps, tokens.generation_tps) == (333.0, 50.0)


def test_a_failed_follow_up_withholds_a_token_counter_that_went_backwards() -> None:
    # The prompt counter went backwards (the gate row); the follow-up that tells a restart
    # from a step back fails: the rate is not trusted, the model is left out this cycle.
    rows = steady_pod()
    rows["tokens"].append(Sample({**TOKENS, PHASE: "prompt", RESETS: "1"}, 1.0))
    observation = source_answering(rows).fetch()
    assert observation.tokens == ()
    messages = [p.message for p in observation.problems]
    assert any("query follow_up" in m for m in messages), messages
    assert any("prompt: a counter stepped back" in m for m in messages), messages
