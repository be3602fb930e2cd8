"""Per-request core: span records, the pipeline worker, tenant join, dedup and aggregation, its collector."""
