"""Every dashboard query parses, names only catalog metrics or recording rules, and honours the variables."""

from __future__ import annotations

import promql_parser
import pytest
import yaml

from exporter.dashboards import generate
from exporter.dashboards.preview import concrete
from exporter.dashboards.promql import BUILTIN, labels_of
from exporter.metrics import catalog
from tests.support.procs import REPO

QUERIES = [
    (f"{d['uid']}:{p['title']}:{t['refId']}", t["expr"])
    for d in generate.models().values()
    for p in d["panels"]
    for t in p["targets"]
]
VARIABLE_QUERIES = sorted(
    {v["query"]["query"] for d in generate.models().values() for v in d["templating"]["list"] if v["type"] == "query"}
)


def recorded() -> set[str]:
    """Every `record:` name in the generated rule files."""
    names: set[str] = set()
    for path in (REPO / "alerts/rules").glob("*.yaml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def known() -> set[str]:
    series = {m.name for m in catalog.ALL}
    series |= {
        f"{m.name}{s}" for m in catalog.ALL if m.kind is catalog.Kind.HISTOGRAM for s in ("_bucket", "_count", "_sum")
    }
    return series | recorded() | set(BUILTIN)


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []
    promql_parser.walk(
        promql_parser.parse(concrete(expr, "30s", "1h")),
        lambda n: found.append(n) if isinstance(n, promql_parser.VectorSelector) else None,
    )
    return found


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_parses_and_names_only_known_series(where: str, expr: str) -> None:
    names = [s.name for s in selectors(expr)]
    assert names, "a query reads at least one series"
    unknown = set(names) - known()
    assert not unknown, f"{where}: not in the catalog or the recording rules: {unknown}"


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_filters_by_every_variable_the_series_can_carry(where: str, expr: str) -> None:
    assert "[$__rate_interval]" in expr or "[$__range]" in expr or "rate(" not in expr
    for s in selectors(expr):
        if s.name is None or s.name in BUILTIN:
            continue
        labels, raw = labels_of(s.name)
        text = str(s)
        wanted: list[str] = [k for k in ("model", "tenant") if k in labels]
        wanted += ["namespace", "node"] if raw else []
        for key in wanted:
            assert f'{key}=~".*"' in text or f'{key}="' in text or f'{key}=~"' in text, f"{where}: {text} lacks {key}"


@pytest.mark.parametrize("query", VARIABLE_QUERIES)
def test_variable_queries_read_known_series(query: str) -> None:
    inner = query.removeprefix("label_values(").rsplit(",", 1)[0]
    assert {s.name for s in selectors(inner)} <= known()


def test_every_recording_rule_name_used_is_generated() -> None:
    used = {s.name for _, e in QUERIES for s in selectors(e) if s.name and ":" in s.name}
    assert used and used <= recorded()
