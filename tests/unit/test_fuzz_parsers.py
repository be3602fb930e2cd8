"""Property-based fuzzing of the parsers that read untrusted input: no input crashes them or hangs them.

CI-sized: about a thousand inputs each (LLM_EXPORTER_TEST_FUZZ_EXAMPLES raises it for a longer run by hand).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.engine.parse import EngineParseError, parse
from exporter.otlp.decode import BodyDecodeError, DecodeRules, flatten, parse_json
from exporter.service.settings import ConfigError, Settings, load_settings
from tests.support import harness_env
from tests.support.otlp import SAMPLES

EXAMPLES = int(os.environ.get(harness_env.FUZZ_EXAMPLES, "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
METRICS_LINES = (SAMPLES / "metrics.txt").read_text().splitlines()


@st.composite
def mutated_metrics(draw: st.DrawFn) -> str:
    """Real vLLM /metrics lines, some cut, duplicated, or with characters replaced."""
    lines = draw(st.lists(st.sampled_from(METRICS_LINES), max_size=60))
    out = []
    for line in lines:
        action = draw(st.integers(0, 5))
        if action == 0 and line:
            line = line[: draw(st.integers(0, len(line)))]
        elif action == 1 and line:
            i = draw(st.integers(0, len(line) - 1))
            line = (
                line[:i]
                + draw(st.sampled_from(['"', "{", "}", "\\", " ", "=", ",", "\x00", "é", "NaN"]))
                + line[i + 1 :]
            )
        out.append(line)
    return "\n".join(out) + draw(st.sampled_from(["\n", ""]))


@FUZZ
@given(st.one_of(mutated_metrics(), st.text(max_size=500)))
def test_engine_parser_returns_a_reading_or_a_named_error(text: str) -> None:
    try:
        reading = parse(text)
    except EngineParseError as exc:
        assert exc.reason in {"parse_error", "truncated"}
        return
    for model in reading.models.values():
        assert all(isinstance(v, float) for v in model.counters.values())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
otlp_keys = st.sampled_from(
    [
        "resourceSpans",
        "scopeSpans",
        "spans",
        "attributes",
        "key",
        "value",
        "intValue",
        "doubleValue",
        "stringValue",
        "traceId",
        "spanId",
        "name",
        "startTimeUnixNano",
        "resource",
    ]
)
otlp_like = st.recursive(
    json_values,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(otlp_keys, children, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(otlp_like)
def test_otlp_json_decoder_accepts_or_refuses_never_crashes(doc: Any) -> None:
    import json

    body = json.dumps(doc).encode()
    try:
        request = parse_json(body)
    except BodyDecodeError:
        return
    batch = flatten(request, DecodeRules())
    assert batch.received >= len(batch.requests) + sum(batch.rejected.values())


setting_names = st.sampled_from(sorted(Settings.model_fields))


@settings(max_examples=max(200, EXAMPLES // 10), deadline=None)
@given(st.dictionaries(setting_names | st.text(max_size=8), json_values | st.text(max_size=30), max_size=6))
def test_config_loader_builds_settings_or_names_every_problem(values: dict[str, Any]) -> None:
    try:
        load_settings({k: v for k, v in values.items() if k in Settings.model_fields})
    except ConfigError as exc:
        assert str(exc).startswith("invalid configuration")
