"""Time compression, for tests and demos only: run hours of alerting in minutes.

A spec's `time_scale` divides every duration the generated files hold: the range of every range selector and
subquery (the SLI windows 5m .. 3d, the period the budget is summed over, the cause alerts' windows), every
`offset`, every `for:`, and Alertmanager's group_wait, group_interval and repeat_interval. The burn-rate factors
stay as computed for the real period (14.4, 6, 3, 1 for 30 days), and recorded series keep their real names
(`slo:burn_rate:ratio_rate1h` over `[24s]` at x150), so rules, dashboards and docs read the same.

A scaled duration is whole seconds where it can be (`4h48m`), else whole milliseconds (`2500ms`): both are valid
Prometheus and Alertmanager durations. The shortest scaled window must hold at least MIN_SCALED_WINDOW_S, i.e.
two samples at the 1 s scrape interval a compressed run is meant to use (rate() needs two): with the SLI
windows starting at 5m, time_scale may be at most 150.
"""

from __future__ import annotations

import re
from typing import Any

from exporter.alerts.windows import format_duration, parse_duration, sli_windows

MIN_SCALED_WINDOW_S = 2.0
MAX_TIME_SCALE = min(sli_windows()) / MIN_SCALED_WINDOW_S  # 150: the 5m window becomes 2 s
# The demo's default: the 1h/5m page becomes 1 min/5 s and a `for: 10m` 10 s, so a scenario's alerts fire within
# minutes of its change; the 5 s window still holds five of the demo's 1 s scrapes.
DEMO_TIME_SCALE = 60.0

_DUR = r"(?:[0-9]+[wdhms])+"
_RANGE = re.compile(rf"\[({_DUR})(?::({_DUR})?)?\]")  # [5m], subqueries [1h:1m] and [1h:]
_OFFSET = re.compile(rf"\boffset\s+({_DUR})\b")
ROUTE_TIMERS = ("group_wait", "group_interval", "repeat_interval")


def scale_seconds(seconds: float, scale: float) -> str:
    """`seconds / scale` as a duration: whole seconds (`30s`, `4h48m`) or else whole milliseconds (`2500ms`)."""
    ms = round(seconds * 1000 / scale)
    if ms <= 0:
        raise ValueError(f"{seconds:g} s / {scale:g} rounds to 0 ms")
    return format_duration(ms // 1000) if ms % 1000 == 0 else f"{ms}ms"


def scale_duration(text: str, scale: float) -> str:
    """A Prometheus duration (`5m`) divided by `scale` (`2s` at 150)."""
    return scale_seconds(parse_duration(text), scale)


def compress_expr(expr: str, scale: float) -> str:
    """Every range, subquery step and offset in a PromQL expression divided by `scale`; raises ValueError if a
    range becomes shorter than MIN_SCALED_WINDOW_S."""

    def window(match: re.Match[str]) -> str:
        seconds = parse_duration(match[1]) / scale
        if seconds < MIN_SCALED_WINDOW_S:
            raise ValueError(
                f"[{match[1]}] / {scale:g} is {seconds:g} s, under the {MIN_SCALED_WINDOW_S:g} s minimum: lower "
                "time_scale"
            )
        text = scale_duration(match[1], scale)
        if match[0].endswith(":]"):
            text += ":"
        elif match[2]:
            text += ":" + scale_duration(match[2], scale)
        return f"[{text}]"

    expr = _RANGE.sub(window, expr)
    return _OFFSET.sub(lambda m: "offset " + scale_duration(m[1], scale), expr)


def compress_rules(rule_file: dict[str, Any], scale: float) -> dict[str, Any]:
    """A copy of a Prometheus rule file with every expression's durations and every `for:` divided by `scale`."""
    groups = []
    for group in rule_file["groups"]:
        rules = []
        for rule in group["rules"]:
            rule = {**rule, "expr": compress_expr(rule["expr"], scale)}
            if "for" in rule:
                rule["for"] = scale_duration(rule["for"], scale)
            rules.append(rule)
        groups.append({**group, "rules": rules})
    return {**rule_file, "groups": groups}


def compress_alertmanager(config: dict[str, Any], scale: float) -> dict[str, Any]:
    """A copy of an Alertmanager config with the timers of its route tree divided by `scale`."""

    def route(node: dict[str, Any]) -> dict[str, Any]:
        out = {k: scale_duration(v, scale) if k in ROUTE_TIMERS else v for k, v in node.items()}
        if "routes" in node:
            out["routes"] = [route(child) for child in node["routes"]]
        return out

    return {**config, "route": route(config["route"])}


def note(scale: float) -> str:
    """The comment a compressed file starts with (after the generated-file header)."""
    return (
        f"# Time-compressed (time_scale {scale:g}), for tests and demos only: every window, offset, `for:`, the "
        "period and the Alertmanager timers are divided by it.\n"
    )
