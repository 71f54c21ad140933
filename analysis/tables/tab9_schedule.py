"""Table 9 (Appendix H): warmup and the decay shape of learning annealing; paper and this harness.

Paper: removing the warmup hurts (1.30 -> 1.70), cosine instead of linear decay does not matter (1.32).
Our rows come from sweeps/grids/schedule.py.

    python -m analysis.tables.tab9_schedule [--results results --out results/tables]
"""
from __future__ import annotations

from pathlib import Path

from analysis.aggregate import harness
from analysis.cells import Notes, cited, gaps, metric, run_id, source
from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

COLUMNS = ["Source", "Method", "Codebook Size", "rFID", "Usage", "PSNR", "Run"]


def points() -> dict[str, dict]:
    from sweeps.grids._fragments import cosine, no_warmup, vqbridge

    return {"baseline w/ linear": vqbridge, "w/o warmup": {**vqbridge, **no_warmup},
            "w/ cosine": {**vqbridge, **cosine}}


def build(results: Path, out: Path) -> list[str]:
    notes, rows, twins = Notes(), [], points()
    for ref in paper("tab9_schedule").itertuples():
        rows.append(["paper", ref.method, f"{int(ref.codebook_size):,}", cited(ref.rfid, notes),
                     cited("", notes), cited("", notes), ""])
        for r in harness(results, twins[ref.method]):
            size = f"{int(r['quant.codebook_size']):,}" if r is not None else ""
            rows.append([source(r), ref.method, size, metric(r, "rfid", notes, "schedule"),
                         metric(r, "usage", notes, "schedule"), metric(r, "psnr", notes, "schedule"),
                         run_id(r, "schedule", notes)])
    write_tables(out, "tab9_schedule", [Table("Table 9: Additional Ablation Experiments.", COLUMNS, rows, notes,
                                                       ["Our cells are mean ± sd over seeds (n = number of seeds)."])])
    return gaps(notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab9_schedule", "tables"))
