"""Small PromQL text helpers shared by the rule builders."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.utils import floatToGoString

# How prometheus_client (this exporter's client) renders `le`: "1.0", "0.25", "1e+07". Typed alias of an untyped API.
python_le: Callable[[float], str] = floatToGoString

# A burn exactly at a tier's factor must fire (that is what steady traffic at factor x budget produces), whatever
# the last floating-point bit of rate() does; one part in a million is far below any meaningful burn rate.
TOLERANCE = "0.999999"


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


def sum_by(labels: list[str] | tuple[str, ...], inner: str) -> str:
    """`sum by (a, b) (inner)`, or `sum (inner)` with no labels."""
    return f"sum by ({', '.join(labels)}) ({inner})" if labels else f"sum ({inner})"


def selector(name: str, **matchers: str) -> str:
    """`name{a="x", b=~"y"}`; a matcher value starting with `~` is a regex match, `!` a negative match."""
    parts = []
    for label, value in matchers.items():
        if value.startswith("~"):
            parts.append(f'{label}=~"{value[1:]}"')
        elif value.startswith("!"):
            parts.append(f'{label}!="{value[1:]}"')
        else:
            parts.append(f'{label}="{value}"')
    return f"{name}{{{','.join(parts)}}}" if parts else name


def camel(name: str) -> str:
    """`ttft_chat` -> `TtftChat`, for alert names."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def percent(ratio: float) -> str:
    """0.144 -> `14.4%`, 0.001 -> `0.1%`."""
    return f"{ratio * 100:.4g}%"
