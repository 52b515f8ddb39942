"""The README's sample table is the demo's whole table, regenerated here so it cannot drift
(`python -m exporter.demo.sample --write` updates it)."""

from __future__ import annotations

from exporter.demo.sample import README, readme_copy, sample_table


def test_the_readme_shows_the_demos_whole_table() -> None:
    table = sample_table()
    assert readme_copy(README.read_text()) == table, (
        "README.md's demo table is out of date: python -m exporter.demo.sample --write"
    )
    rows = [line for line in table.splitlines()[2:] if line.startswith(("nrp-llm", "sdsc-llm"))]
    assert len(rows) == 6  # every model of the demo, not an excerpt
