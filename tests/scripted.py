"""A source for unit tests that replays scripted observations or failures (the engine's
`Source` protocol, nothing read)."""

from __future__ import annotations

from exporter.model.observations import Observation


class Script:
    name = "prometheus"
    upstreams = ("prometheus",)
    gpu_upstream = "prometheus"
    reads = "queries"
    window = 300.0

    def __init__(self, *items: Observation | Exception) -> None:
        self.items = list(items)

    @property
    def requests_by_upstream(self) -> dict[str, int]:
        return {}

    def fetch(self) -> Observation:
        item = self.items.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        pass
