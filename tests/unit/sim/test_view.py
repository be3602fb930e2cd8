"""The demo's view: which tokens a price or energy is per, an empty cell that says so, alerts pending and firing."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from exporter.metrics import catalog
from exporter.sim.demo import alerting_note
from exporter.sim.promstack import AlertState
from exporter.sim.view import Labels, Scrape, SloStatus, Window, gpu_table, request_table, slo_table


def text(table: Table) -> str:
    """The table as the demo prints it to a file."""
    console = Console(width=200, force_terminal=False)
    with console.capture() as out:
        console.print(table)
    return out.get()


def scrape(at: float, spent: float) -> Scrape:
    """One scrape of a (model, tenant) that has spent `spent` dollars and 10 x `spent` joules on 900 prompt and 100
    output tokens per dollar."""
    pair: Labels = (("model", "m"), ("tenant", "t"))
    return Scrape(
        at,
        {
            catalog.REQUESTS.name: {pair: 10 * spent},
            catalog.TOKENS.name: {(*pair, ("type", "input")): 900 * spent, (*pair, ("type", "output")): 100 * spent},
            catalog.COST.name: {pair: spent * 1e-3},
            catalog.ENERGY.name: {pair: spent * 10},
        },
    )


def test_cost_and_energy_are_given_per_input_and_output_token_and_per_output_token() -> None:
    window = Window(30.0)
    window.add(scrape(0.0, 0.0))
    window.add(scrape(10.0, 1.0))  # 1e-3 $ and 10 J over 900 + 100 tokens
    table = request_table(window)
    headers = [str(c.header) for c in table.columns]
    assert headers[-4:] == ["$/Mtok\nin+out", "$/Mtok\nout", "J/tok\nin+out", "J/tok\nout"]
    row = text(table).splitlines()
    line = next(r for r in row if r.strip().startswith("m "))
    assert line.split()[-4:] == ["1.000", "10.000", "0.01", "0.10"]  # $1e-3/1000 tok, /100 out; 10 J/1000, /100
    assert "per million (input + output) or output tokens" in text(table)


def test_a_gpu_with_no_clock_event_says_none() -> None:
    gpu: Labels = (("gpu", "GPU-0"), ("index", "0"))
    reasons: dict[Labels, float] = {(*gpu, ("reason", r)): v for r, v in (("idle", 1.0), ("sw_power_cap", 0.0))}
    window = Window()
    window.add(Scrape(0.0, {catalog.GPU_UP.name: {gpu: 1.0}, catalog.GPU_CLOCK_EVENT_REASON.name: reasons}))
    row = next(r for r in text(gpu_table(window)).splitlines() if r.strip().startswith("0 "))
    assert row.split()[-1] == "none"  # idle alone is not a slowdown


def test_pending_alerts_are_shown_with_the_time_left_of_their_for_beside_the_firing_ones() -> None:
    status = SloStatus(
        {"ttft m": {"5m": 20.0, "1h": 16.0, "6h": 3.0}},
        [AlertState("LLMTtftBudgetBurn1h m", True), AlertState("LLMEngineKVCacheFullPreempting vllm-m-0", False, 7.2)],
        "rules compressed",
        60.0,
    )
    out = " ".join(text(slo_table(status)).split())  # the caption wraps at the table's width
    assert "firing alerts: LLMTtftBudgetBurn1h m" in out
    assert "pending alerts: LLMEngineKVCacheFullPreempting vllm-m-0 (fires in 7 s if it holds)" in out
    assert "rules compressed" in out
    assert "burn 5m (5s)" in out and "burn 1h (1m)" in out  # the windows the compressed rules really use
    quiet = " ".join(text(slo_table(SloStatus({}, [], ""))).split())
    assert "firing alerts: none" in quiet and "pending alerts: none" in quiet and "burn 5m burn 1h" in quiet
    assert "no Prometheus" in text(slo_table(SloStatus()))


def test_the_view_says_how_the_demos_alerting_differs_from_production() -> None:
    compressed = alerting_note(60.0, 120.0)
    assert "60x faster than real time" in compressed and "1h = 1m" in compressed and "`for: 10m` 10s" in compressed
    real = alerting_note(1.0, 300.0)
    assert "real time" in real and "last 5 min" in real and "3d ticket" in real and "--alerts.time-scale 60" in real
