"""vLLM's own /metrics: the parser, the scraper, per-instance state, and the llm_engine_* collector."""
