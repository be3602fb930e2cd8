"""Cause alerts: what is wrong, when the SLOs say users hurt (or cannot see). Each has a reason to exist and tests.

The SLO alerts page on symptoms. These name causes, so a page comes with its likely reason, and they cover
what the SLOs cannot see: a down engine or exporter makes no bad requests, it makes no requests at all.

Each alert is a row (`row.Cause`: the rule, its runbook texts and its promtool cases) in `engines`, `gpus` or
`exporters`; `build` lists the rows in order and turns them into the rule file and the test groups.
"""

from exporter.alerts.causes.build import GROUP, rule_file, table, test_groups

__all__ = ["GROUP", "rule_file", "table", "test_groups"]
