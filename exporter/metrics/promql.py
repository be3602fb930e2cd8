"""PromQL text from catalog names, shared by the rule and dashboard generators: numbers, `le`, selectors, sums."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client.utils import floatToGoString

# How prometheus_client (this exporter's client) renders `le`: "1.0", "0.25", "1e+07". Typed alias of an untyped API.
python_le: Callable[[float], str] = floatToGoString


def num(value: float) -> str:
    """A number as PromQL text without float noise: 14.4, 6, 0.001."""
    return f"{value:.12g}"


def le_values(edge: float) -> tuple[str, ...]:
    """Every way exporters render this bucket edge in `le`: Python's client writes "1.0", Go's writes "1"."""
    go = str(int(edge)) if edge.is_integer() and abs(edge) < 1e21 else python_le(edge)
    return tuple(sorted({python_le(edge), go}, key=len))


def le_matcher(edge: float) -> str:
    """`le=~"1|1\\\\.0"`: matches the edge however it was rendered (PromQL string, so backslashes doubled)."""
    regex = "|".join(v.replace(".", r"\.").replace("+", r"\+") for v in le_values(edge))
    return 'le=~"' + regex.replace("\\", "\\\\") + '"'


def matcher(label: str, value: str) -> str:
    """`label="value"`; a value starting with `~` is a regex match (`=~`), one starting with `!` a negative one."""
    if value.startswith("~"):
        return f'{label}=~"{value[1:]}"'
    if value.startswith("!"):
        return f'{label}!="{value[1:]}"'
    return f'{label}="{value}"'


def selector(name: str, **matchers: str) -> str:
    """`name{a="x",b=~"y"}` (values as `matcher` reads them), or the bare name without matchers."""
    parts = [matcher(label, value) for label, value in matchers.items()]
    return f"{name}{{{','.join(parts)}}}" if parts else name


def sum_by(labels: str | Sequence[str], inner: str) -> str:
    """`sum by (a, b) (inner)`, or `sum (inner)` without labels; labels as a sequence or written out (`"a, b"`)."""
    by = labels if isinstance(labels, str) else ", ".join(labels)
    return f"sum by ({by}) ({inner})" if by else f"sum ({inner})"


def rate(series: str, window: str) -> str:
    """`rate(series[window])`."""
    return f"rate({series}[{window}])"


def increase(series: str, window: str) -> str:
    """`increase(series[window])`."""
    return f"increase({series}[{window}])"
