"""llm-carbon-exporter: per-model energy and carbon metrics for LLM serving."""

__version__ = "0.1.0"
PROG = "llm-carbon-exporter"
