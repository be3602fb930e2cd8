"""Parse time of a ~1,000-line vLLM /metrics body (budget: <= 25 ms). Prints a markdown table."""

from __future__ import annotations

import statistics
import time
from importlib import resources

from exporter.engine.parse import parse


def body(lines: int) -> str:
    """The real vLLM 0.32 /metrics, its vllm: series repeated for more served models until `lines` long."""
    real = resources.files("exporter").joinpath("samples", "vllm-0.32-cpu", "metrics.txt").read_text()
    vllm_lines = [line for line in real.splitlines() if 'model_name="tiny"' in line]
    out = real.splitlines()
    copy = 0
    while len(out) < lines:
        copy += 1
        out.extend(line.replace('model_name="tiny"', f'model_name="tiny-{copy}"') for line in vllm_lines)
    return "\n".join(out[:lines] if len(out) > lines else out) + "\n"


def main() -> None:
    """Time 200 parses of 1,000- and 5,000-line bodies."""
    print("| lines | parse ms (median / p95) | models found |")
    print("|---|---|---|")
    for lines in (1000, 5000):
        text = body(lines)
        text = text[: text.rfind("\n", 0, len(text) - 1) + 1]  # whole lines only
        times = []
        for _ in range(200):
            started = time.perf_counter()
            reading = parse(text)
            times.append((time.perf_counter() - started) * 1000)
        p95 = statistics.quantiles(times, n=20)[-1]
        print(f"| {len(text.splitlines()):,} | {statistics.median(times):.2f} / {p95:.2f} | {len(reading.models)} |")


if __name__ == "__main__":
    main()
