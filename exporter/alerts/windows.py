"""Prometheus durations and the multiwindow, multi-burn-rate tiers of the SRE Workbook (ch. 5)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Severity = Literal["page", "ticket"]

_UNITS = (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
_SECONDS = dict(_UNITS)
_DURATION = re.compile(r"^(?:[0-9]+[wdhms])+$")
_PART = re.compile(r"([0-9]+)([wdhms])")


def parse_duration(text: str) -> int:
    """Seconds in a Prometheus duration such as `30d`, `6h` or `2m30s`; ValueError if it is not one."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration like 30d, 6h, 5m or 2m30s")
    seconds = sum(int(n) * _SECONDS[unit] for n, unit in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest Prometheus duration for whole seconds, in days and smaller units (`3d`, `2m30s`)."""
    if seconds <= 0:
        raise ValueError(f"not a positive duration: {seconds}")
    parts, rest = [], seconds
    for unit, size in _UNITS[1:]:  # no weeks: `7d` reads better than `1w` next to `30d`
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


@dataclass(frozen=True)
class BurnTier:
    """One alerting tier: fire when both windows burn the budget at least `factor` times as fast as allowed."""

    severity: Severity
    long_s: int
    short_s: int
    budget_share: float  # share of the period's error budget this tier lets burn within its long window

    @property
    def long(self) -> str:
        """The long window as a duration (`1h`)."""
        return format_duration(self.long_s)

    @property
    def short(self) -> str:
        """The short window as a duration (`5m`)."""
        return format_duration(self.short_s)

    def factor(self, period_s: int) -> float:
        """Burn-rate factor: the share of the budget this tier allows, spread over its long window.

        A burn rate of 1 spends exactly the budget over the period; spending `budget_share` of it within the long
        window takes a rate of budget_share x period / long window (14.4 for 2 % in 1 h of 30 days). Rounded to
        ten digits so that 30 days give 14.4, not 14.400000000000002.
        """
        return round(self.budget_share * period_s / self.long_s, 10)

    def exhausts_in_s(self, period_s: int) -> float:
        """How long the whole budget lasts at exactly this tier's burn rate."""
        return period_s / self.factor(period_s)


# SRE Workbook, table 5-8: page on 2 % of the budget in 1 h or 5 % in 6 h, ticket on 10 % in 1 d or in 3 d.
# The short window (1/12 of the long one) makes an alert stop soon after the burn stops.
DEFAULT_TIERS: tuple[BurnTier, ...] = (
    BurnTier("page", 3_600, 300, 0.02),
    BurnTier("page", 21_600, 1_800, 0.05),
    BurnTier("ticket", 86_400, 7_200, 0.10),
    BurnTier("ticket", 259_200, 21_600, 0.10),
)


def sli_windows(tiers: tuple[BurnTier, ...] = DEFAULT_TIERS) -> tuple[int, ...]:
    """Every window an SLI is recorded over, shortest first (5m, 30m, 1h, 2h, 6h, 1d, 3d by default)."""
    return tuple(sorted({w for tier in tiers for w in (tier.long_s, tier.short_s)}))


def humanize_seconds(seconds: float) -> str:
    """A rough human duration for docs: `2.1 days`, `50 hours`, `42 minutes`."""
    for unit, size in (("days", 86_400.0), ("hours", 3_600.0), ("minutes", 60.0)):
        if seconds >= 2 * size or unit == "minutes":
            value = seconds / size
            return f"{value:.3g} {unit}"
    raise AssertionError("unreachable")
