"""SLO burn-rate and cause alerts, fleet recording rules, Alertmanager routing and their tests, generated.

`llm-token-exporter alerts --slo-spec exporter/alerts/slos.yaml --out alerts` writes everything under `alerts/`; a
test regenerates it and compares byte for byte. The spec ships in the package, so the demo generates its rules from
it wherever the package is installed.
"""
