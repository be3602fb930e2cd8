"""The demo's view: which tokens a price or energy is per, an empty cell that says so."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from exporter.metrics import catalog
from exporter.sim.view import Labels, Scrape, Window, gpu_table, request_table


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
