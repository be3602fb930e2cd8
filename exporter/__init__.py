"""llm-token-exporter: per-request LLM serving metrics from vLLM's OTLP spans, served to Prometheus."""

__version__ = "0.1.0"
