"""Table 11 (Appendix H): the extended generation comparison; the paper's rows and the measured
cpu-scale rows, as Table 2.

    python -m analysis.tables.tab11_generation [--out results/tables]
"""
from __future__ import annotations

from pathlib import Path

from analysis.cells import gaps
from analysis.cli import main
from analysis.writers import write_tables
from analysis.tables.tab2_generation import table


def build(results: Path, out: Path) -> list[str]:
    t = table("tab11_generation", "Table 11: Generative model comparison on class-conditional ImageNet 256x256 "
              "(paper rows: reference; last rows: measured here at cpu scale).", results)
    write_tables(out, "tab11_generation", [t])
    return gaps(t.notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab11_generation", "tables"))
