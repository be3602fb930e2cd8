"""Generated Grafana dashboards: one module per dashboard, built through `builder` (grafanalib underneath), whose
legacy JSON `model` turns into the model Grafana 11 and 12 save.

`generate.files()` renders every dashboard to JSON; `llm-token-exporter dashboards --out DIR` writes them and
`preview` draws them as PNGs from a Prometheus, for people without Grafana.
"""
