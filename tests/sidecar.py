"""A sidecar (direct mode) for pod ns/p reading fixed pages from a `StaticPages` server."""

from __future__ import annotations

from exporter.config import Config, build, default_document, merge
from tests.harness import StaticPages

# One L40S GPU held by pod ns/p, as dcgm-exporter labels it.
GPU = 'gpu="0",UUID="GPU-9",modelName="NVIDIA L40S",Hostname="n.ucsd.edu",pod="p",namespace="ns"'


def sidecar(server: StaticPages, page: str, **settings: object) -> Config:
    """A sidecar for pod ns/p reading `page` and /dcgm from `server`."""
    pod = {"namespace": "ns", "pod": "p", "vllm_urls": [f"{server.base}{page}"]}
    document = {"source": "direct", "direct": {"dcgm_urls": [f"{server.base}/dcgm"], "pods": [pod]}}
    return build(merge(default_document(), {**document, **settings}))
