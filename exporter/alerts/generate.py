"""Every generated file, as text keyed by its path under the output directory. Pure: same spec, same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.alerts import causes, docs, fleet, routing, rules, sli_tests, tests_gen, timescale
from exporter.alerts.spec import AlertSpec
from exporter.alerts.testfile import render
from exporter.alerts.windows import DEFAULT_TIERS
from exporter.alerts.yamlout import PREFIX, dump, header

RULES_DIR, TESTS_DIR = "rules", "tests"
EXPORTER_SETTINGS = "exporter-settings.yaml"


def generate(spec: AlertSpec, spec_name: str) -> dict[str, str]:
    """{relative path: text} for the rule files, their promtool tests, alertmanager.yaml and README.md.

    A time-compressed spec (time_scale != 1, tests and demos only) gets compressed rules and Alertmanager timers
    and no promtool tests (those are written for real time)."""
    if spec.time_scale != 1:
        return _compressed(spec, spec_name)
    head = header(spec_name)
    files: dict[str, str] = {}
    for slo in spec.slos:
        files[f"{RULES_DIR}/{rules.rule_file_name(slo)}"] = head + dump(rules.rule_file(spec, slo))
        for tier in DEFAULT_TIERS:
            path = f"{TESTS_DIR}/slo-{slo.name}-{tier.long}.test.yaml"
            files[path] = tests_gen.tier_file(spec, spec_name, slo, tier)
        files[f"{TESTS_DIR}/slo-{slo.name}-sli.test.yaml"] = sli_tests.sli_file(spec, spec_name, slo)
    files[f"{RULES_DIR}/causes.rules.yaml"] = head + dump(causes.rule_file(spec))
    files[f"{TESTS_DIR}/causes.test.yaml"] = render(
        spec_name, ["../rules/causes.rules.yaml"], 60, [causes.GROUP], causes.test_groups(spec)
    )
    files[f"{RULES_DIR}/fleet.rules.yaml"] = head + dump(fleet.rule_file())
    files[f"{TESTS_DIR}/fleet.test.yaml"] = render(
        spec_name, ["../rules/fleet.rules.yaml"], 60, [fleet.GROUP], fleet.test_groups()
    )
    files["alertmanager.yaml"] = head + dump(routing.config(spec))
    files[EXPORTER_SETTINGS] = head + dump(exporter_settings(spec))
    files["README.md"] = docs.readme(spec, spec_name)
    return dict(sorted(files.items()))


def exporter_settings(spec: AlertSpec) -> dict[str, Any]:
    """What the exporters must run with for these rules: every latency SLO threshold among its metric's bucket
    edges (the Helm chart puts this into the exporter's config, so the spec and the exporter never disagree)."""
    thresholds: dict[str, set[float]] = {}
    for slo in spec.slos:
        if slo.metric is not None and slo.threshold_seconds is not None:
            thresholds.setdefault(slo.metric, set()).add(slo.threshold_seconds)
    return {"slo_latency_thresholds": {metric: sorted(values) for metric, values in sorted(thresholds.items())}}


def _compressed(spec: AlertSpec, spec_name: str) -> dict[str, str]:
    scale = spec.time_scale
    head = header(spec_name) + timescale.note(scale)
    files = {f"{RULES_DIR}/{rules.rule_file_name(slo)}": rules.rule_file(spec, slo) for slo in spec.slos}
    files[f"{RULES_DIR}/causes.rules.yaml"] = causes.rule_file(spec)
    files[f"{RULES_DIR}/fleet.rules.yaml"] = fleet.rule_file()
    out = {path: head + dump(timescale.compress_rules(data, scale)) for path, data in files.items()}
    out["alertmanager.yaml"] = head + dump(timescale.compress_alertmanager(routing.config(spec), scale))
    out[EXPORTER_SETTINGS] = head + dump(exporter_settings(spec))
    readme = docs.readme(spec, spec_name)
    title, _, rest = readme.partition("\n")
    out["README.md"] = f"{title}\n\n> {timescale.note(scale).removeprefix('# ').strip()}\n{rest}"
    return dict(sorted(out.items()))


def is_generated(path: Path) -> bool:
    """True for a file this generator wrote (it starts with the generated-file header)."""
    try:
        with path.open() as f:
            return f.readline().startswith(PREFIX)
    except (OSError, UnicodeDecodeError):
        return False


def stale(out: Path, files: dict[str, str]) -> list[Path]:
    """Generated rule and test files in `out` that this run would not write (an SLO was removed or renamed)."""
    found = [p for d in (RULES_DIR, TESTS_DIR) for p in sorted((out / d).glob("*.yaml")) if is_generated(p)]
    return [p for p in found if p.relative_to(out).as_posix() not in files]
