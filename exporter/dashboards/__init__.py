"""Generated Grafana dashboards: one module per dashboard, built through `builder` (grafanalib underneath).

`generate.files()` renders every dashboard to JSON; `llm-token-exporter dashboards --out DIR` writes them and
`preview` draws them as PNGs from a Prometheus, for people without Grafana.
"""
