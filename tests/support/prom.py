"""Reading Prometheus text exposition in tests (with prometheus_client's own parser)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample as (name, labels, value)."""
    return [
        (s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text) for s in family.samples
    ]


def lines_of(text: str, name: str) -> str:
    """Only the sample lines of `name` in an exposition (no HELP or TYPE: they parse as untyped, values alike)."""
    after = len(name)
    return "\n".join(
        line for line in text.splitlines() if line.startswith(name) and line[after : after + 1] in ("{", " ")
    )


def total(text: str, name: str, where: Mapping[str, str] | None = None, *, parse_all: bool = True) -> float:
    """Sum of the samples called `name` whose labels include `where`.

    parse_all=False parses only `name`'s lines, ~100x faster on a large exposition (for polling in benchmarks); the
    rest of the text is then not checked.
    """
    want = dict(where or {})
    parsed = samples(text if parse_all else lines_of(text, name))
    return sum(v for n, labels, v in parsed if n == name and all(labels.get(k) == x for k, x in want.items()))


def by_label(text: str, name: str, label: str, where: Mapping[str, str] | None = None) -> dict[str, float]:
    """Sum of samples called `name`, grouped by one label's value."""
    want = dict(where or {})
    out: dict[str, float] = {}
    for n, labels, v in samples(text):
        if n == name and all(labels.get(k) == x for k, x in want.items()):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
    return out
